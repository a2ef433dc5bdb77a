"""Every container image is pinned to a release (issue 14: ``mailpit:latest`` was not): an
upgrade is a change someone makes on purpose, not whatever a registry serves that day."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# name:MAJOR.MINOR[.PATCH], optionally with a v prefix or a suffix (-management, -slim): a
# release line at least, never ``latest`` nor a bare major version.
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+(?:\.\d+)?(?:-[\w.-]+)?$")


def images() -> list[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    found = [s["image"] for s in compose["services"].values()
             if "image" in s and "build" not in s]
    found += re.findall(r"^FROM\s+(\S+)", (ROOT / "deploy" / "Dockerfile").read_text(), re.M)
    found += re.findall(r'Container\("([^"]+)"\)', (ROOT / "tests" / "conftest.py").read_text())
    return found


def test_every_image_is_pinned_to_a_release() -> None:
    found = images()
    assert any("mailpit" in image for image in found) and len(found) >= 5, found
    assert [image for image in found if not PINNED.match(image)] == []
