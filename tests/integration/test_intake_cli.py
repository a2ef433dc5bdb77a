"""The operator's intake commands, run as the CLI against the real broker and database:
feed credentials, bulk files (``carewatch submit``, over AMQP and HTTP, resumed after an
interruption), and the quarantine tools."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.intake.app import build
from shared.db import create_pool
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.helpers import carewatch, eventually, token_for
from tests.integration.test_intake_support import (
    body_bytes,
    example_message,
    isolated_intake,
    issue_api_key,
)

pytestmark = pytest.mark.integration
HEADER = ("Period,Org code,Org name,Site code,Setting,Very good,Good,Neither good nor poor,"
          "Poor,Very poor,Don't know,Total responses,Total eligible")


class Intake:
    """The stack's settings and its intake service, which a test may stop and start."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings, self.pool = settings, pool
        self.runtime: ServiceRuntime | None = None

    async def start(self) -> ServiceRuntime:
        self.runtime = build(self.settings)
        await self.runtime.start()
        return self.runtime

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None

    @property
    def url(self) -> str:
        assert self.runtime is not None
        return f"http://127.0.0.1:{self.runtime.http.port}"

    async def cli(self, *args: str, token: str | None = None) -> tuple[int, str]:
        return await carewatch(self.settings, *args,
                               env={"CAREWATCH_TOKEN": token} if token else None)


@pytest.fixture(scope="module")
async def intake(settings: Settings) -> AsyncIterator[Intake]:
    async with isolated_intake(settings, "cli") as s:
        pool = await create_pool(s.database_url, min_size=1, max_size=4)
        stack = Intake(s, pool)
        await stack.start()
        try:
            yield stack
        finally:
            await stack.stop()
            await pool.close()


def fft_csv(path: Path, rows: int, *, bad: dict[int, dict[str, str]] | None = None,
            tag: str = "") -> Path:
    """An FFT monthly CSV in the published layout: ``rows`` site-months, some made bad."""
    lines = [HEADER]
    for n in range(1, rows + 1):
        cells = {"period": f"20{16 + n % 10}-{1 + n % 12:02d}", "org": "RJ2",
                 "site": f"RJ2{n:04d}{tag}"[:10], "very_good": str(n % 300)}
        cells.update((bad or {}).get(n, {}))
        lines.append(f"{cells['period']},{cells['org']},Lewisham,{cells['site']},Inpatient,"
                     f"{cells['very_good']},20,3,2,1,1,,400")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def summary(out: str) -> dict[str, Any]:
    """The last line the command prints: the counts, as JSON."""
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


# -- feeds ----------------------------------------------------------------------------------------
async def test_feed_credentials_create_list_revoke(intake: Intake) -> None:
    feed = f"cli-feed-{uuid.uuid4().hex[:6]}"
    code, out = await intake.cli("feeds", "create", feed, "--ods", "rj1", "--ods", "RJ2",
                                 "--api-key", "--description", "Datix at RJ1")
    assert code == 0, out
    [key] = [line for line in out.splitlines() if line.startswith("cwk_")]
    assert await intake.pool.fetchval(
        "SELECT count(*) FROM intake.feeds WHERE api_key_sha256 LIKE '%' || $1 || '%'",
        key) == 0, "the key itself is never stored"
    async with httpx.AsyncClient(base_url=intake.url) as client:
        body = {**example_message("compliment")["body"], "ods_code": "RJ1",
                "record_id": uuid.uuid4().hex}
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        assert (await client.post("/v1/submissions", content=body_bytes(body),
                                  headers=headers)).status_code == 202
        code, out = await intake.cli("feeds", "list", "--json")
        [row] = [r for r in json.loads(out) if r["feed_user"] == feed]
        assert (row["api_key"], row["ods_codes"], row["revoked_at"]) == (True, ["RJ1", "RJ2"],
                                                                         None)
        code, out = await intake.cli("feeds", "revoke", feed)
        assert code == 0, out
        assert (await client.post("/v1/submissions", content=body_bytes(body),
                                  headers=headers)).status_code == 401
    assert (await intake.cli("feeds", "revoke", feed))[0] == 1


async def test_feed_for_an_unknown_provider_is_refused(intake: Intake) -> None:
    code, out = await intake.cli("feeds", "create", "cli-feed-x", "--ods", "ZZZ99")
    assert code == 2
    assert "unknown ODS codes: ZZZ99" in out


