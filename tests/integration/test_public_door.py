"""The public's door (issue 19) through the real services: the workspace serves the public
feedback page over HTTP and posts each form to intake's real HTTP API as the public's door
feed; intake admits it (validated, redacted, contact details withheld, de-duplicated) and the
events go through the real RabbitMQ to quality-monitor (a serious harm is a serious concern),
escalation (its meeting), notification (its e-mails, to a real SMTP server) and back to the
workspace's read model (the concern the quality team sees). One stack of this module's own:
its own database and broker namespace.

tests/browser/test_public_door.py does the same in Chromium, with axe-core.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from services.catalogue import builder
from services.intake import store as intake_store
from services.intake.credentials import api_key_hash, new_api_key
from services.workspace.app import build as build_workspace
from services.workspace.config import WorkspaceSettings
from shared import identity
from shared.db import create_pool
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.conftest import free_port
from tests.helpers import Inbox, bearer, calendar_part, eventually, smtp_server, token_for
from tools.stacks import database_url, deprovision, provision

pytestmark = pytest.mark.integration
T = TypeVar("T")
PUBLIC_FEED = "public-door"
EMAIL, PHONE, NAME = "sam.carer.7731@example.org", "07700 900 417", "Samira Okonkwo-Test"
HARM = ("My father fell on the ward and broke his hip and nobody came to help him for an"
        " hour. His NHS number is 943 476 5919.")


@dataclass
class PublicStack:
    settings: Settings
    runtimes: dict[str, ServiceRuntime]
    pool: asyncpg.Pool
    inbox: Inbox
    feed_key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.runtimes['workspace'].http.port}"

    @property
    def intake_url(self) -> str:
        return f"http://127.0.0.1:{self.runtimes['intake'].http.port}"

    async def wait(self, probe: Callable[[], Awaitable[T | None]], what: str) -> T:
        """``eventually``, with this stack's database writes as the sign of progress."""
        async def writes() -> object:
            return await self.pool.fetchval(
                "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database"
                " WHERE datname = current_database()")
        return await eventually(probe, what=what, progress=writes)


@contextlib.asynccontextmanager
async def public_stack(server_urls: Any, **workspace: Any) -> AsyncIterator[PublicStack]:
    """intake, quality-monitor, escalation, notification and the workspace, each serving
    HTTP, on a database and namespace of their own; the public's door feed registered with
    an API key the workspace holds."""
    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        amqp_url=server_urls.amqp,
        database_url=database_url(server_urls.postgres_admin, f"carewatch_test_{tag}"),
        namespace=f"cwtest_{tag}", broker_users={"*": "guest"}, smtp_port=free_port(),
        inbound_smtp_port=0, delivery_limit=3, outbox_poll_interval=0.5, graceful_timeout=5,
        http_port=0)
    await provision(server_urls.postgres_admin, settings)
    pool = await create_pool(settings.database_url, min_size=1, max_size=3)
    key = new_api_key()
    async with pool.acquire() as conn:
        await intake_store.register_feed(conn, PUBLIC_FEED, [], "the public's door",
                                         public_door=True)
        await intake_store.set_api_key(conn, PUBLIC_FEED, api_key_hash(key))
    # The workspace's service account: it reads contact details from intake for a person.
    token = await token_for(pool, "workspace", identity.OPERATOR, kind="service")
    controller, inbox = smtp_server(settings.smtp_port)
    runtimes: dict[str, ServiceRuntime] = {
        name: builder(name)(settings)
        for name in ("intake", "quality_monitor", "escalation", "notification")}
    try:
        for runtime in runtimes.values():
            await runtime.start()
        runtimes["workspace"] = build_workspace(settings, workspace=WorkspaceSettings(
            intake_url=f"http://127.0.0.1:{runtimes['intake'].http.port}",
            public_feed_key=key, insecure_cookies=True, form_secret="tests " + tag, token=token,
            **workspace))
        await runtimes["workspace"].start()
        yield PublicStack(settings, runtimes, pool, inbox, key)
    finally:
        for runtime in reversed(list(runtimes.values())):
            await runtime.stop()
        controller.stop()
        await pool.close()
        await deprovision(server_urls.postgres_admin, settings)


@pytest.fixture(scope="module")
async def stack(server_urls: Any) -> AsyncIterator[PublicStack]:
    async with public_stack(server_urls, public_client_burst=100) as s:
        yield s


def form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found, "no form token on the page"
    return found.group(1)


ANSWERS = {"provider": "RJ2", "purpose": "concern", "relationship": "carer",
           "subject": "care", "description": HARM, "share_feedback": "yes",
           "contact_by": "email", "email": EMAIL, "name": NAME, "share_identity": "no",
           "needs": "large_print", "happened-day": "", "happened-month": "",
           "happened-year": "", "website": ""}


