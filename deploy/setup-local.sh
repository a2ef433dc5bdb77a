#!/usr/bin/env bash
# The local set-up `make run`, `make test` and CI (.ci/run) share: python3 with venv, make,
# RabbitMQ (127.0.0.1:5672) and PostgreSQL (127.0.0.1:5432, user postgres without a password).
#   deploy/setup-local.sh [--quiet]
# Whatever already answers is left exactly as it is (never restarted or reconfigured); what
# is missing is installed from Debian/Ubuntu packages (apt-get, through sudo when not root,
# saying what it installs first) and started. Where CAREWATCH_AMQP_URL or
# CAREWATCH_DATABASE_URL name another host, that service is not this script's business.
# Without apt-get (not Debian/Ubuntu) it installs nothing and says so; `carewatch run` then
# starts the services with docker compose where a Docker engine answers.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WAIT_FOR_PORT="$ROOT/deploy/wait-for-port.sh"
STARTUP_TIMEOUT=${CAREWATCH_SETUP_TIMEOUT:-60}
QUIET=0
[[ ${1:-} == --quiet ]] && QUIET=1
export DEBIAN_FRONTEND=noninteractive

acted=0  # set when something was installed, started or configured
say() { echo "setup: $*"; }
note() { (( QUIET )) || say "$@"; }
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# host and port of a URL (scheme://[user[:pw]@]host[:port]/...), with a default port.
url_host() { local rest=${1#*://}; rest=${rest%%/*}; rest=${rest##*@}; echo "${rest%%:*}"; }
url_port() {
    local rest=${1#*://}; rest=${rest%%/*}; rest=${rest##*@}
    if [[ $rest == *:* ]]; then echo "${rest##*:}"; else echo "$2"; fi
}
is_local() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 || -z $1 ]]; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        say "need root for: $* (and there is no sudo); run it as root, then again" >&2
        exit 1
    fi
}

apt_updated=0
apt_install() {
    if ! command -v apt-get >/dev/null; then
        say "$* missing and this is not Debian/Ubuntu (no apt-get): install it yourself" >&2
        return 1
    fi
    acted=1
    say "installing with apt-get: $*$([[ $(id -u) -ne 0 ]] && echo ' (through sudo)')"
    if [[ $apt_updated -eq 0 ]]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    as_root apt-get install -y -qq --no-install-recommends "$@"
}

# -- tools ----------------------------------------------------------------------------------
command -v python3 >/dev/null || apt_install python3
if [[ ! -x $ROOT/.venv/bin/python ]]; then
    probe=$(mktemp -d)
    if ! python3 -m venv "$probe/venv" >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    rm -rf "$probe"
fi
command -v make >/dev/null || apt_install make
# The reports' tests read PDFs back (pdftotext) and draw a page as PNG (pdftoppm).
command -v pdftotext >/dev/null || apt_install poppler-utils
note "$(python3 --version), $(make --version | head -n 1)"