# -- carewatch submit -----------------------------------------------------------------------------
async def test_fft_csv_over_amqp_with_counts_and_reasons(intake: Intake, tmp_path: Path) -> None:
    path = fft_csv(tmp_path / "fft.csv", 1200, tag="a", bad={
        7: {"very_good": "*"}, 500: {"period": "2031-01"}, 1200: {"org": "ZZZ"}})
    code, out = await intake.cli("submit", str(path), "--batch-size", "200")
    assert code == 0, out
    assert summary(out) == {"file": str(path), "records": 1200, "accepted": 1197,
                            "duplicate": 0, "rejected": 3}
    assert "ignoring columns: Org name, Total responses" in out
    rejected = [json.loads(line) for line in
                (tmp_path / "fft.csv.rejected.jsonl").read_text().splitlines()]
    # By line of the file (the header is line 1), as the summary says them too.
    assert [(r["line"], r["reasons"][0]["loc"], r["reasons"][0]["type"]) for r in rejected] == [
        (8, "very_good", "int_parsing"), (501, "period", "value_error"),
        (1201, "ods_code", "unknown_provider")]
    assert "rejected 3 record(s):\n  line 8: very_good: " in out
    assert await intake.pool.fetchval(
        "SELECT count(*) FROM intake.feedback WHERE kind = 'fft_monthly'"
        " AND content->>'site_code' LIKE 'RJ2%A'") == 1197
    # Loaded already: nothing is sent again.
    code, out = await intake.cli("submit", str(path))
    assert code == 0 and "already loaded" in out
    # Loaded again from the start: every record is a duplicate (or rejected again).
    code, out = await intake.cli("submit", str(path), "--restart")
    assert code == 0, out
    assert summary(out)["duplicate"] == 1197 and summary(out)["rejected"] == 3


async def test_interrupted_load_resumes_without_duplicates(intake: Intake, tmp_path: Path) -> None:
    path = fft_csv(tmp_path / "resume.csv", 1000, tag="r")
    await intake.stop()  # nobody admits: the load publishes, then gives up waiting
    try:
        code, out = await intake.cli("submit", str(path), "--batch-size", "100",
                                     "--in-flight", "4", "--timeout", "2")
        assert code == 1, out
        assert "run again to resume" in out
        checkpoint = json.loads((tmp_path / "resume.csv.checkpoint.json").read_text())
        assert checkpoint["done"] == 0 and checkpoint["sent"] == 400
    finally:
        await intake.start()
    code, out = await intake.cli("submit", str(path), "--batch-size", "100")
    assert code == 0, out
    assert "resuming" not in out  # nothing was done; the first 400 are looked up, not resent
    assert summary(out) == {"file": str(path), "records": 1000, "accepted": 1000,
                            "duplicate": 0, "rejected": 0}
    assert not (tmp_path / "resume.csv.rejected.jsonl").exists(), "no empty file left behind"
    assert await intake.pool.fetchval(
        "SELECT count(*) FROM intake.feedback WHERE content->>'site_code' LIKE 'RJ2%R'") == 1000


async def test_complaints_export_over_http(intake: Intake, tmp_path: Path) -> None:
    key = await issue_api_key(intake.pool, f"cli-http-{uuid.uuid4().hex[:6]}", ["RJ1", "RJ2"])
    tag = uuid.uuid4().hex[:6]
    rows = [f"C-{tag}-{n},RJ1,10/11/2026,Appointments,Letter {n} sent twice; call 07700 900461,2,2"
            for n in range(1, 251)]
    rows.append(f"C-{tag}-251,RAL,10/11/2026,Appointments,Not this feed's provider,1,1")
    path = tmp_path / "complaints.csv"
    path.write_text("Complaint reference,Org code,Date received,Subject,Details,Consequence,"
                    "Likelihood\n" + "\n".join(rows) + "\n")
    code, out = await intake.cli("submit", str(path), "--http", intake.url, "--api-key", key,
                                 "--batch-size", "100")
    assert code == 0, out
    assert summary(out) == {"file": str(path), "records": 251, "accepted": 250, "duplicate": 0,
                            "rejected": 1}
    content = await intake.pool.fetchval(
        "SELECT content FROM intake.feedback WHERE provider_record_id = $1", f"C-{tag}-1")
    assert content["description"] == "Letter 1 sent twice; call [PHONE]"
    assert content["acknowledgement_due"] == "2026-11-13"


async def test_json_lines_with_hostile_lines(intake: Intake, tmp_path: Path) -> None:
    good = [{**example_message(name)["body"], "record_id": uuid.uuid4().hex}
            for name in ("compliment", "gp-alert", "engagement-feedback")]
    path = tmp_path / "feed.jsonl"
    path.write_bytes(b"\n".join([body_bytes(b) for b in good] + [
        b"\xff\xfe not UTF-8", b'{"kind": "tweet"}', b"[" * 5000, body_bytes(good[0])]) + b"\n")
    code, out = await intake.cli("submit", str(path))
    assert code == 0, out
    assert summary(out) == {"file": str(path), "records": 7, "accepted": 3, "duplicate": 1,
                            "rejected": 3}


async def test_a_file_whose_every_record_is_rejected_fails(intake: Intake,
                                                           tmp_path: Path) -> None:
    path = fft_csv(tmp_path / "bad.csv", 3, tag="x", bad={n: {"org": "ZZZ"} for n in (1, 2, 3)})
    code, out = await intake.cli("submit", str(path))
    assert code == 1, out
    assert summary(out)["rejected"] == 3
    assert "line 2: ods_code: " in out and "line 4: ods_code: " in out
    assert "every record of" in out and "was rejected" in out


