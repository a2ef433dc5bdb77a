"""The workspace's pages and commands over HTTP, against the real PostgreSQL and escalation's
real HTTP API (served by escalation's runtime on a port of its own).

No broker here (the browser test, tests/browser/, runs the whole stack): the read model is fed
by calling the workspace's handlers with the events escalation wrote to its outbox, exactly
what the relay would deliver.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from services.escalation.app import EscalationRuntime
from services.escalation.app import build as build_escalation
from services.quality_monitor.app import build_monitor
from services.workspace.app import WorkspaceRuntime
from services.workspace.app import build as build_workspace
from services.workspace.config import WorkspaceSettings
from shared import identity
from shared.db import create_pool, migrate
from shared.envelope import Envelope
from shared.events import (
    EVENT_TYPES,
    ConcernRaised,
    ConcernUpdated,
    Evidence,
    ProviderRef,
    Severity,
)
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tools.stacks import database_url

pytestmark = pytest.mark.integration
PASSWORD = "a long enough password"
ODS, OTHER = "RAT", "RWK"


def person(tag: str, who: str) -> str:
    return f"{who}.{tag}@example.nhs.uk"


class Stack:
    def __init__(self, workspace: WorkspaceRuntime, escalation: EscalationRuntime,
                 monitor: ServiceRuntime, tag: str, clock: list[datetime]) -> None:
        self.workspace = workspace
        self.escalation = escalation
        self.monitor = monitor
        self.tag = tag
        self.clock = clock

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.workspace.http.api),
                                 base_url="http://workspace.test")

    async def sign_in(self, who: str) -> httpx.AsyncClient:
        client = self.client()
        response = await client.post("/sign-in", data={"email": person(self.tag, who),
                                                        "password": PASSWORD})
        assert response.status_code == 303, response.text
        return client

    async def deliver(self) -> None:
        """What escalation's schedule and relay would do once its coalescing window has
        passed (a concern joining the provider's meeting is announced then): the due
        announcements made, then escalation's outbox to the workspace's handlers."""
        window = self.escalation.escalation.policy.meetings.coalesce_seconds
        await self.escalation.ticker.run_due(self.clock[0] + timedelta(seconds=window))
        pool = self.workspace.pool
        rows = []
        for schema in ("monitor", "escalation"):
            taken = await pool.fetch(f"SELECT seq, body FROM {schema}.outbox ORDER BY seq")
            await pool.execute(f"DELETE FROM {schema}.outbox WHERE seq <= $1",
                               taken[-1]["seq"] if taken else 0)
            rows += taken
        handlers = {cls: handler for cls, handler in _handlers(self.workspace)}
        for row in rows:
            envelope = Envelope.from_bytes(bytes(row["body"]))
            cls = EVENT_TYPES[envelope.type]
            if cls in handlers:
                async with pool.acquire() as conn, conn.transaction():
                    await handlers[cls](conn, cls.model_validate(envelope.data),
                                        self.workspace.outbox(conn, cause=envelope))


def _handlers(runtime: WorkspaceRuntime) -> list[tuple[type[Any], Any]]:
    from services.workspace.app import handlers

    return handlers(runtime.read_model)


@pytest.fixture(scope="module")
async def settings_db(server_urls: Any) -> AsyncIterator[tuple[Settings, asyncpg.Pool]]:
    """A database of this module's own, with the schemas it needs (no broker: nothing here
    consumes or publishes)."""
    tag = uuid.uuid4().hex[:10]
    settings = Settings(database_url=database_url(server_urls.postgres_admin,
                                                  f"carewatch_test_{tag}"),
                        namespace=f"cwtest_{tag}", http_port=0)
    name = settings.database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(server_urls.postgres_admin)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(settings.database_url)
    await migrate(conn, identity.SCHEMA, identity.MIGRATIONS, messaging=False)
    from services.intake.app import build as build_intake
    from services.notification.app import build as build_notification

    for runtime in (build_escalation(settings), build_workspace(settings),
                    build_monitor(settings)[0], build_intake(settings),
                    build_notification(settings)):
        await migrate(conn, runtime.schema, runtime.migrations)
    await conn.close()
    pool = await create_pool(settings.database_url, min_size=1, max_size=3)
    yield settings, pool
    await pool.close()
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="module")
async def stack(settings_db: tuple[Settings, asyncpg.Pool]) -> AsyncIterator[Stack]:
    settings, db = settings_db
    tag = uuid.uuid4().hex[:8]
    async with db.acquire() as conn:
        for who, roles, ods in (("lead", [identity.QUALITY_LEAD], []),
                                ("lay", [identity.LAY_MEMBER], []),
                                ("rat", [identity.PROVIDER_USER], [ODS]),
                                ("rwk", [identity.PROVIDER_USER], [OTHER])):
            await identity.add_account(conn, identity.NewAccount(person(tag, who), roles,
                                                                 ods_codes=ods), "tests")
            await identity.set_password(conn, person(tag, who), PASSWORD)
        service = f"workspace-{tag}"
        await identity.add_account(conn, identity.NewAccount(service, [identity.OPERATOR],
                                                             kind="service"), "tests")
        token = await identity.create_token(conn, service, scopes=None, days=1, label="t",
                                            created_by="tests")
    # Escalation's clock: a Monday in 2034 (no other test books meetings then), moved on by
    # the test when the meeting has to have started.
    clock = [datetime(2034, 3, 6, 9, 0, tzinfo=UTC)]
    escalation = build_escalation(settings, clock=lambda: clock[0])
    escalation._pool = await create_pool(settings.database_url, min_size=1, max_size=3)
    await escalation.http.start("127.0.0.1", 0)
    monitor, _ = build_monitor(settings, clock=lambda: clock[0])
    monitor._pool = await create_pool(settings.database_url, min_size=1, max_size=3)
    await monitor.http.start("127.0.0.1", 0)
    workspace = build_workspace(settings, clock=lambda: clock[0], workspace=WorkspaceSettings(
        token=token, escalation_url=f"http://127.0.0.1:{escalation.http.port}",
        monitor_url=f"http://127.0.0.1:{monitor.http.port}", insecure_cookies=True))
    workspace._pool = await create_pool(settings.database_url, min_size=1, max_size=3)
    yield Stack(workspace, escalation, monitor, tag, clock)
    await monitor.http.stop()
    await monitor.pool.close()
    await escalation.http.stop()
    await escalation.pool.close()
    await workspace.pool.close()


async def raise_concern(stack: Stack, ods: str) -> ConcernRaised:
    concern = ConcernRaised(
        concern_id=uuid.uuid4(), fingerprint=f"{ods}:workspace:{uuid.uuid4().hex[:6]}",
        provider=ProviderRef(ods_code=ods, name=f"Trust {ods}", provider_type="acute",
                             quality_contact_email=f"quality.{ods.lower()}@provider.example"),
        rule="immediate_serious_risk", theme=f"falls-{uuid.uuid4().hex[:6]}",
        severity=Severity.SERIOUS, reason="a complaint reports serious harm",
        figures={"risk_score": 16}, raised_at=stack.clock[0],
        evidence=[Evidence(feedback_id=uuid.uuid4(), kind="complaint",
                           occurred_on=date(2034, 3, 1), matched="patient [NHS NUMBER] fell")])
    pool = stack.workspace.pool
    async with pool.acquire() as conn, conn.transaction():
        await stack.workspace.read_model.on_concern(conn, concern, stack.workspace.outbox(conn))
        await stack.escalation.escalation.on_concern_raised(conn, concern,
                                                            stack.escalation.outbox(conn))
    await stack.deliver()
    return concern


async def measure_concern(stack: Stack, ods: str) -> None:
    """quality-monitor's concern about a provider's measures: an SPC signal and a funnel
    outlier gathered on it, with their figures (as its concern.raised carries them)."""
    from tests.unit.test_workspace import measure_concern as figures_of

    concern = ConcernRaised(
        concern_id=uuid.uuid4(), fingerprint=f"{ods}:measure_signals:{uuid.uuid4().hex[:6]}",
        provider=ProviderRef(ods_code=ods, name=f"Trust {ods}", provider_type="acute",
                             quality_contact_email=f"quality.{ods.lower()}@provider.example"),
        rule="measure_signals", theme="complaints", severity=Severity.HIGH,
        reason="special cause variation of concern", raised_at=stack.clock[0],
        figures=figures_of(19.0)["figures"], evidence=[])  # type: ignore[arg-type]
    async with stack.workspace.pool.acquire() as conn, conn.transaction():
        await stack.workspace.read_model.on_concern(conn, concern, stack.workspace.outbox(conn))


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def test_sign_in_sessions_and_csrf(stack: Stack) -> None:
    async with stack.client() as anonymous:
        page = await anonymous.get("/concerns", headers={"accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"].startswith("/sign-in")
        assert (await anonymous.get("/concerns")).status_code == 401  # a script, not a browser
        refused = await anonymous.post("/sign-in", data={"email": person(stack.tag, "lead"),
                                                          "password": "wrong password here"})
        assert refused.status_code == 401
        assert "Enter a correct email address and password" in refused.text
    lead = await stack.sign_in("lead")
    cookie = lead.cookies.jar
    assert any(c.name == "carewatch_session" for c in cookie)
    signed = await stack.client().post("/sign-in", data={
        "email": person(stack.tag, "lead"), "password": PASSWORD})
    header = signed.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=lax" in header
    overview = await lead.get("/")
    assert overview.status_code == 200 and "<h1>Overview</h1>" in overview.text
    assert "content-security-policy" in overview.headers
    # A form without the session's CSRF token changes nothing. (A provider of its own: a
    # concern of ODS's here would put the next test's concern on its meeting's agenda.)
    concern = await raise_concern(stack, "RJ1")
    forged = await lead.post(f"/concerns/{concern.concern_id}/comments",
                             data={"comment": "forged", "csrf_token": "not-it"})
    assert forged.status_code == 403
    assert await stack.workspace.pool.fetchval(
        "SELECT count(*) FROM workspace.comments WHERE concern_id = $1", concern.concern_id) == 0
    # Signing out ends the session on the server.
    out = await lead.post("/sign-out", data={"csrf_token": csrf(overview.text)})
    assert out.status_code == 303
    assert (await lead.get("/", headers={"accept": "text/html"})).status_code == 303


async def test_a_concern_through_the_workspace(stack: Stack) -> None:
    concern = await raise_concern(stack, ODS)
    cid = concern.concern_id
    lead = await stack.sign_in("lead")
    page = await lead.get(f"/concerns/{cid}")
    assert page.status_code == 200
    assert "patient [NHS NUMBER] fell" in page.text and "Meeting booked" in page.text
    meeting_id = re.search(r'href="/meetings/([0-9a-f-]{36})"', page.text)
    assert meeting_id, page.text
    meeting = await lead.get(f"/meetings/{meeting_id.group(1)}")
    assert meeting.status_code == 200
    # Escalation refuses an outcome before the meeting starts; the page says so.
    form = {"csrf_token": csrf(meeting.text), "outcome": "Plan agreed",
            "description1": "Audit falls assessments", "owner1": "Director of Nursing",
            "due_on1": "2034-04-30"}
    early = await lead.post(f"/meetings/{meeting_id.group(1)}/outcome", data=form)
    assert early.status_code == 409 and "has not started" in early.text
    starts_at = await stack.workspace.pool.fetchval(
        "SELECT starts_at FROM workspace.meetings WHERE meeting_id = $1",
        uuid.UUID(meeting_id.group(1)))
    stack.clock[0] = starts_at + timedelta(minutes=10)
    held = await lead.post(f"/meetings/{meeting_id.group(1)}/outcome", data=form)
    assert held.status_code == 303, held.text
    page = await lead.get(f"/concerns/{cid}")
    assert "Audit falls assessments" in page.text and "Meeting outcome recorded" in page.text
    # Closing with an action still open: escalation says why.
    refused = await lead.post(f"/concerns/{cid}/close",
                              data={"csrf_token": csrf(page.text), "reason": "done"})
    assert refused.status_code == 409 and "not completed" in refused.text

    # The provider: a file that is not a PDF/PNG/JPEG is refused; a PDF completes the action.
    provider = await stack.sign_in("rat")
    page = await provider.get(f"/concerns/{cid}")
    action_id = re.search(r'action="/actions/([0-9a-f-]{36})/complete"', page.text)
    assert action_id, page.text
    bad = await provider.post(f"/actions/{action_id.group(1)}/complete",
                              data={"csrf_token": csrf(page.text), "evidence": ""},
                              files={"file": ("report.pdf", b"<script>alert(1)</script>",
                                              "application/pdf")})
    assert bad.status_code == 400 and "must be a PDF, PNG or JPEG" in bad.text
    done = await provider.post(f"/actions/{action_id.group(1)}/complete",
                               data={"csrf_token": csrf(page.text), "evidence": "Audit done"},
                               files={"file": ("../../audit.pdf", b"%PDF-1.4 audit", "x/y")})
    assert done.status_code == 303, done.text
    page = await provider.get(f"/concerns/{cid}")
    file_id = re.search(r'href="/evidence/([0-9a-f-]{36})"', page.text)
    assert file_id and "audit.pdf" in page.text
    download = await provider.get(f"/evidence/{file_id.group(1)}")
    assert download.content == b"%PDF-1.4 audit"
    assert download.headers["content-disposition"] == 'attachment; filename="audit.pdf"'
    assert download.headers["content-type"] == "application/pdf"
    reply = await provider.post(f"/concerns/{cid}/comments",
                                data={"csrf_token": csrf(page.text), "comment": "Done it."})
    assert reply.status_code == 303

    # Another provider's user: 404 for all of it; a lay member may comment but not close.
    other = await stack.sign_in("rwk")
    for path in (f"/concerns/{cid}", f"/meetings/{meeting_id.group(1)}", f"/providers/{ODS}",
                 f"/evidence/{file_id.group(1)}", f"/concerns/{uuid.uuid4()}"):
        assert (await other.get(path)).status_code == 404, path
    lay = await stack.sign_in("lay")
    page = await lay.get(f"/concerns/{cid}")
    assert "Close concern" not in page.text and "Done it." in page.text
    denied = await lay.post(f"/concerns/{cid}/close",
                            data={"csrf_token": csrf(page.text), "reason": "x"})
    assert denied.status_code == 403

    # The lead closes it; escalation's audit trail names the people, via the workspace.
    page = await lead.get(f"/concerns/{cid}")
    closed = await lead.post(f"/concerns/{cid}/close",
                             data={"csrf_token": csrf(page.text), "reason": "Evidenced"})
    assert closed.status_code == 303, closed.text
    page = await lead.get(f"/concerns/{cid}")
    assert re.search(r"Closed: Evidenced", page.text)
    actors = {r["actor"] for r in await stack.workspace.pool.fetch(
        "SELECT actor FROM escalation.audit_log WHERE concern_id = $1", cid)}
    assert {f"{person(stack.tag, 'lead')} (via workspace-{stack.tag})",
            f"{person(stack.tag, 'rat')} (via workspace-{stack.tag})"} <= actors, actors
    audited = {(r["actor"], r["action"], r["outcome"][:7]) for r in await stack.workspace.pool.fetch(
        "SELECT actor, action, outcome FROM workspace.audit_log WHERE target = $1", str(cid))}
    assert (person(stack.tag, "lead"), "close concern", "done") in audited
    assert (person(stack.tag, "lead"), "close concern", "refused") in audited
    provider_page = await lead.get(f"/providers/{ODS}")
    assert provider_page.status_code == 200 and "<svg" in provider_page.text
    await measure_concern(stack, ODS)
    provider_page = await lead.get(f"/providers/{ODS}")
    assert "special cause in 2026-10" in provider_page.text
    assert "Funnel position, FFT % negative (inpatient), 2026-10:</strong> 12.3% of 400" \
        in provider_page.text
    search = await lead.get("/concerns", params={"provider": ODS, "status": "closed"})
    assert str(cid) in search.text
    assert str(cid) not in (await lead.get("/concerns", params={"status": "open"})).text


async def test_a_second_concern_joins_its_providers_meeting(stack: Stack) -> None:
    """A provider has one remedial meeting: a second serious concern joins its agenda
    (announced by meeting.rescheduled with every concern in ``concern_ids``), and both
    concerns' pages show the meeting; the meeting's page lists both."""
    first = await raise_concern(stack, "RJ2")
    second = await raise_concern(stack, "RJ2")
    lead = await stack.sign_in("lead")
    meetings = []
    for concern in (first, second):
        page = await lead.get(f"/concerns/{concern.concern_id}")
        found = re.findall(r'href="/meetings/([0-9a-f-]{36})"', page.text)
        assert len(found) == 1, page.text
        meetings.append(found[0])
    assert meetings[0] == meetings[1]
    assert "joined the agenda of the provider&#39;s meeting" in page.text
    meeting = await lead.get(f"/meetings/{meetings[0]}")
    for concern in (first, second):
        assert f'href="/concerns/{concern.concern_id}"' in meeting.text


HEDGED = "We think dad may have been pushed by a carer; he has bruises nobody can explain."


async def possible_risk(stack: Stack, ods: str) -> uuid.UUID:
    """What quality-monitor does with a hedged complaint (a high concern marked for review,
    in its outbox); then delivered to the workspace."""
    from services.quality_monitor import review
    from services.quality_monitor import rules as monitor_rules
    from services.quality_monitor import store as monitor_store
    from tests.unit.builders import feedback

    fb = feedback(theme=f"Care home: {uuid.uuid4().hex[:6]}", description=HEDGED,
                  ods_code=ods)
    finding = monitor_rules.immediate_serious_risk(fb)
    assert finding is not None and finding.review
    async with stack.monitor.pool.acquire() as conn, conn.transaction():
        event = await monitor_store.raise_or_update(
            conn, fingerprint=monitor_rules.fingerprint(ods, finding.rule, finding.theme),
            provider=fb.provider, rule=finding.rule, theme=finding.theme,
            severity=finding.severity, reason=finding.reason, figures=finding.figures,
            evidence=[Evidence(feedback_id=fb.feedback_id, kind=fb.kind,
                               occurred_on=fb.occurred_on, matched=finding.matched)],
            at=stack.clock[0])
        assert event is not None
        await review.request(conn, event.concern_id, stack.clock[0])
        await stack.monitor.outbox(conn).add(event)
    await stack.deliver()
    return event.concern_id


async def test_the_review_queue_confirm_and_dismiss(stack: Stack) -> None:
    """Possible serious risks wait in the review queue (from their concern.raised); the
    quality team confirms one (serious) and dismisses one with a reason (resolved), through
    quality-monitor's API as themselves via the workspace."""
    confirm_id, dismiss_id = await possible_risk(stack, "RJ4"), await possible_risk(stack, "RJ4")
    lead = await stack.sign_in("lead")
    queue = await lead.get("/reviews")
    assert queue.status_code == 200
    for cid in (confirm_id, dismiss_id):
        assert f'href="/concerns/{cid}"' in queue.text
    assert f'href="/concerns/{confirm_id}"' in (await lead.get("/")).text
    page = await lead.get(f"/concerns/{dismiss_id}")
    assert "Confirm serious risk" in page.text
    blank = await lead.post(f"/reviews/{dismiss_id}/dismiss",
                            data={"csrf_token": csrf(page.text), "review_reason": ""})
    assert blank.status_code == 400 and "Enter why this is not a serious risk" in blank.text
    dismissed = await lead.post(f"/reviews/{dismiss_id}/dismiss", data={
        "csrf_token": csrf(page.text), "review_reason": "The bruises were from a fall at home"})
    assert dismissed.status_code == 303, dismissed.text
    page = await lead.get(f"/concerns/{dismiss_id}")
    assert "Resolved" in page.text and "Confirm serious risk" not in page.text
    confirmed = await lead.post(f"/reviews/{confirm_id}/confirm", data={
        "csrf_token": csrf(page.text), "review_reason": ""})
    assert confirmed.status_code == 303, confirmed.text
    again = await lead.post(f"/reviews/{confirm_id}/confirm", data={
        "csrf_token": csrf(page.text), "review_reason": ""})
    assert again.status_code == 409 and "already confirmed" in again.text
    queue = await lead.get("/reviews")
    assert str(confirm_id) not in queue.text and str(dismiss_id) not in queue.text
    decided = {r["concern_id"]: (r["status"], r["decided_by"]) for r in
               await stack.workspace.pool.fetch(
                   "SELECT concern_id, status, decided_by FROM monitor.reviews"
                   " WHERE concern_id = ANY($1)", [confirm_id, dismiss_id])}
    via = f"{person(stack.tag, 'lead')} (via workspace-{stack.tag})"
    assert decided == {confirm_id: ("confirmed", via), dismiss_id: ("dismissed", via)}
    # quality-monitor's events, when they come, agree and add their lines.
    await stack.deliver()
    page = await lead.get(f"/concerns/{confirm_id}")
    assert "Concern updated: serious (was high)" in page.text
    assert "Confirm serious risk" not in page.text
    # A lay member reads the queue but decides nothing; a provider user does not see it.
    lay = await stack.sign_in("lay")
    assert (await lay.get("/reviews")).status_code == 200
    provider = await stack.sign_in("rat")
    assert (await provider.get("/reviews")).status_code == 403
    third = await possible_risk(stack, ODS)
    page = await provider.get(f"/concerns/{third}")
    assert "Confirm serious risk" not in page.text
    refused = await provider.post(f"/reviews/{third}/confirm",
                                  data={"csrf_token": csrf(page.text)})
    assert refused.status_code == 403


