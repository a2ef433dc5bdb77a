"""deploy/setup-local.sh, the set-up `make run`, `make test` and CI share: what runs is left
alone; what is missing is installed with apt-get through sudo (said first) and started.
Driven with stand-ins for apt-get, sudo and the servers, so nothing is installed or started."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "setup-local.sh"


def stubs(tmp_path: Path) -> Path:
    """A bin directory: `id -u` says 1000 (not root), sudo and apt-get only log what they
    were asked, and no rabbitmq-server or PostgreSQL cluster is installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name, body in {
        "id": 'if [ "$1" = -u ]; then echo 1000; else /usr/bin/id "$@"; fi',
        "sudo": f'echo "sudo $*" >> {log}',
        "apt-get": f'echo "apt-get $*" >> {log}',
    }.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{stubs(tmp_path)}:/usr/bin:/bin"  # no /usr/sbin: rabbitmq-server "absent"
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          check=False, env={"PATH": path, "HOME": str(tmp_path),
                                            "CAREWATCH_SETUP_TIMEOUT": "1", **env})


def test_what_answers_is_left_alone(tmp_path: Path) -> None:
    with socket.socket() as amqp, socket.socket() as pg:
        for s in (amqp, pg):
            s.bind(("127.0.0.1", 0))
            s.listen()
        result = run(tmp_path,
                     CAREWATCH_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{amqp.getsockname()[1]}/",
                     CAREWATCH_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{pg.getsockname()[1]}/x")
    assert result.returncode == 0, result.stderr
    assert "left as it is" in result.stdout
    assert not (tmp_path / "calls.log").exists(), "nothing installed, nothing started"


def test_what_is_missing_is_installed_through_sudo_and_said(tmp_path: Path) -> None:
    with socket.socket() as pg:
        pg.bind(("127.0.0.1", 0))
        pg.listen()
        result = run(tmp_path, CAREWATCH_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
                     CAREWATCH_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{pg.getsockname()[1]}/x")
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert "setup: installing with apt-get: rabbitmq-server (through sudo)" in result.stdout
    assert "sudo apt-get update -qq" in calls
    assert "sudo apt-get install -y -qq --no-install-recommends rabbitmq-server" in calls
    assert any(c.startswith("sudo rabbitmq-server -detached") or
               c == "sudo systemctl start rabbitmq-server" for c in calls), calls
    # The stand-in server never answers: the script says so and fails.
    assert result.returncode == 1 and "nothing answered" in result.stderr


def test_a_remote_broker_is_not_this_machines_business(tmp_path: Path) -> None:
    with socket.socket() as pg:
        pg.bind(("127.0.0.1", 0))
        pg.listen()
        result = run(tmp_path, CAREWATCH_AMQP_URL="amqp://feed:pw@192.0.2.1:5672/",
                     CAREWATCH_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{pg.getsockname()[1]}/x")
    assert result.returncode == 0
    assert "not a local service, so not installed here" in result.stderr
    assert not (tmp_path / "calls.log").exists()
    assert os.access(SCRIPT, os.X_OK)
