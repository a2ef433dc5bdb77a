"""No default secrets: weak credentials are found, the first run's .env is random and private."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from shared.credentials import (
    SECRET_VARIABLE,
    generate_env,
    password_problem,
    read_env,
    render_definitions,
    weak_credentials,
)
from shared.settings import Settings
from shared.topology import EVENT_OWNERS, owned_keys_pattern, sender_refusal

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("user", "password"), [
    ("carewatch-intake", "carewatch-intake"), ("carewatch_admin", "carewatch_admin"),
    ("guest", "guest"), ("x", "postgres-dev-only"), ("x", "short"), ("x", None), ("x", ""),
])
def test_weak_passwords_are_refused(user: str, password: str | None) -> None:
    assert password_problem(user, password)


def test_settings_with_shipped_defaults_are_weak() -> None:
    assert weak_credentials(Settings()) == [
        "CAREWATCH_AMQP_URL: user guest has its user name as password",
        "CAREWATCH_DATABASE_URL: user postgres has no password"]
    strong = Settings(amqp_url="amqp://carewatch-intake:Xk3v9_Qz7pLm2Rt8Wc4Yh6@h:5672/",
                      database_url="postgresql://carewatch_intake:Nq8Zx2Lp5Vb7Mk3Tr9Yw4@h/cw")
    assert weak_credentials(strong) == []
    assert weak_credentials(Settings(amqp_url="amqp://h:5672/",
                                     database_url=strong.database_url))


def test_first_run_env_is_random_and_private(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    generated = generate_env(ROOT / ".env.example", target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    env = read_env(target)
    secrets = {n: v for n, v in env.items() if SECRET_VARIABLE.match(n)}
    assert sorted(secrets) == sorted(generated) and len(secrets) >= 12
    assert all(password_problem(n, v) is None for n, v in secrets.items())
    assert len(set(secrets.values())) == len(secrets), "each its own"
    with pytest.raises(FileExistsError):
        generate_env(ROOT / ".env.example", target)
    template = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    rendered = render_definitions(template, env)
    assert all(u["password_hash"] for u in rendered["users"])


def test_every_event_type_has_one_owner_and_its_keys_only() -> None:
    from services.catalogue import PUBLISHES, RETIRED

    assert {cls.event_type: service for publishes in (PUBLISHES, RETIRED)
            for service, classes in publishes.items() for cls in classes} == EVENT_OWNERS
    import re
    intake = owned_keys_pattern("intake")
    assert re.match(intake, "feedback.accepted.v1.complaint")
    assert not re.match(intake, "concern.closed.v1")
    assert not re.match(owned_keys_pattern("notification"), "concern.closed.v1")


def test_the_sender_must_be_the_owner() -> None:
    users = {"*": "guest"}
    assert sender_refusal("concern.closed.v1", "guest", users) is None
    assert sender_refusal("concern.closed.v1", "carewatch-escalation", {}) is None
    assert sender_refusal("concern.closed.v1", "carewatch-admin", {}) is None  # replays
    refusal = sender_refusal("concern.closed.v1", "carewatch-notification", {})
    assert refusal and "escalation" in refusal and "carewatch-notification" in refusal
    assert sender_refusal("concern.closed.v1", None, {})
    assert sender_refusal("made.up.v1", "carewatch-escalation", {})
