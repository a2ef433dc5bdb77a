"""The public's door (issue 19) in a real browser (Debian's Chromium, driven by Playwright)
against the real services (tests/integration/test_public_door.py's stack: RabbitMQ,
PostgreSQL, SMTP and the five services' HTTP servers, on a database and namespace of its own).

A member of the public fills in the feedback page (no sign-in) describing a serious harm and
gets an acknowledgement reference; the quality lead, signed in to the workspace, finds the
serious concern it raised. The easy read version is sent too. axe-core runs in the form (empty,
with errors), the easy read page and both confirmations: 0 WCAG 2.2 A/AA violations.
Screenshots in var/screenshots/public-*.png.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared import identity
from tests.browser.test_workspace import ARGS, CHROMIUM, check_page, chromium_or_skip
from tests.helpers import eventually
from tests.integration.test_public_door import HARM, PublicStack, public_stack

pytestmark = pytest.mark.e2e
LEAD, PASSWORD = "lead.public@icb.example.nhs.uk", "a long enough password"
EMAIL = "pat.public.5512@example.org"


@pytest.fixture(scope="module")
async def stack(server_urls: Any) -> AsyncIterator[PublicStack]:
    chromium_or_skip()
    async with public_stack(server_urls) as s:
        async with s.pool.acquire() as conn:
            await identity.add_account(conn, identity.NewAccount(
                LEAD, [identity.QUALITY_LEAD], display_name="Quality lead"), "tests")
            await identity.set_password(conn, LEAD, PASSWORD)
        yield s


@pytest.fixture(scope="module")
async def browser(stack: PublicStack) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        await launched.close()


async def new_page(browser: Any, stack: PublicStack) -> Any:
    # bypass_csp: axe-core is injected as an inline script, which the CSP refuses.
    context = await browser.new_context(base_url=stack.url, bypass_csp=True,
                                        viewport={"width": 1200, "height": 900})
    return await context.new_page()


async def test_the_public_tell_of_a_serious_harm_and_the_quality_lead_finds_it(
        browser: Any, stack: PublicStack) -> None:
    page = await new_page(browser, stack)
    await page.goto("/feedback")
    assert await page.inner_text("h1") == "Give feedback or ask us to look at a complaint"
    await check_page(page, "public-form")

    # Sent empty: every question says what is missing, and the summary links to it.
    await page.click("button:has-text('Send feedback')")
    await page.wait_for_load_state()
    assert (await page.title()).startswith("Error:")
    summary = await page.inner_text(".nhsuk-error-summary")
    for message in ("Select the service your feedback is about", "Tell us what happened",
                    "Select if and how we should contact you"):
        assert message in summary
    await check_page(page, "public-form-errors")

    await page.select_option("#provider", "RJ2")
    await page.check("label:has-text('Tell us about a worry or concern')")
    await page.check("label:has-text('I look after the patient')")
    await page.check("label:has-text('Being looked after')")
    await page.fill("#description", HARM)
    await page.check("fieldset:has-text('Can we share what you wrote') label:has-text('Yes')")
    await page.check("label:has-text('By email')")
    await page.fill("#email", EMAIL)
    await page.click("button:has-text('Send feedback')")
    await page.wait_for_url(re.compile(r"/feedback/sent\?"))
    reference = (await page.inner_text("#reference")).strip()
    assert re.fullmatch(r"CW-[A-Z]{4}-[A-Z]{4}", reference)
    await check_page(page, "public-sent")
    await page.context.close()

    # The quality lead signs in to the workspace and finds the serious concern it raised.
    fb = await eventually(lambda: stack.pool.fetchrow(
        "SELECT feedback_id FROM intake.feedback WHERE provider_record_id = $1", reference),
        what="the feedback accepted")
    concern_id = await eventually(lambda: stack.pool.fetchval(
        "SELECT concern_id FROM workspace.concerns WHERE evidence @> $1::jsonb",
        [{"feedback_id": str(fb["feedback_id"])}]), what="the concern in the workspace")
    lead = await new_page(browser, stack)
    await lead.goto("/sign-in")
    await lead.fill("#email", LEAD)
    await lead.fill("#password", PASSWORD)
    await lead.click("button:has-text('Sign in')")
    await lead.wait_for_load_state()
    await lead.goto("/concerns?severity=serious&status=open")
    await lead.click(f"a[href='/concerns/{concern_id}']")
    await lead.wait_for_load_state()
    text = await lead.inner_text("main")
    assert "Serious" in text and "Lewisham and Greenwich" in text
    assert "public feedback" in text.lower() and "broke his hip" in text
    assert EMAIL not in await lead.content()
    await lead.screenshot(path="var/screenshots/public-concern-seen-by-the-lead.png",
                          full_page=True)
    # To reply, the lead opens the reference and contact details: read from intake on the
    # lead's behalf, and recorded there.
    await lead.click("a:has-text('Reference and contact details')")
    await lead.wait_for_load_state()
    shown = await lead.inner_text("main")
    assert reference in shown and EMAIL in shown and "By email" in shown
    await check_page(lead, "public-contact-details")
    reads = await stack.pool.fetch("SELECT actor FROM intake.contact_reads WHERE reference = $1",
                                   reference)
    assert [r["actor"] for r in reads] == [f"{LEAD} (via workspace)"]
    await lead.context.close()


async def test_the_easy_read_version(browser: Any, stack: PublicStack) -> None:
    page = await new_page(browser, stack)
    await page.goto("/feedback/easy-read")
    await check_page(page, "public-easy-read")
    await page.select_option("#provider", "RP4")
    await page.check("label:has-text('Say thank you')")
    await page.check("label:has-text('I am family or a friend')")
    await page.check("label:has-text('How staff behaved')")
    await page.fill("#description", "The nurses were kind to my brother.")
    await page.check("fieldset:has-text('Can we show what you wrote') label:has-text('Yes')")
    await page.check("label:has-text('No, do not contact me')")
    await page.check("label:has-text('Easy read')")
    await page.click("button:has-text('Send')")
    await page.wait_for_url(re.compile(r"/feedback/sent\?.*version=easy-read"))
    assert "Your number is" in await page.inner_text(".nhsuk-panel")
    reference = (await page.inner_text("#reference")).strip()
    await check_page(page, "public-sent-easy-read")
    row = await eventually(lambda: stack.pool.fetchrow(
        "SELECT content FROM intake.feedback WHERE provider_record_id = $1", reference),
        what="the easy read feedback accepted")
    assert row["content"]["communication_needs"] == ["easy_read"]
    assert row["content"]["contact_by"] == "none"
    await page.context.close()