# -- RabbitMQ -------------------------------------------------------------------------------
amqp_url=${CAREWATCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
amqp_host=$(url_host "$amqp_url"); amqp_port=$(url_port "$amqp_url" 5672)
if port_open "${amqp_host:-127.0.0.1}" "$amqp_port"; then
    note "RabbitMQ answers on ${amqp_host:-127.0.0.1}:$amqp_port: left as it is"
elif ! is_local "$amqp_host"; then
    say "RabbitMQ does not answer at $amqp_host:$amqp_port (CAREWATCH_AMQP_URL): not a local" \
        "service, so not installed here" >&2
elif ! command -v rabbitmq-server >/dev/null && ! command -v apt-get >/dev/null; then
    say "RabbitMQ is not installed and there is no apt-get: install it, or use Docker" \
        "(carewatch run starts it with docker compose)" >&2
else
    if ! command -v rabbitmq-server >/dev/null; then
        apt_install rabbitmq-server
        # A fresh install: name the node after localhost, so a hostname that does not
        # resolve (common in containers) cannot stop it from booting.
        env_conf=/etc/rabbitmq/rabbitmq-env.conf
        if ! grep -qs '^NODENAME=' "$env_conf"; then
            echo 'NODENAME=rabbit@localhost' | as_root tee -a "$env_conf" >/dev/null
        fi
    fi
    # The package's post-install may have started the node already.
    if ! port_open 127.0.0.1 "$amqp_port"; then
        acted=1
        say "starting rabbitmq-server"
        if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
            as_root systemctl start rabbitmq-server
        else
            # Without systemd (whose unit gives the broker 65,536 file handles), the node
            # starts through `su rabbitmq` with the login default of 1,024: it then serves
            # about 830 sockets and, past them, accepts TCP but never answers the AMQP
            # handshake (a running stack beside the test suite gets there). Raise the soft
            # limit in the node's environment file, which its start scripts source.
            env_conf=/etc/rabbitmq/rabbitmq-env.conf
            if ! grep -qs '^ulimit -S -n' "$env_conf"; then
                echo 'ulimit -S -n "$(ulimit -H -n)" 2>/dev/null || true' | as_root tee -a "$env_conf" >/dev/null
            fi
            as_root rabbitmq-server -detached
        fi
    fi
    "$WAIT_FOR_PORT" 127.0.0.1 "$amqp_port" "$STARTUP_TIMEOUT"
    say "RabbitMQ answers on 127.0.0.1:$amqp_port"
fi

# -- PostgreSQL -----------------------------------------------------------------------------
db_url=${CAREWATCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/carewatch}
db_host=$(url_host "$db_url"); db_port=$(url_port "$db_url" 5432)
started_pg=0
if port_open "${db_host:-127.0.0.1}" "$db_port"; then
    note "PostgreSQL answers on ${db_host:-127.0.0.1}:$db_port: left as it is"
elif ! is_local "$db_host"; then
    say "PostgreSQL does not answer at $db_host:$db_port (CAREWATCH_DATABASE_URL): not a" \
        "local service, so not installed here" >&2
elif ! ls -d /etc/postgresql/*/main >/dev/null 2>&1 && ! command -v apt-get >/dev/null; then
    say "PostgreSQL is not installed and there is no apt-get: install it, or use Docker" \
        "(carewatch run starts it with docker compose)" >&2
else
    if ! ls -d /etc/postgresql/*/main >/dev/null 2>&1; then
        apt_install postgresql
    fi
    version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -V | tail -n 1)
    if ! pg_ctlcluster "$version" main status >/dev/null 2>&1; then
        acted=1
        say "starting PostgreSQL cluster $version/main"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
    "$WAIT_FOR_PORT" 127.0.0.1 "$db_port" "$STARTUP_TIMEOUT"
    say "PostgreSQL answers on 127.0.0.1:$db_port"
    started_pg=1
fi

# A server installed or started here: let user postgres connect over loopback without a
# password (trust), as the default CAREWATCH_DATABASE_URL does. CI (CI=true) also checks a
# server it found running. A running server of your own is never reconfigured otherwise.
pg_connects() {
    psql -h 127.0.0.1 -p "$db_port" -U postgres -w -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1
}
if is_local "$db_host" && { (( started_pg )) || [[ ${CI:-} == true ]]; }; then
    command -v psql >/dev/null || apt_install postgresql-client
    if ! pg_connects; then
        acted=1
        say "allowing user postgres over TCP from loopback without a password (trust)"
        hba=$(as_root runuser -u postgres -- psql -Atqc 'SHOW hba_file')
        marker='# carewatch deploy/setup-local.sh: local connections without a password'
        tmp=$(mktemp)
        # First matching line wins in pg_hba.conf: put the trust rules before every other.
        as_root cat "$hba" | sed -e "\|^$marker\$|d" -e '\|^host all all 127.0.0.1/32 trust$|d' \
            -e '\|^host all all ::1/128 trust$|d' | awk -v m="$marker" '
            done == 0 && $0 !~ /^[[:space:]]*#/ && $0 !~ /^[[:space:]]*$/ {
                print m; print "host all all 127.0.0.1/32 trust"; print "host all all ::1/128 trust"
                done = 1
            } { print }
            END { if (done == 0) { print m; print "host all all 127.0.0.1/32 trust"; print "host all all ::1/128 trust" } }' \
            > "$tmp"
        as_root cp "$tmp" "$hba" && rm -f "$tmp"
        as_root runuser -u postgres -- psql -Atqc 'SELECT pg_reload_conf()' >/dev/null
        sleep 1
        if ! pg_connects; then
            say "still cannot connect as postgres to 127.0.0.1:$db_port; see $hba" >&2
            exit 1
        fi
    fi
fi

if (( QUIET && ! acted )); then
    say "RabbitMQ (${amqp_host:-127.0.0.1}:$amqp_port) and PostgreSQL (${db_host:-127.0.0.1}:$db_port)" \
        "already answer: nothing to do"
fi
