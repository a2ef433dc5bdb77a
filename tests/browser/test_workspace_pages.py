"""Every page of the workspace in Debian's Chromium with axe-core (0 WCAG 2.2 A/AA
violations), without the broker: the read model is fed as in tests/integration/
test_workspace_http.py (escalation's outbox delivered to the workspace's handlers), the
workspace and escalation serve real HTTP. Screenshots go to var/screenshots/pages-*.png.
(test_workspace.py runs the same pages with the whole stack, the broker included.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared import identity
from shared.events import MeetingReplied
from tests.browser.test_workspace import ARGS, check_page, chromium_or_skip
from tests.integration.test_workspace_http import (  # noqa: F401  (fixtures)
    PASSWORD,
    Stack,
    _a_report,
    measure_concern,
    person,
    possible_risk,
    raise_concern,
    settings_db,
    stack,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def served(stack: Stack) -> AsyncIterator[str]:  # noqa: F811
    chromium_or_skip()
    await stack.workspace.http.start("127.0.0.1", 0)
    yield f"http://127.0.0.1:{stack.workspace.http.port}"
    await stack.workspace.http.stop()


@pytest.fixture(scope="module")
async def browser(served: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        yield launched
        await launched.close()


async def signed_in(browser: Any, url: str, email: str) -> Any:
    context = await browser.new_context(base_url=url, bypass_csp=True,
                                        viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    await page.goto("/sign-in")
    await page.fill("#email", email)
    await page.fill("#password", PASSWORD)
    await page.click("button:has-text('Sign in')")
    await page.wait_for_load_state()
    assert "/sign-in" not in page.url
    return page


async def test_every_page_passes_axe(browser: Any, served: str, stack: Stack) -> None:  # noqa: F811
    concern = await raise_concern(stack, "RAT")
    lead = await signed_in(browser, served, person(stack.tag, "lead"))
    await check_page(lead, "pages-overview")
    # A new serious concern shows on the open overview without a reload (the page's script
    # refreshes the live region).
    fresh = await raise_concern(stack, "RAT")
    await lead.locator(f"#open-concerns a[href='/concerns/{fresh.concern_id}']").wait_for(
        timeout=60_000)
    await lead.goto(f"/concerns/{concern.concern_id}")
    await check_page(lead, "pages-concern")
    # Two attendees reply to the invitation (notification's meeting.reply.v1).
    meeting = await stack.workspace.pool.fetchrow(
        "SELECT meeting_id, attendees, sequence FROM workspace.meetings m JOIN"
        " workspace.meeting_concerns l USING (meeting_id) WHERE l.concern_id = $1",
        concern.concern_id)
    for attendee, partstat in zip(meeting["attendees"][1:3], ("accepted", "declined"),
                                  strict=True):
        async with stack.workspace.pool.acquire() as conn:
            await stack.workspace.read_model.on_reply(conn, MeetingReplied(
                meeting_id=meeting["meeting_id"], attendee=attendee["email"],
                partstat=partstat, sequence=meeting["sequence"],  # type: ignore[arg-type]
                received_at=stack.clock[0]), stack.workspace.outbox(conn))
    await lead.click("a[href^='/meetings/']")
    assert await lead.locator("#attendees + p").inner_text() != ""
    assert await lead.locator("td strong.nhsuk-tag", has_text="Accepted").count() == 1
    assert await lead.locator("td strong.nhsuk-tag", has_text="Declined").count() == 1
    await check_page(lead, "pages-meeting")
    await lead.goto("/")
    await check_page(lead, "pages-overview-replies")
    await lead.goto("/concerns?severity=serious&status=open")
    await check_page(lead, "pages-concerns-search")
    await measure_concern(stack, "RAT")
    await lead.goto("/providers/RAT")
    assert await lead.locator("svg title", has_text="Complaints per month").count() == 1
    await check_page(lead, "pages-provider")
    review = await possible_risk(stack, "RAT")
    await lead.goto("/reviews")
    await check_page(lead, "pages-reviews")
    await lead.goto(f"/concerns/{review}")
    await lead.click("button:has-text('Dismiss')")  # no reason: the page says what is wrong
    assert "Enter why this is not a serious risk" in await lead.inner_text(".nhsuk-error-summary")
    await check_page(lead, "pages-review-refused")
    await _a_report(stack.monitor.pool, "cqrm_pack", "RAT", "2026-10", "CQRM pack RAT 2026-10",
                    "<html><body><h1>Pack</h1></body></html>")
    await lead.goto("/reports")
    await check_page(lead, "pages-reports")
    # The operator's dead letters (no broker namespace here: each service says so).
    ops = person(stack.tag, "ops-pages")
    async with stack.workspace.pool.acquire() as conn:
        await identity.add_account(conn, identity.NewAccount(ops, [identity.OPERATOR]), "tests")
        await identity.set_password(conn, ops, PASSWORD)
    operator = await signed_in(browser, served, ops)
    await operator.goto("/operations/dead-letters")
    assert await operator.inner_text("h1") == "Dead letters"
    await check_page(operator, "pages-dead-letters")
    await operator.context.close()
    provider = await signed_in(browser, served, person(stack.tag, "rat"))
    await provider.goto(f"/concerns/{concern.concern_id}")
    await check_page(provider, "pages-concern-provider")
    other = await signed_in(browser, served, person(stack.tag, "rwk"))
    response = await other.goto(f"/concerns/{concern.concern_id}")
    assert response is not None and response.status == 404
    await check_page(other, "pages-not-found")
    await other.context.close()
    await provider.context.close()
    await lead.context.close()
