"""Every page of the workspace in Debian's Chromium with axe-core (0 WCAG 2.2 A/AA
violations), without the broker: the read model is fed as in tests/integration/
test_workspace_http.py (escalation's outbox delivered to the workspace's handlers), the
workspace and escalation serve real HTTP. Screenshots go to var/screenshots/pages-*.png.
(test_workspace.py runs the same pages with the whole stack, the broker included.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

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
    await lead.click("a[href^='/meetings/']")
    await check_page(lead, "pages-meeting")
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