async def test_moving_and_cancelling_a_meeting(stack: Stack) -> None:
    concern = await raise_concern(stack, "RJ3")
    lead = await stack.sign_in("lead")
    page = await lead.get(f"/concerns/{concern.concern_id}")
    found = re.search(r'href="/meetings/([0-9a-f-]{36})"', page.text)
    assert found, page.text
    path = f"/meetings/{found.group(1)}"
    before = await stack.workspace.pool.fetchval(
        "SELECT starts_at FROM workspace.meetings WHERE meeting_id = $1",
        uuid.UUID(found.group(1)))
    meeting = await lead.get(path)
    assert "Reschedule meeting" in meeting.text and "Cancel meeting" in meeting.text
    blank = await lead.post(f"{path}/reschedule", data={"csrf_token": csrf(meeting.text)})
    assert blank.status_code == 400 and "Enter why the meeting moves" in blank.text
    bad = await lead.post(f"{path}/reschedule", data={
        "csrf_token": csrf(meeting.text), "reschedule_reason": "x", "to": "next tuesday"})
    assert bad.status_code == 400 and "Enter the new start" in bad.text
    moved = await lead.post(f"{path}/reschedule", data={
        "csrf_token": csrf(meeting.text), "reschedule_reason": "The trust's lead is on leave"})
    assert moved.status_code == 303, moved.text
    after = await stack.workspace.pool.fetchval(
        "SELECT starts_at FROM workspace.meetings WHERE meeting_id = $1",
        uuid.UUID(found.group(1)))
    assert after > before  # the next free slot after the current one
    await stack.deliver()  # the announcement, once the coalescing window has passed
    page = await lead.get(f"/concerns/{concern.concern_id}")
    assert "Meeting rescheduled" in page.text
    meeting = await lead.get(path)
    cancelled = await lead.post(f"{path}/cancel", data={
        "csrf_token": csrf(meeting.text), "cancel_reason": "Resolved at the CQRM"})
    assert cancelled.status_code == 303, cancelled.text
    meeting = await lead.get(path)
    assert "Cancelled: cancelled by the quality team: Resolved at the CQRM" in meeting.text
    assert "Reschedule meeting" not in meeting.text
    audited = {(r["action"], r["outcome"]) for r in await stack.workspace.pool.fetch(
        "SELECT action, outcome FROM workspace.audit_log WHERE target = $1", found.group(1))}
    assert {("reschedule meeting", "done"), ("cancel meeting", "done")} <= audited
    # A lay member reads the meeting but may not move or cancel it.
    lay = await stack.sign_in("lay")
    assert (await lay.post(f"{path}/cancel", data={"csrf_token": csrf(meeting.text),
                                                   "cancel_reason": "x"})).status_code == 403