async def send(client: httpx.AsyncClient, answers: dict[str, str], page: str = "/feedback",
               token: str | None = None) -> tuple[httpx.Response, str]:
    """Open the form, fill it in and send it, as a browser would; (response, token)."""
    if token is None:
        opened = await client.get(page)
        assert opened.status_code == 200, opened.text
        token = form_token(opened.text)
    response = await client.post("/feedback", data={"form_token": token, **answers})
    return response, token


def mail_text(message: Any) -> str:
    """Every part of an e-mail, decoded."""
    return "\n".join(str(part.get_payload(decode=True) or b"", "utf-8", "replace")
                     for part in message.walk() if not part.is_multipart())


def reference_of(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["ref"][0]


async def rows_holding(pool: asyncpg.Pool, needle: str,
                       skip: tuple[str, ...] = ("intake.public_contacts", "intake.quarantine")
                       ) -> list[str]:
    """The tables (outside ``skip``) with a row whose text holds ``needle``."""
    tables = await pool.fetch(
        "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables"
        " WHERE table_schema IN ('intake', 'monitor', 'escalation', 'notification',"
        " 'workspace') AND table_type = 'BASE TABLE'")
    found = []
    for row in tables:
        if row["t"] in skip:
            continue
        schema, table = row["t"].split(".")
        if await pool.fetchval(f'SELECT count(*) FROM "{schema}"."{table}" t'
                               " WHERE t::text ILIKE '%' || $1 || '%'", needle):
            found.append(row["t"])
    return found


async def test_a_serious_harm_told_by_the_public_becomes_a_concern_and_a_meeting(
        stack: PublicStack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response, _ = await send(client, ANSWERS)
        reference = reference_of(response)
        sent = await client.get(response.headers["location"])
    assert sent.status_code == 200 and reference in sent.text
    assert re.fullmatch(r"CW-[A-Z]{4}-[A-Z]{4}", reference)

    pool = stack.pool
    fb = await stack.wait(lambda: pool.fetchrow(
        "SELECT * FROM intake.feedback WHERE provider_record_id = $1", reference),
        what="feedback accepted")
    assert (fb["kind"], fb["ods_code"], fb["feed_user"]) == ("public_feedback", "RJ2",
                                                             PUBLIC_FEED)
    content = fb["content"]
    assert "contact" not in content and content["contact_details_held"] is True
    assert (content["contact_by"], content["consent_share_feedback"],
            content["consent_share_identity"], content["communication_needs"]) == (
        "email", True, False, ["large_print"])
    assert "943 476 5919" not in content["description"]
    assert "[NHS NUMBER]" in content["description"]
    held = await pool.fetchrow("SELECT * FROM intake.public_contacts WHERE feedback_id = $1",
                               fb["feedback_id"])
    assert held["contact"] == {"email": EMAIL, "name": NAME} and held["reference"] == reference

    concern = await stack.wait(lambda: pool.fetchrow(
        "SELECT * FROM monitor.concerns WHERE evidence @> $1::jsonb",
        [{"feedback_id": str(fb["feedback_id"])}]), what="concern raised")
    assert (concern["severity"], concern["rule"]) == ("serious", "immediate_serious_risk")
    assert concern["theme"] == "Patient care"
    assert "broke his hip" in concern["evidence"][0]["matched"]
    assert concern["evidence"][0]["kind"] == "public_feedback"
    meeting = await stack.wait(lambda: pool.fetchrow(
        "SELECT * FROM escalation.meetings WHERE concern_id = $1", concern["concern_id"]),
        what="meeting booked")
    seen = await stack.wait(lambda: pool.fetchrow(
        "SELECT * FROM workspace.concerns WHERE concern_id = $1 AND severity = 'serious'",
        concern["concern_id"]), what="the concern in the workspace's read model")
    assert seen["ods_code"] == "RJ2"
    async def invitations() -> list[Any]:
        return [m for m in stack.inbox.to(stack.settings.quality_team_email)
                if any(p.get_content_type() == "text/calendar" for p in m.walk())
                and str(meeting["meeting_id"]).encode() in calendar_part(m)]

    mails = await stack.wait(invitations, what="the meeting's invitation to the quality team")
    # The contact details never leave intake: no other table, no event, no e-mail holds them.
    for value in (EMAIL, NAME, "943 476 5919"):
        assert await rows_holding(pool, value) == [], value
        assert all(value not in mail_text(m) for _, m in stack.inbox.messages), value
    assert mails
    # Nothing was dead-lettered on the way.
    for name, runtime in stack.runtimes.items():
        depths = await runtime.operations.dead_letter_depths()
        assert not any(depths.values()), (name, depths)


async def test_the_same_form_sent_twice_is_one_feedback_with_one_reference(
        stack: PublicStack) -> None:
    answers = {**ANSWERS, "provider": "RV5", "purpose": "feedback", "contact_by": "none",
               "description": "The appointment letters were confusing."}
    async with httpx.AsyncClient(base_url=stack.url) as client:
        first, token = await send(client, answers)
        again, _ = await send(client, answers, token=token)  # the back button, then send
    assert reference_of(first) == reference_of(again)
    rows = await stack.pool.fetch(
        "SELECT duplicates FROM intake.feedback WHERE provider_record_id = $1",
        reference_of(first))
    assert [r["duplicates"] for r in rows] == [1]
    assert not await stack.pool.fetchval(
        "SELECT count(*) FROM intake.public_contacts WHERE reference = $1", reference_of(first))


async def test_the_easy_read_form_sends_the_same_kind(stack: PublicStack) -> None:
    answers = {k: v for k, v in ANSWERS.items() if not k.startswith(("happened", "share_id"))}
    answers.update(provider="RP4", version="easy-read", contact_by="phone", phone=PHONE,
                   email="", description="The staff were kind to my son.",
                   purpose="compliment", subject="staff")
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response, _ = await send(client, answers, page="/feedback/easy-read")
        reference = reference_of(response)
        assert "version=easy-read" in response.headers["location"]
        sent = await client.get(response.headers["location"])
    assert "Your number is" in sent.text and reference in sent.text
    held = await stack.wait(lambda: stack.pool.fetchrow(
        "SELECT c.contact, f.content FROM intake.public_contacts c JOIN intake.feedback f"
        " USING (feedback_id) WHERE c.reference = $1", reference), what="accepted")
    assert held["contact"] == {"phone": PHONE, "name": NAME}
    assert held["content"]["purpose"] == "compliment"


async def test_abuse_is_refused_and_nothing_is_sent(stack: PublicStack) -> None:
    before = await stack.pool.fetchval("SELECT count(*) FROM intake.receipts")
    answers = {**ANSWERS, "provider": "RP6"}
    async with httpx.AsyncClient(base_url=stack.url) as client:
        # A robot fills the honeypot: it is shown the confirmation, and nothing is sent.
        robot, _ = await send(client, {**answers, "website": "http://spam.example"})
        assert robot.status_code == 303
        # No token, a forged one, or the token of another browser (its cookie): 403, the
        # answers shown again to send, nothing sent.
        for token in ("", "1.abc.def"):
            refused = await client.post("/feedback", data={"form_token": token, **answers})
            assert refused.status_code == 403 and "expired" in refused.text
            assert f'value="{EMAIL}"' in refused.text
        opened = await client.get("/feedback")
    async with httpx.AsyncClient(base_url=stack.url) as other:  # another browser, no cookie
        stolen = await other.post("/feedback", data={"form_token": form_token(opened.text),
                                                     **answers})
        assert stolen.status_code == 403
        # Too big, or not a form post.
        huge = await other.post("/feedback", content=b"description=" + b"x" * 70_000,
                                headers={"content-type": "application/x-www-form-urlencoded"})
        assert huge.status_code == 413
        as_json = await other.post("/feedback", json=answers)
        assert as_json.status_code == 415
    # Invalid answers are said at their questions (nothing sent).
    async with httpx.AsyncClient(base_url=stack.url) as client:
        invalid, _ = await send(client, {**answers, "contact_by": "email", "email": "sam"})
        assert invalid.status_code == 400 and 'href="#email"' in invalid.text
    assert await stack.pool.fetchval("SELECT count(*) FROM intake.receipts") == before
    audit = await stack.pool.fetch("SELECT outcome FROM workspace.audit_log"
                                   " WHERE actor = 'public' AND outcome LIKE 'refused%'")
    assert audit, "the honeypot's refusal is audited"


async def test_a_client_over_its_limit_is_refused_with_retry_after(server_urls: Any) -> None:
    async with public_stack(server_urls, public_client_burst=2,
                            public_client_per_hour=1) as s, \
            httpx.AsyncClient(base_url=s.url) as client:
        answers = {**ANSWERS, "provider": "RAL", "contact_by": "none",
                   "description": "The ward was clean."}
        statuses = [(await send(client, answers))[0].status_code for _ in range(3)]
        assert statuses == [303, 303, 429]
        limited, _ = await send(client, answers)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 60
        assert await s.pool.fetchval("SELECT count(*) FROM intake.feedback") == 2


async def test_with_intake_down_nothing_is_taken_and_the_answers_wait_to_be_sent_again(
        server_urls: Any) -> None:
    """Intake stops between opening the form and sending it: the person is told in plain words
    that nothing was sent, their answers stay on the page (the workspace keeps none of them),
    and sent again once intake is back they arrive once, under the form's one reference."""
    answers = {**ANSWERS, "provider": "RJ2", "contact_by": "email",
               "description": "The discharge letter never reached the GP."}
    async with public_stack(server_urls) as s, httpx.AsyncClient(base_url=s.url) as client:
        opened = await client.get("/feedback")
        assert opened.status_code == 200
        intake = s.runtimes["intake"]
        port = intake.http.port
        await intake.stop()

        refused, token = await send(client, answers, token=form_token(opened.text))
        assert refused.status_code == 503, re.findall(r"error-summary.{0,600}", refused.text, re.S)
        assert refused.headers["retry-after"] == "300"
        assert "has not been sent yet" in refused.text and "call 999" in refused.text
        assert answers["description"] in refused.text and EMAIL in refused.text
        assert form_token(refused.text) == token  # the same form, so the same reference
        assert await s.pool.fetchval("SELECT count(*) FROM intake.feedback") == 0
        for value in (EMAIL, NAME, "discharge letter never reached"):
            assert await rows_holding(s.pool, value) == [], value

        s.runtimes["intake"] = builder("intake")(s.settings.model_copy(
            update={"http_port": port}))
        await s.runtimes["intake"].start()
        again, _ = await send(client, answers, token=token)
        reference = reference_of(again)
        twice, _ = await send(client, answers, token=token)  # sent again: one feedback
        assert reference_of(twice) == reference
        rows = await s.pool.fetch("SELECT provider_record_id FROM intake.feedback")
        assert [r["provider_record_id"] for r in rows] == [reference]


async def test_only_the_public_door_speaks_for_the_public(stack: PublicStack) -> None:
    """A provider's feed cannot submit public feedback; the door submits nothing else; the
    door's key reads the providers, a provider feed's does not."""
    provider_key = new_api_key()
    async with stack.pool.acquire() as conn:
        await intake_store.register_feed(conn, "feed-rj1", ["RJ1"], "a trust")
        await intake_store.set_api_key(conn, "feed-rj1", api_key_hash(provider_key))
    body = {"kind": "public_feedback", "ods_code": "RJ1", "record_id": "CW-BBBB-CCCC",
            "received_on": "2026-11-20", "purpose": "feedback", "relationship": "patient",
            "subject_area": "Other", "description": "Posing as the public.",
            "consent_share_feedback": True, "contact_by": "none"}
    complaint = {"kind": "complaint", "ods_code": "RJ1", "record_id": "C-1",
                 "received_on": "2026-11-20", "subject_area": "Other", "description": "x"}
    async with httpx.AsyncClient(base_url=stack.intake_url) as client:
        posed = await client.post("/v1/submissions", json=body, headers=bearer(provider_key))
        assert posed.status_code == 403 and posed.json()["reasons"][0]["loc"] == "kind"
        other = await client.post("/v1/submissions", json=complaint,
                                  headers=bearer(stack.feed_key))
        assert other.status_code == 403
        listed = await client.get("/v1/public/providers", headers=bearer(stack.feed_key))
        assert listed.status_code == 200 and {"ods_code": "RJ1", "name": "Guy's and St"
                                              " Thomas' NHS Foundation Trust",
                                              "provider_type": "acute"} in listed.json()
        assert (await client.get("/v1/public/providers",
                                 headers=bearer(provider_key))).status_code == 403


async def test_only_the_quality_team_reads_contact_details_and_each_read_is_kept(
        stack: PublicStack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response, _ = await send(client, {**ANSWERS, "provider": "RKE", "subject": "waiting",
                                           "description": "A long wait in A&E."})
    reference = reference_of(response)
    await stack.wait(lambda: stack.pool.fetchrow(
        "SELECT 1 FROM intake.public_contacts WHERE reference = $1", reference),
        what="accepted")
    team = await token_for(stack.pool, "team@icb.example", identity.QUALITY_TEAM)
    lay = await token_for(stack.pool, "lay@icb.example", identity.LAY_MEMBER)
    trust = await token_for(stack.pool, "quality@rke.example", identity.PROVIDER_USER,
                            ods_codes=("RKE",))
    async with httpx.AsyncClient(base_url=stack.intake_url) as client:
        read = await client.get(f"/v1/public-feedback/{reference}", headers=bearer(team))
        assert read.status_code == 200, read.text
        [item] = read.json()["items"]
        assert item["contact"] == {"email": EMAIL, "name": NAME}
        assert (item["ods_code"], item["contact_by"]) == ("RKE", "email")
        for token in (lay, trust):
            refused = await client.get(f"/v1/public-feedback/{reference}", headers=bearer(token))
            assert refused.status_code == 403
        assert (await client.get(f"/v1/public-feedback/{reference}")).status_code == 401
        missing = await client.get("/v1/public-feedback/CW-XXXX-XXXX", headers=bearer(team))
        assert missing.status_code == 404
    reads = await stack.pool.fetch("SELECT actor FROM intake.contact_reads WHERE reference = $1",
                                   reference)
    assert [r["actor"] for r in reads] == ["team@icb.example"]
