#!/usr/bin/env bash
# Wait until something accepts TCP connections on HOST:PORT.
#   deploy/wait-for-port.sh HOST PORT [TIMEOUT_SECONDS=60]
# Exits 0 as soon as the port answers, 1 after the timeout. Needs only bash.
set -euo pipefail

host=${1:?usage: wait-for-port.sh HOST PORT [TIMEOUT_SECONDS]}
port=${2:?usage: wait-for-port.sh HOST PORT [TIMEOUT_SECONDS]}
timeout=${3:-60}

port_open() {
    # A subshell, so the descriptor closes at once; timeout guards against a hung connect.
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

deadline=$((SECONDS + timeout))
until port_open "$host" "$port"; do
    if (( SECONDS >= deadline )); then
        echo "wait-for-port: nothing answered on $host:$port after ${timeout}s" >&2
        exit 1
    fi
    sleep 1
done