async def test_the_operator_sees_the_quarantine_feeds_and_failed_deliveries(
        settings_db: tuple[Settings, asyncpg.Pool], stack: Stack) -> None:
    """intake's quarantine and feeds and notification's failed deliveries through their
    operator APIs, as the signed-in operator via the workspace: never a quarantined body; a
    resubmission as stored goes through intake's admission again (refused again here: the
    feed is still not registered); a failed delivery sent again is pending once more."""
    from services.intake.admission import Incoming
    from services.intake.app import admissions_for
    from services.intake.app import build as build_intake
    from services.notification import store as notification_store
    from services.notification.app import build as build_notification

    settings, pool = settings_db
    intake = build_intake(settings)
    intake._pool = pool
    await intake.http.start("127.0.0.1", 0)
    notification = build_notification(settings)
    notification._pool = pool
    await notification.http.start("127.0.0.1", 0)
    ops = person(stack.tag, "ops")
    async with pool.acquire() as conn:
        await identity.add_account(conn, identity.NewAccount(ops, [identity.OPERATOR]), "tests")
        await identity.set_password(conn, ops, PASSWORD)
        token = await identity.create_token(conn, f"workspace-{stack.tag}", scopes=None, days=1,
                                            label="t", created_by="tests")
    secret = f"SECRET-{uuid.uuid4().hex[:6]}"
    refused = await admissions_for(intake).admit(Incoming(
        body=f'{{"kind": "complaint", "description": "{secret}"}}'.encode(),
        feed_user=f"feed-unknown-{stack.tag}", routing_key="complaint",
        content_type="application/json", message_id=uuid.uuid4().hex))
    assert refused.outcome == "rejected"
    async with pool.acquire() as conn, conn.transaction():
        failed = await notification_store.record(
            conn, source_event_id=uuid.uuid4(), event_type="meeting.scheduled.v1",
            channel="email", recipient="lead@icb.example.nhs.uk",
            subject=f"Remedial meeting {stack.tag}", payload={})
        await conn.execute("UPDATE notification.notifications SET status = 'failed',"
                           " attempts = 5, last_error = 'SMTP 554 refused'"
                           " WHERE notification_id = $1", failed)
    workspace = build_workspace(settings, workspace=WorkspaceSettings(
        token=token, intake_url=f"http://127.0.0.1:{intake.http.port}",
        notification_url=f"http://127.0.0.1:{notification.http.port}", insecure_cookies=True))
    workspace._pool = pool
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=workspace.http.api),
                                     base_url="http://workspace.test") as client:
            signed = await client.post("/sign-in", data={"email": ops, "password": PASSWORD})
            assert signed.headers["location"] == "/operations"
            listed = await client.get("/operations/quarantine")
            assert listed.status_code == 200, listed.text
            assert f'href="/operations/quarantine/{refused.submission_id}"' in listed.text
            page = await client.get(f"/operations/quarantine/{refused.submission_id}")
            assert page.status_code == 200 and "Resubmit as stored" in page.text
            assert secret not in page.text and secret not in listed.text
            again = await client.post(
                f"/operations/quarantine/{refused.submission_id}/resubmit",
                data={"csrf_token": csrf(page.text)})
            assert again.status_code == 200 and "Resubmitted: rejected again" in again.text
            assert f"Resubmitted by {ops} (via workspace-{stack.tag})" in again.text
            new_id = re.search(r'href="/operations/quarantine/([0-9a-f-]{36})"', again.text)
            assert new_id and new_id.group(1) != str(refused.submission_id)
            twice = await client.post(
                f"/operations/quarantine/{refused.submission_id}/resubmit",
                data={"csrf_token": csrf(page.text)})
            assert twice.status_code == 409 and "not open" in twice.text
            feeds = await client.get("/operations/feeds")
            assert feeds.status_code == 200 and "<h1>Provider feeds</h1>" in feeds.text
            deliveries = await client.get("/operations/deliveries")
            assert f"Remedial meeting {stack.tag}" in deliveries.text, deliveries.text
            assert "SMTP 554 refused" in deliveries.text
            sent = await client.post(f"/operations/deliveries/{failed}/retry",
                                     data={"csrf_token": csrf(deliveries.text)})
            assert sent.status_code == 303, sent.text
            assert await pool.fetchval("SELECT status FROM notification.notifications"
                                       " WHERE notification_id = $1", failed) == "pending"
            twice = await client.post(f"/operations/deliveries/{failed}/retry",
                                      data={"csrf_token": csrf(deliveries.text)})
            assert twice.status_code == 409 and "not failed" in twice.text
        # Only operators: the quality lead is refused, at the workspace and at intake.
        lead = await stack.sign_in("lead")
        assert (await lead.get("/operations/quarantine")).status_code == 403
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{intake.http.port}") as raw:
            assert (await raw.get("/v1/quarantine")).status_code == 401
    finally:
        await notification.http.stop()
        await intake.http.stop()


