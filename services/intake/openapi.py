"""intake's OpenAPI document, generated from the code (FastAPI) into docs/openapi/intake.json
(see services/cli/openapi.py, which writes every service's).

    python -m services.intake.openapi           # write the document
    python -m services.intake.openapi --check   # exit 1 if the checked-in one is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from services.cli import openapi

DOC = openapi.path("intake")


def document() -> dict[str, Any]:
    return openapi.document("intake")


def render() -> str:
    return openapi.render("intake")


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
