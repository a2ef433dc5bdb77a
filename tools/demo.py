"""``make demo``: replay a month of realistic feedback into a running carewatch.

Start the system first (``make run``, or ``docker compose up``), then ``make demo``: a
month of submissions from every provider in the registry, with a few serious risks, bad
records and duplicates, is published to the configured broker as the development feed.
Watch concerns, meetings and invitations appear (``carewatch status``, the mail catcher).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import date, timedelta

import asyncpg

from shared.settings import get_settings
from tools.publisher import publish_items
from tools.stream import StreamGenerator, load_providers


async def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    feed = args.feed or settings.dev_feed_user or "guest"
    start = date.today() - timedelta(days=args.days)
    generator = StreamGenerator(load_providers(), seed=args.seed)
    items = list(generator.days(start, args.days, per_provider_per_day=args.per_day,
                                serious_every=args.serious_every))
    expected = generator.expected
    print(f"replaying {len(items):,} submissions ({start} to {date.today()}) to"
          f" {settings.namespace}.submissions as feed {feed!r}: {expected.accepted:,} valid,"
          f" {expected.duplicates} duplicates, {expected.rejected} bad,"
          f" {len(expected.serious)} planted serious risks")

    def progress(done: int) -> None:
        width = 40
        filled = width * done // len(items)
        sys.stdout.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done:,}/{len(items):,}")
        sys.stdout.flush()

    seconds = await publish_items(items, url=settings.amqp_url, namespace=settings.namespace,
                                  run=f"demo-{uuid.uuid4().hex[:6]}", user_id=feed,
                                  rate=args.rate, progress=progress)
    print(f"\npublished in {seconds:.0f}s; waiting for the pipeline to catch up...")
    conn = await asyncpg.connect(settings.database_url)
    try:
        for _ in range(600):
            fed = await conn.fetchval("SELECT count(*) FROM monitor.feedback")
            if fed >= expected.accepted:
                break
            await asyncio.sleep(1)
        concerns = await conn.fetch("SELECT severity, count(*) FROM monitor.concerns"
                                    " WHERE status = 'open' GROUP BY severity")
        meetings = await conn.fetchval("SELECT count(*) FROM escalation.meetings")
        mails = await conn.fetchval("SELECT count(*) FROM notification.notifications"
                                    " WHERE status = 'sent'")
    finally:
        await conn.close()
    print(f"open concerns: {dict(concerns) or 'none'}; meetings booked: {meetings};"
          f" notifications sent: {mails}")
    print("see them with: carewatch concerns list, carewatch meetings list, and the mail"
          " catcher (var/mail/ with make run, http://localhost:8025 with docker compose)")
    return 0


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Replay a month of feedback into a running system.")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--per-day", type=float, default=6.0, help="submissions per provider per day")
    p.add_argument("--serious-every", type=int, default=700)
    p.add_argument("--rate", type=float, default=300.0, help="messages per second")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--feed", default="", help="RabbitMQ user of the feed (user_id)")
    return p.parse_args()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