async def test_carewatch_run_gives_the_workspace_a_token_of_its_service_account(
        settings_db: tuple[Settings, asyncpg.Pool]) -> None:
    from services.workspace.cli import SERVICE_ACCOUNT, run_token

    _, pool = settings_db
    async with pool.acquire() as conn:
        first = await run_token(conn, "tests")
        second = await run_token(conn, "tests")  # the account exists: a new token only
        caller = await identity.identify(conn, second, on_behalf_of=None)
    assert first != second and caller.account == SERVICE_ACCOUNT and caller.kind == "service"


class TinyOidcProvider:
    """An OpenID Connect provider just big enough for the code flow: discovery, token (an ID
    token signed with its own RSA key, for the nonce it was last asked for) and JWKS."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs

        from joserfc import jwt
        from joserfc.jwk import RSAKey

        self.key = RSAKey.generate_key(2048, parameters={"kid": "tiny"})
        self.nonce = ""
        self.subject = "entra-oid-123"
        self.email = ""
        self.token_requests: list[dict[str, list[str]]] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    self._json({"issuer": provider.issuer,
                                "authorization_endpoint": f"{provider.issuer}/authorize",
                                "token_endpoint": f"{provider.issuer}/token",
                                "jwks_uri": f"{provider.issuer}/jwks"})
                else:
                    self._json({"keys": [provider.key.as_dict(private=False)]})

            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers["content-length"])).decode())
                provider.token_requests.append(form)
                now = int(datetime.now(UTC).timestamp())
                claims = {"iss": provider.issuer, "aud": "carewatch-workspace",
                          "sub": provider.subject, "email": provider.email,
                          "nonce": provider.nonce, "iat": now, "exp": now + 300}
                self._json({"access_token": "at", "token_type": "Bearer", "expires_in": 300,
                            "id_token": jwt.encode({"alg": "RS256", "kid": "tiny"}, claims,
                                                   provider.key)})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_openid_connect_sign_in_against_a_local_provider(
        settings_db: tuple[Settings, asyncpg.Pool], stack: Stack) -> None:
    from urllib.parse import parse_qs, urlsplit

    settings, pool = settings_db
    provider = TinyOidcProvider()
    provider.email = person(stack.tag, "lead")
    # On the real clock, like the provider's tokens.
    workspace = build_workspace(settings, workspace=WorkspaceSettings(
        oidc_issuer=provider.issuer, oidc_client_id="carewatch-workspace",
        oidc_client_secret="s3cret", public_url="http://workspace.test", insecure_cookies=True))
    workspace._pool = pool
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=workspace.http.api),
                                     base_url="http://workspace.test") as client:
            sign_in = await client.get("/sign-in")
            assert "/oidc/login" in sign_in.text
            start = await client.get("/oidc/login", params={"next": "/concerns"})
            assert start.status_code == 303
            asked = parse_qs(urlsplit(start.headers["location"]).query)
            assert asked["client_id"] == ["carewatch-workspace"]
            assert asked["redirect_uri"] == ["http://workspace.test/oidc/callback"]
            # The provider signs the person in and sends the browser back with a code.
            provider.nonce = asked["nonce"][0]
            back = await client.get("/oidc/callback",
                                    params={"code": "code-1", "state": asked["state"][0]})
            assert back.status_code == 303 and back.headers["location"] == "/concerns", back.text
            assert provider.token_requests[0]["code"] == ["code-1"]
            page = await client.get("/concerns")
            assert page.status_code == 200 and "<h1>Concerns</h1>" in page.text
            linked = await pool.fetchrow("SELECT oidc_issuer, oidc_subject FROM"
                                         " identity.accounts WHERE name = $1", provider.email)
            assert tuple(linked) == (provider.issuer, provider.subject)
            # A replayed state, and an ID token for another nonce, are refused.
            again = await client.get("/oidc/callback",
                                     params={"code": "code-1", "state": asked["state"][0]})
            assert again.status_code == 401
            start = await client.get("/oidc/login")
            asked = parse_qs(urlsplit(start.headers["location"]).query)
            provider.nonce = "someone-elses"
            refused = await client.get("/oidc/callback",
                                       params={"code": "code-2", "state": asked["state"][0]})
            assert refused.status_code == 401 and "refused" in refused.text
            # An identity with no carewatch account gets none.
            provider.nonce, provider.subject = asked["nonce"][0], "stranger"
            provider.email = "stranger@elsewhere.example"
            start = await client.get("/oidc/login")
            asked = parse_qs(urlsplit(start.headers["location"]).query)
            provider.nonce = asked["nonce"][0]
            nobody = await client.get("/oidc/callback",
                                      params={"code": "code-3", "state": asked["state"][0]})
            assert nobody.status_code == 401 and "no carewatch account" in nobody.text
    finally:
        provider.close()


async def _a_report(pool: asyncpg.Pool, kind: str, scope: str, period: str, title: str,
                    html: str) -> uuid.UUID:
    """A kept report as quality-monitor stores it (its own tests render real ones: here the
    workspace only lists them and passes them on)."""
    report_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO monitor.reports (report_id, kind, scope, period, version, title, digest,"
        " generated_at, generated_by, reason, document, pdf, html, csv_zip, xlsx)"
        " VALUES ($1, $2, $3, $4, 1, $5, $6, now(), 'tests', 'tests', '{}', $7, $8, $9, $10)",
        report_id, kind, scope, period, title, uuid.uuid4().hex, b"%PDF-1.7 test", html,
        b"PK zip", b"PK xlsx")
    return report_id


async def test_reports_are_listed_and_passed_on_to_whom_may_read_them(stack: Stack) -> None:
    period = f"20{uuid.uuid4().int % 90 + 10}-0{uuid.uuid4().int % 9 + 1}"
    own = await _a_report(stack.monitor.pool, "cqrm_pack", ODS, period,
                          f"CQRM pack {ODS} {period}", "<html><body><h1>Pack for RAT</h1>")
    other = await _a_report(stack.monitor.pool, "cqrm_pack", OTHER, period,
                            f"CQRM pack {OTHER} {period}", "<html><body><h1>Pack for RWK</h1>")
    lead = await stack.sign_in("lead")
    listing = await lead.get("/reports", params={"kind": "cqrm_pack"})
    assert listing.status_code == 200, listing.text
    for rid in (own, other):
        assert f'href="/reports/{rid}/html"' in listing.text
    html = await lead.get(f"/reports/{own}/html")
    assert html.status_code == 200 and "Pack for RAT" in html.text
    policy = html.headers.get_list("content-security-policy")
    assert policy == ["default-src 'none'; img-src data:; style-src 'unsafe-inline';"
                      " frame-ancestors 'none'"], policy
    pdf = await lead.get(f"/reports/{own}/pdf")
    assert pdf.content.startswith(b"%PDF") and "attachment" in pdf.headers["content-disposition"]
    assert (await lead.get(f"/reports/{uuid.uuid4()}/html")).status_code == 404
    assert (await lead.get(f"/reports/{own}/exe")).status_code == 404
    # A provider user sees its own provider's reports only, id guessing included.
    provider = await stack.sign_in("rat")
    listing = await provider.get("/reports")
    assert str(own) in listing.text and str(other) not in listing.text
    assert (await provider.get(f"/reports/{other}/html")).status_code == 404
    assert (await provider.get(f"/reports/{own}/html")).status_code == 200
    # Without a session: no report.
    anonymous = await stack.client().get(f"/reports/{own}/pdf")
    assert anonymous.status_code == 401


async def test_a_concern_with_much_evidence_shows_it_a_page_at_a_time(stack: Stack) -> None:
    concern = await raise_concern(stack, ODS)
    per_page = stack.workspace.settings.evidence_listed
    total = 3 * per_page + 5
    async with stack.workspace.pool.acquire() as conn, conn.transaction():
        for n in range(2, total + 1):  # the raise brought the first
            update = ConcernUpdated(
                **(concern.model_dump() | {"evidence": [Evidence(
                    feedback_id=uuid.uuid4(), kind="complaint", occurred_on=date(2034, 3, 1),
                    matched=f"item number {n}.")]}),
                evidence_count=n, previous_severity=concern.severity)
            await stack.workspace.read_model.on_concern(conn, update,
                                                        stack.workspace.outbox(conn))
    lead = await stack.sign_in("lead")
    page = await lead.get(f"/concerns/{concern.concern_id}")
    assert page.status_code == 200
    shown = [int(n) for n in re.findall(r"item number (\d+)\.", page.text)]
    assert shown == list(range(total, total - per_page, -1))  # the latest, latest first
    assert f"and {total - per_page} more (total {total})" in page.text
    assert "?evidence_page=2" in page.text
    last = await lead.get(f"/concerns/{concern.concern_id}?evidence_page=4")
    assert [int(n) for n in re.findall(r"item number (\d+)\.", last.text)] == [5, 4, 3, 2]
    assert "patient [NHS NUMBER] fell" in last.text  # the first, from the raise
    assert "?evidence_page=3" in last.text and "?evidence_page=5" not in last.text
    for bad in ("5", "0", "x"):
        refused = await lead.get(f"/concerns/{concern.concern_id}?evidence_page={bad}")
        assert refused.status_code == 400
        assert "The page of evidence must be a whole number from 1 to 4" in refused.text
