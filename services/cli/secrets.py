"""``carewatch secrets``: the first run's random credentials, and the check that refuses weak
ones (see shared/credentials.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.cli.common import fail
from shared.credentials import generate_env, render_definitions_file, weak_credentials
from shared.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
DEFINITIONS_TEMPLATE = ROOT / "deploy" / "rabbitmq" / "definitions.json"
# In the directory carewatch runs from (the repository's, for make and compose): the .env
# and what compose mounts into the broker, the definitions with the .env's password hashes.
ENV_FILE = Path(".env")
DEFINITIONS = Path("var") / "deploy" / "definitions.json"

secrets_app = typer.Typer(help="Credentials: generate them at first run, refuse weak ones.",
                          no_args_is_help=True)
COMMAND_GROUPS = {"secrets": secrets_app}


def init_secrets(example: Path, env_file: Path, definitions: Path = DEFINITIONS) -> None:
    """.env with random passwords and keys (0600) if absent, and the broker's definitions."""
    if not env_file.exists():
        generated = generate_env(example, env_file)
        typer.echo(f"wrote {env_file} (mode 0600) with random values for"
                   f" {', '.join(generated)}")
    render_definitions_file(DEFINITIONS_TEMPLATE, env_file, definitions)
    typer.echo(f"wrote {definitions}: the broker users with the passwords of {env_file}")


@secrets_app.command("init")
def secrets_init(
    env_file: Annotated[Path, typer.Option(help="Where to write them.")] = ENV_FILE,
) -> None:
    """Generate random credentials into .env (only if it does not exist; readable by you
    only) and the broker definitions that go with them (var/deploy/definitions.json)."""
    init_secrets(ENV_EXAMPLE, env_file)


@secrets_app.command("check")
def secrets_check() -> None:
    """Exit 1 if this process's credentials are weak (a shipped default, a password equal to
    its user name, none), unless CAREWATCH_DEV_MODE=1 (then only warn)."""
    settings = get_settings()
    problems = weak_credentials(settings)
    for problem in problems:
        typer.secho(problem, fg="yellow" if settings.dev_mode else "red", err=True)
    if problems and not settings.dev_mode:
        raise fail("weak credentials: run `carewatch secrets init`, or set strong passwords", 1)
    typer.echo("credentials: " + ("weak, accepted in development mode" if problems else "ok"))
