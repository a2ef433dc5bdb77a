"""intake's OpenAPI document, generated from the code (FastAPI) into docs/openapi/intake.json.

    python -m services.intake.openapi           # write the document
    python -m services.intake.openapi --check   # exit 1 if the checked-in one is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shared.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "intake.json"
# The document describes the default deployment, whatever this machine's settings are.
DOC_SETTINGS = Settings(amqp_url="amqp://rabbitmq:5672/", namespace="carewatch")


def document() -> dict[str, Any]:
    from services.intake.app import build

    return build(DOC_SETTINGS).http.api.openapi()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(path: Path = DOC) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    return path


def main(argv: list[str]) -> int:
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != render():
            print(f"{DOC} is out of date: run `python -m services.intake.openapi`",
                  file=sys.stderr)
            return 1
        print(f"{DOC} is current")
        return 0
    print(f"wrote {write()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
