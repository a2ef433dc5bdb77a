"""Static checks of the deployment files: docker-compose.yml, .env.example, deploy/Dockerfile,
deploy/rabbitmq/definitions.json and deploy/postgres/init.sql.

No Docker engine is needed: the files are parsed and checked against each other and against
the code (settings, topology names, service packages).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared.settings import Settings
from shared.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
RABBITMQ_CONF = ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf"
INIT_SQL = ROOT / "deploy" / "postgres" / "init.sql"

# compose service -> Python package under services/
CAREWATCH_SERVICES = {
    "intake": "intake",
    "quality-monitor": "quality_monitor",
    "escalation": "escalation",
    "notification": "notification",
    "workspace": "workspace",
}
# Python package -> PostgreSQL schema it owns
SCHEMAS = {
    "intake": "intake",
    "quality_monitor": "monitor",
    "escalation": "escalation",
    "notification": "notification",
    "workspace": "workspace",
}
INFRASTRUCTURE = ("rabbitmq", "postgres", "mailpit", "workspace-proxy")
ALL_CAREWATCH = (*CAREWATCH_SERVICES, "migrate")
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


# -- helpers -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def definitions() -> dict[str, Any]:
    return json.loads(DEFINITIONS.read_text())


def env_example_names() -> list[str]:
    names = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if match:
            names.append(match.group(1))
    return names


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def without_variables(text: str) -> str:
    """Replace each ${...} reference by a placeholder, so URLs can be parsed."""
    return re.sub(r"\$\{[^}]*\}", "SECRET", text)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def command_words(command: Any) -> list[str]:
    if isinstance(command, list):
        words = [str(w) for w in command]
        if len(words) >= 3 and words[0] in ("sh", "/bin/sh", "bash") and words[1] == "-c":
            return shlex.split(words[2])
        return words
    return shlex.split(command)


def init_sql() -> str:
    return INIT_SQL.read_text()


def rabbitmq_password_matches(password: str, password_hash: str) -> bool:
    raw = base64.b64decode(password_hash)
    salt, digest = raw[:4], raw[4:]
    return len(raw) == 36 and hashlib.sha256(salt + password.encode()).digest() == digest


# -- docker-compose.yml: the carewatch services -------------------------------------------
@pytest.mark.parametrize("name", CAREWATCH_SERVICES)
def test_service_is_built_from_the_dockerfile(services, name):
    build = services[name]["build"]
    assert build["context"] == "."
    assert build["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()


@pytest.mark.parametrize("name", CAREWATCH_SERVICES)
def test_service_can_be_scaled(services, name):
    service = services[name]
    assert "container_name" not in service, "a fixed name prevents --scale"
    assert "ports" not in service, "a published host port prevents --scale"


@pytest.mark.parametrize("name", CAREWATCH_SERVICES)
def test_service_restarts_and_reports_health(services, name):
    service = services[name]
    assert re.fullmatch(r"always|unless-stopped|on-failure(:\d+)?", service.get("restart", ""))
    check = service.get("healthcheck") or {}
    assert not check.get("disable"), "health check disabled"
    test = " ".join(check["test"]) if isinstance(check["test"], list) else check["test"]
    assert "carewatch health --service" in test
    assert "$$CAREWATCH_SERVICE" in test, "must expand in the container, not in compose"


@pytest.mark.parametrize(("name", "package"), CAREWATCH_SERVICES.items())
def test_service_runs_its_own_package(services, name, package):
    env = environment(services[name])
    assert env["CAREWATCH_SERVICE"] == package
    depends = services[name]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize(("name", "package"), CAREWATCH_SERVICES.items())
def test_service_has_its_own_credentials(services, definitions, name, package):
    env = environment(services[name])
    amqp = urlsplit(without_variables(env["CAREWATCH_AMQP_URL"]))
    assert amqp.scheme == "amqp" and amqp.hostname == "rabbitmq"
    assert amqp.username == f"carewatch-{name}"
    assert amqp.username in {u["name"] for u in definitions["users"]}
    db = urlsplit(without_variables(env["CAREWATCH_DATABASE_URL"]))
    assert db.scheme in ("postgresql", "postgres") and db.hostname == "postgres"
    assert db.username == f"carewatch_{package}"
    assert db.path == "/carewatch"
    assert re.search(rf"CREATE ROLE {db.username} LOGIN", init_sql())


@pytest.mark.parametrize("name", ALL_CAREWATCH)
def test_no_secret_is_inline(services, name):
    """Passwords come from .env (${...}), and a container gets no other service's."""
    env = environment(services[name])
    for key in ("CAREWATCH_AMQP_URL", "CAREWATCH_DATABASE_URL"):
        password = re.search(r"//[^:/@]+:(.*)@", env[key])
        assert password, f"{name}: {key} has no password"
        assert re.fullmatch(r"\$\{[A-Z_0-9]+(:\?[^}]*)?\}", password.group(1)), f"{name}: {key} has an inline password"
    secrets = [n for n in env_example_names() if "PASSWORD" in n]
    assert secrets
    for secret in secrets:
        assert env.get(secret) == "", f"{secret} from .env must be blanked in {name}"


