"""No default secrets: weak credentials are refused outside development mode, and the first
run generates random ones.

``weak_credentials`` says what is wrong with a process's credentials (a password equal to its
user name, a well-known default such as ``guest``, a short one, none at all). Every service
process (``python -m services.<name>``, so every compose container) and ``carewatch run``
refuse to start on any of them unless ``CAREWATCH_DEV_MODE=1``, which ``make run`` sets on a
development machine (its RabbitMQ is guest/guest and its PostgreSQL trusts local users).

``generate_env`` writes a ``.env`` (mode 0600) from ``.env.example`` with a random value for
every password and signing key; ``render_definitions`` gives the broker definitions with those
passwords' hashes (deploy/rabbitmq/definitions.json holds users without passwords).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.settings import Settings

# Passwords shipped by earlier versions, or that anybody would try first.
KNOWN_DEFAULTS = frozenset({
    "guest", "postgres", "password", "admin", "carewatch", "changeme", "secret", "rabbitmq",
    "postgres-dev-only", "carewatch-admin", "carewatch_admin", "root", "test",
})
MIN_LENGTH = 16
# The variables of .env.example that hold secrets: generated at first run.
SECRET_VARIABLE = re.compile(r"^(POSTGRES_PASSWORD|AMQP_PASSWORD_[A-Z0-9_]+|DB_PASSWORD_[A-Z0-9_]+"
                             r"|[A-Z_]*_HMAC_KEY)$")
# The broker user each AMQP_PASSWORD_* variable is the password of.
AMQP_USERS = {"AMQP_PASSWORD_ADMIN": "carewatch-admin",
              "AMQP_PASSWORD_INTAKE": "carewatch-intake",
              "AMQP_PASSWORD_QUALITY_MONITOR": "carewatch-quality-monitor",
              "AMQP_PASSWORD_ESCALATION": "carewatch-escalation",
              "AMQP_PASSWORD_NOTIFICATION": "carewatch-notification",
              "AMQP_PASSWORD_WORKSPACE": "carewatch-workspace",
              "AMQP_PASSWORD_FEED_RJ1": "feed-rj1"}


def password_problem(user: str | None, password: str | None) -> str | None:
    """Why a password is not acceptable outside development mode (None: it is)."""
    if not password:
        return "has no password"
    if user and password.lower() == user.lower():
        return "has its user name as password"
    if password.lower() in KNOWN_DEFAULTS:
        return f"uses the well-known password {password!r}"
    if len(password) < MIN_LENGTH:
        return f"has a password of fewer than {MIN_LENGTH} characters"
    return None


def weak_credentials(settings: Settings) -> list[str]:
    """What is weak in these settings' credentials (empty: nothing)."""
    problems = []
    for what, url in (("CAREWATCH_AMQP_URL", settings.amqp_url),
                      ("CAREWATCH_DATABASE_URL", settings.database_url)):
        parts = urlsplit(url)
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if what == "CAREWATCH_AMQP_URL" and user is None:
            user, password = "guest", "guest"  # what a client sends with no credentials
        problem = password_problem(user, password)
        if problem:
            problems.append(f"{what}: user {user or '(none)'} {problem}")
    for name, secret in settings.notification_webhook_secrets.items():
        problem = password_problem(None, secret)
        if problem:
            problems.append(f"webhook {name!r} signing secret {problem}")
    return problems


def generate_env(example: Path, target: Path) -> list[str]:
    """Write ``target`` from ``example`` with a fresh random value for every secret variable,
    readable by its owner only (0600); refuse to overwrite. Returns the variables set."""
    generated = []
    lines = []
    for line in example.read_text().splitlines():
        name, sep, _ = line.partition("=")
        if sep and not line.lstrip().startswith("#") and SECRET_VARIABLE.match(name.strip()):
            lines.append(f"{name.strip()}={secrets.token_urlsafe(24)}")
            generated.append(name.strip())
        else:
            lines.append(line)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    return generated


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[name.strip()] = value.strip()
    return values


def rabbitmq_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def render_definitions(template: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """The broker definitions with each carewatch user's password hash from ``env``."""
    out = copy.deepcopy(template)
    out.pop("_comment", None)
    passwords = {user: env[var] for var, user in AMQP_USERS.items() if env.get(var)}
    for user in out["users"]:
        if user["name"] in passwords:
            user["password_hash"] = rabbitmq_hash(passwords[user["name"]])
    return out


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, mode)


def render_definitions_file(template: Path, env_file: Path, target: Path) -> None:
    """Write the broker definitions for the passwords of ``env_file`` (readable by the
    broker's container user: hashes, salted, of random passwords)."""
    rendered = render_definitions(json.loads(template.read_text()), read_env(env_file))
    write_private(target, json.dumps(rendered, indent=2) + "\n", 0o644)
