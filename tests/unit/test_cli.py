"""The `carewatch` command line as a newcomer meets it: every command listed, start-up
without the heavy libraries, options checked before anything connects, output for people."""

from __future__ import annotations

import importlib
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import typer
from typer.testing import CliRunner

from services.cli import common, ops
from services.cli.main import LAZY, app

runner = CliRunner()
CLI_MODULES = ("services.intake.cli", "services.quality_monitor.cli", "services.escalation.cli",
               "services.notification.cli", "services.cli.ops",
               "services.quality_monitor.reports.cli")


def test_every_command_group_of_every_module_is_listed() -> None:
    for name in CLI_MODULES:
        module = importlib.import_module(name)
        for group, sub in module.COMMAND_GROUPS.items():
            assert group in LAZY, f"{name}: {group} is not in services.cli.main.LAZY"
            assert LAZY[group].target == f"{name}:{_attribute(module, sub)}"
            assert LAZY[group].help == sub.info.help, f"{group}: help differs from {name}'s"
        for command, function in getattr(module, "COMMANDS", {}).items():
            assert LAZY[command].target == f"{name}:{function.__name__}"


def _attribute(module: object, value: object) -> str:
    return next(k for k, v in vars(module).items() if v is value)


def _help_and_imports(args: list[str], heavy: tuple[str, ...]) -> str:
    """`carewatch ARGS` in a fresh interpreter; its output, then which of ``heavy`` it
    imported (``HEAVY [...]``)."""
    code = (f"import sys\nfrom services.cli.main import main\nsys.argv = {['carewatch', *args]!r}\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY', [m for m in {heavy!r} if m in sys.modules])")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout


def test_help_lists_every_command_without_importing_the_services() -> None:
    out = _help_and_imports(["--help"], ("matplotlib", "fastapi", "aio_pika", "asyncpg",
                                         "faststream", "services.quality_monitor.cli",
                                         "services.escalation.app"))
    assert "HEAVY []" in out
    for name in LAZY:
        assert f"  {name} " in out
    assert "``" not in out and "<bool>" not in out


def test_a_command_imports_only_its_module() -> None:
    out = _help_and_imports(["concerns", "list", "--help"],
                            ("matplotlib", "fastapi", "services.escalation.cli"))
    assert "--severity" in out and "HEAVY []" in out


