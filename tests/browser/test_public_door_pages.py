"""The public feedback pages (issue 19) in Debian's Chromium with axe-core, without the broker:
the workspace and intake serve real HTTP on a database of this module's own (intake admits
the form's submission into its tables and outbox; nothing relays it). 0 WCAG 2.2 A/AA
violations on the form (empty, and with its errors), the easy read form and both
confirmations; the keyboard alone can fill in and send the form. Screenshots go to
var/screenshots/public-pages-*.png.

tests/browser/test_public_door.py runs the same form with the whole stack, the broker
included, and finds the concern it raises.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from services.catalogue import builder
from services.intake import store as intake_store
from services.intake.credentials import api_key_hash, new_api_key
from services.workspace.app import build as build_workspace
from services.workspace.config import WorkspaceSettings
from shared import identity
from shared.db import create_pool, migrate
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.browser.test_workspace import ARGS, CHROMIUM, check_page, chromium_or_skip
from tools.stacks import database_url

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def served(server_urls: Any) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """The workspace's URL, intake behind it (HTTP only), and the database."""
    chromium_or_skip()
    tag = uuid.uuid4().hex[:10]
    settings = Settings(database_url=database_url(server_urls.postgres_admin,
                                                  f"carewatch_test_{tag}"),
                        namespace=f"cwtest_{tag}", http_port=0)
    name = settings.database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(server_urls.postgres_admin)
    await admin.execute(f'CREATE DATABASE "{name}"')
    intake: ServiceRuntime = builder("intake")(settings)
    workspace = build_workspace(settings)
    conn = await asyncpg.connect(settings.database_url)
    await migrate(conn, identity.SCHEMA, identity.MIGRATIONS, messaging=False)
    for runtime in (intake, workspace):
        await migrate(conn, runtime.schema, runtime.migrations)
    await intake_store.upsert_providers(conn, intake_store.read_providers_csv(
        intake_store.SAMPLE_PROVIDERS))
    key = new_api_key()
    await intake_store.register_feed(conn, "public-door", [], "tests", public_door=True)
    await intake_store.set_api_key(conn, "public-door", api_key_hash(key))
    await conn.close()
    pool = await create_pool(settings.database_url, min_size=1, max_size=4)
    intake._pool = pool
    await intake.http.start("127.0.0.1", 0)
    workspace = build_workspace(settings, workspace=WorkspaceSettings(
        intake_url=f"http://127.0.0.1:{intake.http.port}", public_feed_key=key,
        insecure_cookies=True, form_secret=tag))
    workspace._pool = pool
    await workspace.http.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{workspace.http.port}", pool
    finally:
        await workspace.http.stop()
        await intake.http.stop()
        await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="module")
async def browser(served: tuple[str, asyncpg.Pool]) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        await launched.close()


async def open_page(browser: Any, url: str, path: str, **options: Any) -> Any:
    # bypass_csp: axe-core is injected as an inline script, which the CSP refuses.
    context = await browser.new_context(base_url=url, bypass_csp=True,
                                        viewport={"width": 1200, "height": 900}, **options)
    page = await context.new_page()
    response = await page.goto(path)
    assert response is not None and response.status == 200, path
    return page


async def test_every_public_page_passes_axe(browser: Any,
                                            served: tuple[str, asyncpg.Pool]) -> None:
    url, pool = served
    page = await open_page(browser, url, "/feedback")
    await check_page(page, "public-pages-form")
    await page.click("button:has-text('Send feedback')")
    await page.wait_for_load_state()
    assert await page.locator(".nhsuk-error-summary").count() == 1
    # Each message of the summary links to its question.
    for link in await page.locator(".nhsuk-error-summary a").all():
        target = (await link.get_attribute("href") or "").lstrip("#")
        assert await page.locator(f"[id='{target}']").count() == 1, target
    await check_page(page, "public-pages-form-errors")
    await page.context.close()

    easy = await open_page(browser, url, "/feedback/easy-read")
    await check_page(easy, "public-pages-easy-read")
    await easy.select_option("#provider", "RJ1")
    for label in ("Tell you I am worried about something", "I am the patient",
                  "Getting an appointment", "No, do not contact me"):
        await easy.check(f"label:has-text('{label}')")
    await easy.check("fieldset:has-text('Can we show what you wrote') label:has-text('No')")
    await easy.fill("#description", "I waited three months for an appointment.")
    await easy.click("button:has-text('Send')")
    await easy.wait_for_url(re.compile(r"/feedback/sent\?"))
    await check_page(easy, "public-pages-sent-easy-read")
    reference = (await easy.inner_text("#reference")).strip()
    row = await pool.fetchrow("SELECT kind, content FROM intake.feedback"
                              " WHERE provider_record_id = $1", reference)
    assert row["kind"] == "public_feedback" and row["content"]["consent_share_feedback"] is False
    await easy.context.close()


async def test_the_form_can_be_sent_with_the_keyboard_alone(
        browser: Any, served: tuple[str, asyncpg.Pool]) -> None:
    """WCAG 2.1.1: every question is reached with Tab and answered with the keyboard."""
    url, pool = served
    page = await open_page(browser, url, "/feedback")
    await page.focus("#provider")
    await page.keyboard.press("ArrowDown")  # the first service
    seen = []
    for _ in range(80):
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.id || document.activeElement"
                                      ".tagName")
        seen.append(focused)
        if focused in ("purpose", "relationship", "subject", "share_feedback", "contact_by"):
            await page.keyboard.press("Space")  # the first answer of each question
        elif focused == "description":
            await page.keyboard.type("The receptionist was rude to my mother.")
        elif focused == "BUTTON":
            break
    assert "website" not in seen, "the honeypot must be out of the tab order"
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"/feedback/sent\?"))
    await check_page(page, "public-pages-sent")
    reference = (await page.inner_text("#reference")).strip()
    assert await pool.fetchval("SELECT count(*) FROM intake.feedback"
                               " WHERE provider_record_id = $1", reference) == 1
    await page.context.close()


async def test_the_pages_work_without_javascript(browser: Any,
                                                 served: tuple[str, asyncpg.Pool]) -> None:
    url, _ = served
    page = await open_page(browser, url, "/feedback", java_script_enabled=False)
    # Without the frontend's script the contact fields are shown at once.
    assert await page.is_visible("#email") and await page.is_visible("#phone")
    await page.context.close()
    # With it, each is revealed when its way of contact is chosen.
    page = await open_page(browser, url, "/feedback")
    assert not await page.is_visible("#email") and not await page.is_visible("#phone")
    await page.check("label:has-text('By email')")
    assert await page.is_visible("#email") and not await page.is_visible("#phone")
    await page.context.close()
