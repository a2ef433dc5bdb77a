"""The OpenAPI documents of the services with an HTTP API of their own (intake's feed API,
escalation's commands and views), generated from the code (FastAPI) into docs/openapi/.

    carewatch docs                              # every document, AsyncAPI ones included
    python -m services.cli.openapi --check      # exit 1 if a checked-in one is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shared.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"
SERVICES_WITH_API = ("intake", "escalation")
# The documents describe the default deployment, whatever this machine's settings are.
DOC_SETTINGS = Settings(amqp_url="amqp://rabbitmq:5672/", namespace="carewatch")


def path(service: str) -> Path:
    return DOCS / f"{service}.json"


def document(service: str) -> dict[str, Any]:
    from services.catalogue import builder

    return builder(service)(DOC_SETTINGS).http.api.openapi()


def render(service: str) -> str:
    return json.dumps(document(service), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(service: str) -> Path:
    DOCS.mkdir(parents=True, exist_ok=True)
    path(service).write_text(render(service), encoding="utf-8")
    return path(service)


def write_all() -> list[Path]:
    return [write(service) for service in SERVICES_WITH_API]


def main(argv: list[str]) -> int:
    if "--check" not in argv:
        for written in write_all():
            print(f"wrote {written}")
        return 0
    stale = [path(s) for s in SERVICES_WITH_API
             if not path(s).exists() or path(s).read_text(encoding="utf-8") != render(s)]
    for doc in stale:
        print(f"{doc} is out of date: run `carewatch docs`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
