"""``make demo``: replay two years of realistic feedback into a running carewatch, then draw
the charts a quality committee reads.

Start the system first (``make run``, or ``docker compose up``), then ``make demo``:

1. 24 months of history for every provider in the registry (FFT responses, or monthly returns
   for every sixth provider; complaints; GP alerts), with planted changes
   (tools/stream.py, ``PLANTED_HISTORY``), then this month so far (with a few serious risks,
   bad records and duplicates), published to the configured broker as the development feed;
2. once the pipeline has caught up, the monitor is asked to close the last month again (its
   schedule runs the month close as soon as it is due), so the series are judged;
3. SPC charts of the planted providers' measures and the funnel of the last month are written
   to ``var/charts/`` (SVG), with the Making Data Count summary printed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg

from services.quality_monitor import charts, summary
from services.quality_monitor.config import load_rules
from services.quality_monitor.lifecycle import last_closed_month
from services.quality_monitor.series import month_of, shift_month
from shared.db import create_pool
from shared.settings import Settings, get_settings
from tools.publisher import publish_items
from tools.stream import PLANTED_HISTORY, StreamGenerator, load_providers, main_setting

CHARTS = Path("var/charts")
PLANTED_METRIC = {"fft_spike": "fft_negative", "fft_shift": "fft_negative",
                  "fft_improved": "fft_negative", "complaints_spike": "complaints",
                  "gp_alerts_spike": "gp_alerts"}


async def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    feed = args.feed or settings.dev_feed_user or "guest"
    today = date.today()
    current = month_of(today)
    months = [shift_month(current, k - args.months) for k in range(args.months)]
    providers = load_providers()
    generator = StreamGenerator(providers, seed=args.seed)
    items = list(generator.history(months))
    start = today.replace(day=1)
    items += list(generator.days(start, (today - start).days + 1,
                                 per_provider_per_day=args.per_day,
                                 serious_every=args.serious_every))
    expected = generator.expected
    print(f"replaying {len(items):,} submissions ({months[0]} to {today}) to"
          f" {settings.namespace}.submissions as feed {feed!r}: {expected.accepted:,} valid,"
          f" {expected.duplicates} duplicates, {expected.rejected} bad,"
          f" {len(expected.serious)} planted serious risks")
    for (plant, words), p in zip(PLANTED_HISTORY, providers, strict=False):
        print(f"  planted at {p['ods_code']} ({p['name']}): {words} [{plant}]")
    if not await feed_may_submit(settings, feed, [p["ods_code"] for p in providers]):
        return 1

    def progress(done: int) -> None:
        width = 40
        filled = width * done // len(items)
        sys.stdout.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done:,}/{len(items):,}")
        sys.stdout.flush()

    seconds = await publish_items(items, url=settings.amqp_url, namespace=settings.namespace,
                                  run=f"demo-{uuid.uuid4().hex[:6]}", user_id=feed,
                                  rate=args.rate, progress=progress)
    print(f"\npublished in {seconds:.0f}s; waiting for the pipeline to catch up...")
    # The services' own way to the database: JSON columns come back as Python objects.
    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await caught_up(conn, expected.accepted)
            await close_month_again(conn)
            await draw(conn, providers, args.out)
            concerns = await conn.fetch("SELECT severity, count(*) FROM monitor.concerns"
                                        " WHERE status = 'open' GROUP BY severity")
            meetings = await conn.fetchval("SELECT count(*) FROM escalation.meetings")
            mails = await conn.fetchval("SELECT count(*) FROM notification.notifications"
                                        " WHERE status = 'sent'")
    finally:
        await pool.close()
    print(f"open concerns: {dict(concerns) or 'none'}; meetings booked: {meetings};"
          f" notifications sent: {mails}")
    print("see them with: carewatch concerns list, carewatch measures summary, carewatch"
          " rebases list, the charts in var/charts/, and the mail catcher (var/mail/ with"
          " make run, http://localhost:8025 with docker compose)")
    return 0


async def feed_may_submit(settings: Settings, feed: str, ods_codes: list[str]) -> bool:
    """The demo publishes as one feed for every provider of the registry; intake refuses a
    feed's submissions for providers it is not registered for (``make run`` registers the
    development feed for RJ1 only). In development mode the demo registers it for the demo's
    providers; otherwise it says how, and stops."""
    from services.intake import store as intake_store

    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            granted = {r["ods_code"] for r in await conn.fetch(
                "SELECT ods_code FROM intake.feed_providers WHERE feed_user = $1", feed)}
            missing = sorted(set(ods_codes) - granted)
            if not missing:
                return True
            if not settings.dev_mode:
                print(f"feed {feed!r} may not submit for {len(missing)} of the demo's"
                      f" providers; register it first: carewatch feeds create {feed} "
                      + " ".join(f"--ods {c}" for c in missing))
                return False
            await intake_store.register_feed(conn, feed, missing,
                                             "make demo (development mode)")
        print(f"development mode: feed {feed!r} may now submit for the demo's"
              f" {len(ods_codes)} providers")
        return True
    finally:
        await pool.close()


async def caught_up(conn: asyncpg.Connection, accepted: int) -> None:
    for _ in range(900):
        if await conn.fetchval("SELECT count(*) FROM monitor.feedback") >= accepted:
            return
        await asyncio.sleep(1)
    print("  (the monitor has not seen every item after 15 minutes; drawing what it has)")


async def close_month_again(conn: asyncpg.Connection) -> None:
    """Ask the running monitor to close the last month again now (it is idempotent): the
    history arrived after its schedule closed the month."""
    asked = datetime.now(UTC)
    await conn.execute("UPDATE monitor.schedule SET due_at = $1 WHERE job = 'month_close'",
                       asked)
    poll = load_rules(get_settings().monitor_rules_file).schedule.poll_seconds
    print(f"asked quality-monitor to close the month again (it polls every {poll:.0f}s)...")
    for _ in range(int(poll * 3) + 60):
        ran = await conn.fetchval("SELECT last_run_at FROM monitor.schedule"
                                  " WHERE job = 'month_close'")
        if ran is not None and ran >= asked:
            return
        await asyncio.sleep(1)
    print("  (the month close has not run yet: is quality-monitor running?)")


async def draw(conn: asyncpg.Connection, providers: list[dict[str, str]], out: Path) -> None:
    rules = load_rules(get_settings().monitor_rules_file)
    now = datetime.now(UTC)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (plant, _), p in zip(PLANTED_HISTORY, providers, strict=False):
        metric = PLANTED_METRIC[plant]
        # the setting the history (and its planted change) is in; this month's responses
        # come in the provider's other settings too
        setting = "all" if metric in ("complaints", "gp_alerts") else main_setting(p).value
        fig = await charts.load_spc(conn, rules, now, p["ods_code"], metric, setting)
        if isinstance(fig, str):
            print(f"  no chart for {p['ods_code']}: {fig}")
            continue
        path = out / f"spc-{p['ods_code']}-{metric}-{setting}.svg"
        path.write_bytes(charts.render(fig, "svg"))
        written.append(path)
    period = last_closed_month(now, rules.schedule.month_close_days)
    fig = await charts.load_funnel(conn, rules, now, "inpatient", period,
                                   providers[0]["ods_code"])
    if not isinstance(fig, str):
        path = out / f"funnel-inpatient-{period}.svg"
        path.write_bytes(charts.render(fig, "svg"))
        written.append(path)
    print("charts: " + ", ".join(str(p) for p in written))
    rows = await summary.load(conn, rules, now)
    flagged = [r for r in rows if r.variation != "common_cause"]
    print(f"summary: {len(rows)} measures; special cause at the latest month in"
          f" {len(flagged)}:")
    for r in flagged[:15]:
        print(f"  {r.ods_code} {r.metric} ({r.setting}) {r.period}: {r.value},"
              f" {r.variation_words}" + (f"; {r.assurance_words}" if r.assurance_words else ""))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Replay two years of feedback into a running"
                                            " system and draw its charts.")
    p.add_argument("--months", type=int, default=24, help="months of history before this one")
    p.add_argument("--per-day", type=float, default=4.0,
                   help="submissions per provider per day this month")
    p.add_argument("--serious-every", type=int, default=700)
    p.add_argument("--rate", type=float, default=300.0, help="messages per second")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--feed", default="", help="RabbitMQ user of the feed (user_id)")
    p.add_argument("--out", type=Path, default=CHARTS, help="where to write the charts")
    return p.parse_args()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