@pytest.mark.parametrize(("args", "module"), [
    (["concerns", "list", "--help"], "services.quality_monitor.store"),
    (["meetings", "list", "--help"], "services.escalation.store"),
    (["meetings", "list", "--help"], "services.escalation.app"),
    (["quarantine", "list", "--help"], "services.intake.store"),
    (["feeds", "create", "--help"], "shared.settings"),
])
def test_a_commands_help_loads_none_of_what_the_command_uses(args: list[str],
                                                               module: str) -> None:
    # A lazy module sits in sys.modules unexecuted (importlib's _LazyModule) until it is used.
    code = ("import sys, runpy\n"
            f"sys.argv = ['carewatch', *{args!r}]\n"
            "try:\n    runpy.run_module('services.cli.main', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            f"m = sys.modules.get({module!r})\n"
            "print('LOADED', m is not None and type(m).__name__ != '_LazyModule')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "LOADED False" in out, out


def test_the_roles_and_severities_the_commands_name_load_nothing_heavy() -> None:
    # The commands take their roles and --severity choices from these two modules instead of
    # copying them: they must stay free of what shared.identity and shared.events load.
    code = ("import sys\nimport shared.roles, shared.severity\n"
            "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in"
            " {'pydantic', 'asyncpg', 'starlette', 'fastapi', 'faststream', 'typer'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "HEAVY []" in out, out


@pytest.mark.parametrize(("args", "allowed"), [
    (["concerns", "list", "--status", "bogus"], "'open', 'resolved', 'all'"),
    (["concerns", "list", "--severity", "bogus"], "'low', 'moderate', 'high', 'serious'"),
    (["meetings", "list", "--status", "bogus"], "'scheduled', 'held', 'cancelled'"),
    (["quarantine", "list", "--status", "bogus"], "'open', 'resubmitted', 'discarded'"),
    (["charts", "funnel", "--setting", "inpatient", "--period", "2026-13"], "not a month"),
    (["charts", "spc", "--provider", "RJ1", "--metric", "complaints", "--until", "2026-00"],
     "not a month"),
    (["charts", "spc", "--provider", "RJ1", "--metric", "bogus"], "'fft_negative'"),
])
def test_bad_options_are_refused_before_anything_connects(args: list[str], allowed: str) -> None:
    result = runner.invoke(app, args, env={"CAREWATCH_DATABASE_URL": "postgresql://nobody@192.0.2.1:1/x"})
    assert result.exit_code == 2
    assert allowed in result.output


def test_months() -> None:
    assert common.month("2026-03") == "2026-03"
    assert common.month(None) is None
    for bad in ("2026-13", "2026-00", "2026-3", "March", "2026-03-01"):
        with pytest.raises(typer.BadParameter):
            common.month(bad)


def test_metric_choices_are_the_measures() -> None:
    from services.quality_monitor.cli import Metric
    from services.quality_monitor.series import METRICS

    assert [m.value for m in Metric] == list(METRICS)


def test_times_are_shown_in_london() -> None:
    summer = datetime(2026, 6, 3, 8, 0, tzinfo=UTC)
    winter = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    assert common.when(summer) == "2026-06-03 09:00 BST"
    assert common.when(winter) == "2026-12-03 09:00 GMT"
    assert common.when("2026-06-03T08:00:00+00:00") == "2026-06-03 09:00 BST"
    assert common.when("not a time") == "not a time"


def test_tables_say_what_is_not_shown(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": i, "reasons": common.joined([f"r{j}" for j in range(5)])} for i in range(3)]
    common.print_rows(rows, False, ["id", "reasons"], total=62)
    out = capsys.readouterr().out
    assert "r0; r1 (+3 more)" in out
    assert "3 of 62 shown" in out
    common.print_rows(rows, False, ["id"], total=3)
    assert "of" not in capsys.readouterr().out


def test_records_are_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    common.print_record({"meeting_id": "m1", "starts_at": datetime(2026, 6, 3, 8, tzinfo=UTC),
                         "breach": False, "agenda": ["Review the evidence", "Agree actions"],
                         "figures": {"count": 3}})
    out = capsys.readouterr().out
    assert "{" not in out
    assert "starts at:" in out and "2026-06-03 09:00 BST" in out
    assert "breach:" in out and "no" in out
    assert "  - Review the evidence" in out
    common.print_record({"a": 1}, as_json=True)
    assert capsys.readouterr().out.strip() == '{\n  "a": 1\n}'


def test_status_is_for_people() -> None:
    lines = ops.status_lines({"feedback_accepted": 1200, "quarantine_open": 2, "unrouted": 0,
                              "concerns_open": {"low": 4, "serious": 1},
                              "meetings_upcoming": 1, "notifications": {}})
    text = "\n".join(lines)
    assert "1,200" in text and "1 serious, 4 low" in text and "notifications:          0" in text
    assert "{" not in text


def test_unreachable_names_the_setting() -> None:
    exc = common.Unreachable("RabbitMQ", "CAREWATCH_AMQP_URL",
                             "amqp://feed:secret@broker:5672/", ConnectionRefusedError(111, "x"))
    assert "CAREWATCH_AMQP_URL" in str(exc) and "broker:5672" in str(exc)
    assert "secret" not in str(exc)


def test_a_connection_failure_is_said_once() -> None:
    env = {"CAREWATCH_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "services.cli.main", "dlq", "list"],
                            capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "cannot reach RabbitMQ at 127.0.0.1:1" in lines[0]
    assert "CAREWATCH_AMQP_URL" in lines[0]


def test_a_second_run_says_what_already_runs_where() -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ok", "service": "intake"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "run", "--service", "intake",
             "--no-setup"], capture_output=True, text=True, timeout=60, check=False,
            env={"CAREWATCH_HTTP_PORT": str(port), "PATH": "/usr/bin:/bin", "CAREWATCH_DEV_MODE": "1"})
    finally:
        server.shutdown()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"intake at http://127.0.0.1:{port} (its /health answers)" in result.stderr
    assert "already running" in result.stderr