async def test_submit_refuses_a_file_it_cannot_read(intake: Intake, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("name,address\nA,B\n")
    code, out = await intake.cli("submit", str(path))
    assert code == 2 and "pass --format" in out


# -- quarantine -----------------------------------------------------------------------------------
async def post(intake: Intake, key: str, body: dict[str, Any] | bytes) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=intake.url) as client:
        response = await client.post(
            "/v1/submissions", content=body if isinstance(body, bytes) else body_bytes(body),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    return dict(response.json())


async def test_quarantine_show_and_resubmit_after_correction(intake: Intake,
                                                             tmp_path: Path) -> None:
    feed = f"cli-q-{uuid.uuid4().hex[:6]}"
    key = await issue_api_key(intake.pool, feed, ["RJ1"])
    invalid = {**example_message("invalid-complaint")["body"], "record_id": uuid.uuid4().hex}
    sid = (await post(intake, key, invalid))["submission_id"]

    code, out = await intake.cli("quarantine", "list", "--json", "--feed", feed)
    assert code == 0, out
    assert [r["submission_id"] for r in json.loads(out)] == [sid]
    code, out = await intake.cli("quarantine", "show", sid, "--json")
    assert json.loads(out)["body"] == body_bytes(invalid).decode()

    # Resubmitted still wrong: rejected again, as a new quarantine row linked to the first.
    still = tmp_path / "still-wrong.json"
    still.write_bytes(body_bytes({**invalid, "priority": None}))
    code, out = await intake.cli("quarantine", "resubmit", sid, "--file", str(still))
    assert code == 3, out
    again = json.loads(out[:out.rindex("}") + 1])["submission_id"]
    assert await intake.pool.fetchval(
        "SELECT resubmission_of FROM intake.quarantine WHERE submission_id = $1",
        uuid.UUID(again)) == uuid.UUID(sid)

    # Corrected (a message file, as in examples/): accepted, the row closed.
    corrected = tmp_path / "corrected.json"
    message = example_message("routine-complaint")
    message["body"] = {**message["body"], "ods_code": "RJ1", "record_id": invalid["record_id"]}
    corrected.write_text(json.dumps(message))
    # Who resubmits is the token's account, which must be an operator (never a typed name).
    viewer = await token_for(intake.pool, f"viewer-{feed}", "lay_member")
    code, out = await intake.cli("quarantine", "resubmit", again, "--file", str(corrected),
                                 token=viewer)
    assert code == 3 and "operator" in out, out
    analyst = await token_for(intake.pool, f"analyst-{feed}", "operator")
    code, out = await intake.cli("quarantine", "resubmit", again, "--file", str(corrected),
                                 token=analyst)
    assert code == 0, out
    result = json.loads(out)
    assert result["outcome"] == "accepted"
    row = await intake.pool.fetchrow(
        "SELECT * FROM intake.quarantine WHERE submission_id = $1", uuid.UUID(again))
    assert (row["status"], row["resolved_by"], str(row["resubmitted_as"])) == (
        "resubmitted", f"analyst-{feed}", result["submission_id"])
    feedback = await intake.pool.fetchrow(
        "SELECT * FROM intake.feedback WHERE feedback_id = $1", uuid.UUID(result["feedback_id"]))
    assert feedback["feed_user"] == feed  # admitted as the feed that sent it
    # Resubmitting a closed row is refused.
    code, out = await intake.cli("quarantine", "resubmit", again, "--file", str(corrected))
    assert code == 1 and "not open" in out


async def test_forbidden_submission_resubmitted_as_stored_once_the_feed_is_registered(
        intake: Intake) -> None:
    feed = f"cli-f-{uuid.uuid4().hex[:6]}"
    key = await issue_api_key(intake.pool, feed, ["RJ1"])
    body = {**example_message("online-review")["body"], "ods_code": "RAL",
            "record_id": uuid.uuid4().hex}
    rejected = await post(intake, key, body)
    assert rejected["reasons"][0]["type"] == "forbidden"
    assert (await intake.cli("feeds", "create", feed, "--ods", "RAL"))[0] == 0
    code, out = await intake.cli("quarantine", "resubmit", rejected["submission_id"])
    assert code == 0, out
    assert json.loads(out)["outcome"] == "accepted"
    await eventually(lambda: intake.pool.fetchval(
        "SELECT count(*) = 0 FROM intake.outbox"), what="events published by intake's relay")


async def test_quarantine_discard(intake: Intake) -> None:
    key = await issue_api_key(intake.pool, f"cli-d-{uuid.uuid4().hex[:6]}", ["RJ1"])
    sid = (await post(intake, key, b"not json"))["submission_id"]
    code, out = await intake.cli("quarantine", "discard", sid)
    assert code == 0, out
    code, out = await intake.cli("quarantine", "list", "--json", "--status", "discarded")
    assert sid in {r["submission_id"] for r in json.loads(out)}
    assert (await intake.cli("quarantine", "discard", sid))[0] == 1