def test_command_modules_exist(services):
    """Every `python -m services.X` a carewatch service runs, explicitly or via the image's
    CMD and CAREWATCH_SERVICE, is a package with a __main__.py; `carewatch` is the CLI."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "carewatch" in scripts
    cmd = dict(dockerfile_instructions())["CMD"]
    assert "services.${CAREWATCH_SERVICE" in cmd
    modules = []
    for name in ALL_CAREWATCH:
        service = services[name]
        if "command" in service:
            segment: list[str] = []
            for word in [*command_words(service["command"]), "&&"]:
                if word not in ("&&", "||", ";"):
                    segment.append(word)
                    continue
                assert segment and segment[0] in ("carewatch", "python", "python3"), (
                    f"{name}: {segment} runs neither the carewatch CLI nor a service module"
                )
                if segment[0] != "carewatch":
                    modules.append(segment[segment.index("-m") + 1])
                segment = []
        else:
            modules.append(f"services.{environment(service)['CAREWATCH_SERVICE']}")
    assert len(modules) == len(CAREWATCH_SERVICES)
    for module in modules:
        assert re.fullmatch(r"services\.[a-z_]+", module), module
        assert (ROOT / module.replace(".", "/") / "__main__.py").is_file(), (
            f"`python -m {module}` cannot run: no {module.replace('.', '/')}/__main__.py"
        )


# -- docker-compose.yml: migrate and the infrastructure ----------------------------------
def test_migrate_runs_once_as_admin_after_the_infrastructure(services):
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["build"]["dockerfile"] == "deploy/Dockerfile"
    words = command_words(migrate["command"])
    text = " ".join(words)
    for step in ("carewatch secrets check", "carewatch migrate", "carewatch topology declare",
                 "carewatch seed"):
        assert step in text
    assert text.index("carewatch secrets check") < text.index("carewatch migrate"), \
        "weak credentials stop the stack before anything is set up"
    assert words.count("&&") == 3, "a failed step must stop the chain"
    for dependency in ("rabbitmq", "postgres"):
        assert migrate["depends_on"][dependency]["condition"] == "service_healthy"
    env = environment(migrate)
    assert urlsplit(without_variables(env["CAREWATCH_AMQP_URL"])).username == "carewatch-admin"
    assert urlsplit(without_variables(env["CAREWATCH_DATABASE_URL"])).username == "carewatch_admin"


@pytest.mark.parametrize("name", INFRASTRUCTURE)
def test_infrastructure_has_health_checks(services, name):
    check = services[name]["healthcheck"]
    assert check["test"] and not check.get("disable")
    assert services[name]["image"]


def test_rabbitmq_loads_the_definitions(services):
    rabbit = services["rabbitmq"]
    assert rabbit["image"].startswith("rabbitmq:") and "management" in rabbit["image"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in rabbit["volumes"]}
    load = re.search(r"^load_definitions\s*=\s*(\S+)", RABBITMQ_CONF.read_text(), re.M)
    assert load, "rabbitmq.conf does not load the definitions"
    # The definitions rendered by `carewatch secrets init` from the checked-in template.
    from services.cli.secrets import DEFINITIONS as RENDERED
    from services.cli.secrets import DEFINITIONS_TEMPLATE
    assert (ROOT / mounts[load.group(1)]).resolve() == (ROOT / RENDERED).resolve()
    assert DEFINITIONS_TEMPLATE == DEFINITIONS
    assert (ROOT / mounts["/etc/rabbitmq/rabbitmq.conf"]).resolve() == RABBITMQ_CONF
    assert "/var/lib/rabbitmq" in mounts, "broker data must live in a volume"
    assert rabbit.get("hostname"), "the node name follows the hostname: keep it fixed"
    published = {str(p).rsplit(":", 1)[1] for p in rabbit["ports"]}
    assert published == {"5672", "15672"}


def test_postgres_runs_the_init_script(compose, services):
    postgres = services["postgres"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in postgres["volumes"]}
    init = [src for dst, src in mounts.items() if dst.startswith("/docker-entrypoint-initdb.d/")]
    # init.sh runs init.sql with the roles' passwords from the environment.
    assert [(ROOT / src).resolve() for src in init] == [INIT_SQL.with_name("init.sh")]
    assert (ROOT / mounts["/carewatch/init.sql"]).resolve() == INIT_SQL
    assert "/carewatch/init.sql" in INIT_SQL.with_name("init.sh").read_text()
    for role in ("ADMIN", "INTAKE", "QUALITY_MONITOR", "ESCALATION", "NOTIFICATION", "WORKSPACE"):
        assert VARIABLE.search(str(environment(postgres)[f"DB_PASSWORD_{role}"]))
    data = [src for dst, src in mounts.items() if dst == "/var/lib/postgresql/data"]
    assert data and data[0] in compose["volumes"], "data must live in a named volume"
    assert VARIABLE.search(str(environment(postgres)["POSTGRES_PASSWORD"]))


# -- .env.example --------------------------------------------------------------------------
def test_env_example_names_only_known_variables(compose):
    from services.workspace.config import WorkspaceSettings

    known = {f"CAREWATCH_{field.upper()}" for field in Settings.model_fields} | {
        f"CAREWATCH_WORKSPACE_{field.upper()}" for field in WorkspaceSettings.model_fields}
    from shared.credentials import AMQP_USERS

    # Broker users' passwords reach the broker as hashes in its definitions (make secrets).
    referenced = set(VARIABLE.findall(COMPOSE_FILE.read_text())) | set(AMQP_USERS)
    names = env_example_names()
    assert len(names) == len(set(names)), "a variable is set twice"
    unknown = [n for n in names if n not in known | referenced]
    assert not unknown, f"neither a carewatch setting nor used by docker-compose.yml: {unknown}"


def test_env_example_sets_every_required_variable():
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", COMPOSE_FILE.read_text()))
    assert required
    assert required <= set(env_example_names())


def test_every_setting_the_stack_needs_reaches_the_services(services):
    wanted = {
        "CAREWATCH_AMQP_URL",
        "CAREWATCH_DATABASE_URL",
        "CAREWATCH_SMTP_HOST",
        "CAREWATCH_SMTP_PORT",
        "CAREWATCH_QUALITY_TEAM_EMAIL",
        "CAREWATCH_MAIL_FROM",
        "CAREWATCH_DEV_FEED_USER",
        "CAREWATCH_LOG_LEVEL",
    }
    known = {f"CAREWATCH_{field.upper()}" for field in Settings.model_fields}
    assert wanted <= known
    in_env_file = set(env_example_names())
    for name in CAREWATCH_SERVICES:
        assert services[name]["env_file"] in (".env", [".env"])
        missing = wanted - in_env_file - set(environment(services[name]))
        assert not missing, f"{name} gets no {sorted(missing)}"


# -- deploy/Dockerfile -----------------------------------------------------------------------
def test_dockerfile_runs_as_non_root_with_a_health_check():
    instructions = dockerfile_instructions()
    # The image that runs (the last stage; the first builds the workspace's frontend).
    assert [args for op, args in instructions if op == "FROM"][-1] == "python:3.11-slim"
    users = [args for op, args in instructions if op == "USER"]
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0].strip()
    assert user not in ("root", "0")
    healthchecks = [args for op, args in instructions if op == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "NONE" not in healthchecks[0].upper().split()
    assert "carewatch health --service" in healthchecks[0]
    assert "CAREWATCH_SERVICE" in healthchecks[0]


def test_dockerfile_installs_the_project_and_its_files():
    instructions = dockerfile_instructions()
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", runs)
    copied = {
        src.rstrip("/")
        for op, args in instructions
        if op == "COPY"
        for src in args.split()[:-1]
        if not src.startswith("--")
    }
    for path in ("services", "shared", "data", "examples", "deploy", "pyproject.toml", "README.md"):
        assert path in copied, f"{path} not copied"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# -- deploy/rabbitmq/definitions.json ------------------------------------------------------
def test_definitions_have_every_user_with_permissions(definitions):
    users = {u["name"]: u for u in definitions["users"]}
    expected = {"carewatch-admin", "feed-rj1", *(f"carewatch-{n}" for n in CAREWATCH_SERVICES)}
    assert expected <= set(users)
    permissions = {(p["user"], p["vhost"]): p for p in definitions["permissions"]}
    for name, user in users.items():
        assert (name, "/") in permissions, f"{name} has no permissions on /"
        assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        # The checked-in template holds no password: `carewatch secrets init` adds them.
        assert user["password_hash"] == "", name
    assert users["carewatch-admin"]["tags"] == ["administrator"]
    assert all(not users[n]["tags"] for n in expected - {"carewatch-admin"})
    assert {v["name"] for v in definitions["vhosts"]} == {"/"}


@pytest.mark.parametrize(("name", "package"), CAREWATCH_SERVICES.items())
def test_service_users_are_least_privilege(definitions, name, package):
    topology = Topology("carewatch")

    def own_queue(pkg: str) -> str:
        if pkg == "intake":
            return topology.submissions_subscription().queue
        return topology.event_subscription(pkg, "feedback.accepted.v1").queue

    perm = next(p for p in definitions["permissions"] if p["user"] == f"carewatch-{name}")
    mine = [own_queue(package), own_queue(package) + ".dlq"]
    others = [own_queue(p) for p in CAREWATCH_SERVICES.values() if p != package]
    for kind in ("configure", "write", "read"):
        regex = re.compile(perm[kind])
        assert all(regex.search(q) for q in mine), (kind, mine)
        assert not any(regex.search(q) for q in others), (kind, others)
        assert not regex.search(topology.unrouted_queue + "x")
    # What the runtime declares and uses on startup (exchange arguments need these).
    shared = [topology.events_exchange, topology.dead_letter_exchange, topology.unrouted_exchange]
    assert all(re.search(perm["write"], x) for x in shared)
    assert all(re.search(perm["read"], x) for x in shared)
    assert all(re.search(perm["configure"], x) for x in [*shared, topology.submissions_exchange])
    # Only provider feeds publish submissions; only intake consumes them.
    assert not re.search(perm["write"], topology.submissions_exchange)
    assert bool(re.search(perm["read"], topology.submissions_exchange)) == (package == "intake")


def test_feed_user_can_only_publish_submissions(definitions):
    topology = Topology("carewatch")
    perm = next(p for p in definitions["permissions"] if p["user"] == "feed-rj1")
    names = [
        topology.events_exchange,
        topology.submissions_exchange,
        topology.unrouted_queue,
        topology.dead_letter_exchange,
        topology.submissions_subscription().queue,
        "amq.gen-abc",
        "feed-rj1.replies",
    ]
    assert [n for n in names if re.search(perm["write"], n)] == [topology.submissions_exchange]
    assert not [n for n in names if re.search(perm["configure"], n)]
    assert not [n for n in names if re.search(perm["read"], n)]


def test_definitions_match_the_topology_the_code_declares(definitions):
    topology = Topology("carewatch")
    exchanges = {x["name"]: x for x in definitions["exchanges"]}
    assert {n: x["type"] for n, x in exchanges.items()} == {
        topology.events_exchange: "topic",
        topology.submissions_exchange: "topic",
        topology.dead_letter_exchange: "direct",
        topology.unrouted_exchange: "fanout",
    }
    assert exchanges[topology.events_exchange]["arguments"] == {"alternate-exchange": topology.unrouted_exchange}
    assert all(x["durable"] and not x["auto_delete"] for x in exchanges.values())
    queues = {q["name"]: q for q in definitions["queues"]}
    assert queues[topology.unrouted_queue]["arguments"] == {"x-queue-type": "quorum"}
    assert {(b["source"], b["destination"]) for b in definitions["bindings"]} == {
        (topology.unrouted_exchange, topology.unrouted_queue)
    }


# -- deploy/postgres/init.sql -----------------------------------------------------------------
def test_each_service_role_uses_only_its_own_schema():
    sql = init_sql()
    assert re.search(r"CREATE DATABASE carewatch OWNER carewatch_admin", sql)
    for package, schema in SCHEMAS.items():
        role = f"carewatch_{package}"
        assert re.search(rf"CREATE SCHEMA {schema} AUTHORIZATION carewatch_admin;", sql)
        assert re.findall(rf"GRANT USAGE ON SCHEMA (\w+) TO {role};", sql) == [schema]
        granted = re.findall(
            rf"ALTER DEFAULT PRIVILEGES FOR ROLE carewatch_admin IN SCHEMA (\w+)\s+"
            rf"GRANT ([^;]+?) ON (TABLES|SEQUENCES) TO {role};",
            sql,
        )
        assert {(s, kind) for s, _, kind in granted} == {(schema, "TABLES"), (schema, "SEQUENCES")}
        for _, privileges, _ in granted:
            assert not re.search(r"\b(ALL|TRUNCATE|REFERENCES|TRIGGER|CREATE)\b", privileges)
    assert not re.search(r"GRANT CREATE", sql)


def test_env_example_holds_no_working_password():
    from shared.credentials import SECRET_VARIABLE

    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[name.strip()] = value.strip()
    secrets = {n: v for n, v in values.items() if SECRET_VARIABLE.match(n)}
    assert len(secrets) >= 12
    assert all(v == "" for v in secrets.values()), secrets


def test_init_sql_holds_no_password():
    assert not re.search(r"PASSWORD\s+'", init_sql())
    assert len(re.findall(r"PASSWORD :'db_password_\w+'", init_sql())) == 6


def test_definitions_topic_permissions_are_the_topologys(definitions):
    from shared.topology import topic_permissions

    services = [p for p in definitions["topic_permissions"] if p["user"].startswith("carewatch-")]
    assert services == topic_permissions("carewatch")


def test_the_workspace_is_reached_through_its_proxy_and_reaches_escalation(services):
    """The workspace scales (no port of its own): people reach every replica through
    workspace-proxy, which re-resolves the service's name; escalation's and quality-monitor's
    APIs listen on the compose network for the workspace's commands; the token is the workspace's only."""
    proxy = services["workspace-proxy"]
    assert [str(p).rsplit(":", 1)[1] for p in proxy["ports"]] == ["8080"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in proxy["volumes"]}
    conf = (ROOT / mounts["/etc/nginx/conf.d/default.conf"]).read_text()
    assert re.search(r"resolver 127\.0\.0\.11 valid=\d+s", conf)
    assert re.search(r"set \$workspace http://workspace:8085;", conf)
    assert "proxy_pass $workspace;" in conf
    workspace = environment(services["workspace"])
    assert workspace["CAREWATCH_HTTP_HOST"] == "0.0.0.0"
    assert environment(services["escalation"])["CAREWATCH_HTTP_HOST"] == "0.0.0.0"
    assert workspace["CAREWATCH_WORKSPACE_ESCALATION_URL"] == "http://escalation:8083"
    assert environment(services["quality-monitor"])["CAREWATCH_HTTP_HOST"] == "0.0.0.0"
    assert workspace["CAREWATCH_WORKSPACE_MONITOR_URL"] == "http://quality-monitor:8082"
    assert environment(services["intake"])["CAREWATCH_HTTP_HOST"] == "0.0.0.0"
    assert workspace["CAREWATCH_WORKSPACE_INTAKE_URL"] == "http://intake:8081"
    assert environment(services["notification"])["CAREWATCH_HTTP_HOST"] == "0.0.0.0"
    assert workspace["CAREWATCH_WORKSPACE_NOTIFICATION_URL"] == "http://notification:8084"
    assert workspace["CAREWATCH_WORKSPACE_TOKEN"] == "${WORKSPACE_TOKEN:-}"
    for name in ("intake", "quality-monitor", "escalation", "notification", "migrate"):
        assert environment(services[name]).get("WORKSPACE_TOKEN") == "", name
