"""The fair ceiling: carewatch's two hops of durable work, done by a minimal hand-written pipeline.

``make bench`` used to compare carewatch (two hops of durable work per submission) with a
single consume hop. This is the same work as carewatch's intake and quality-monitor, written
plainly on the same libraries, with nothing but what the work needs:

- hop 1 (intake's work): consume a batch of submissions; validate each with the contract's
  pydantic models and redact its free text (``services.intake.validation.parse``, the very
  function intake uses); authorise the feed for the provider (a dict look-up); store the
  accepted rows and their outbox rows in one transaction per batch (``INSERT ... SELECT FROM
  unnest``, de-duplicated on the provider's record id); publish the events with publisher
  confirms in flight, persistent and mandatory; mark the outbox rows published; ack the batch
  with one ``basic.ack(multiple)``;
- hop 2 (quality-monitor's work): consume a batch of events; store its inbox rows and its
  copy of each item in one transaction; ack with ``multiple``.

Same stream, same queue arguments (quorum queues with a dead-letter exchange and a delivery
limit) and same broker and database as carewatch's throughput run. Run alone with
``python -m tools.ceiling 20000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import aio_pika
import asyncpg

from services.intake.validation import Parsed, parse
from tools.stacks import AMQP, CpuMeter, scratch_database
from tools.stream import Item, load_providers

BATCH = 200
PREFETCH = 500
SCHEMA = """
CREATE TABLE feedback (id uuid PRIMARY KEY, ods_code text NOT NULL, record_id text NOT NULL,
    kind text NOT NULL, occurred_on date, content jsonb NOT NULL, UNIQUE (ods_code, record_id));
CREATE TABLE outbox (id uuid PRIMARY KEY, routing_key text NOT NULL, body bytea NOT NULL,
    published_at timestamptz);
CREATE TABLE inbox (event_id uuid PRIMARY KEY);
CREATE TABLE copy (id uuid PRIMARY KEY, ods_code text NOT NULL, kind text NOT NULL,
    content jsonb NOT NULL);
"""


class Batcher:
    """Collects deliveries into batches of ``BATCH``, or whatever arrived within 5 ms."""

    def __init__(self, work: Any) -> None:
        self.work = work
        self.pending: list[aio_pika.abc.AbstractIncomingMessage] = []
        self.lock = asyncio.Lock()
        self.timer: asyncio.TimerHandle | None = None

    async def add(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.pending.append(message)
        if len(self.pending) >= BATCH:
            await self.flush()
        elif self.timer is None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(0.005, lambda: loop.create_task(self.flush()))

    async def flush(self) -> None:
        async with self.lock:
            if self.timer:
                self.timer.cancel()
                self.timer = None
            batch, self.pending = self.pending, []
            if batch:
                await self.work(batch)
                await batch[-1].ack(multiple=True)


async def _declare(channel: aio_pika.abc.AbstractChannel, name: str) -> aio_pika.abc.AbstractQueue:
    """A queue as carewatch declares its own: quorum, a dead-letter exchange, a delivery limit."""
    dlx = await channel.declare_exchange(f"{name}.dlx", aio_pika.ExchangeType.FANOUT, durable=True)
    dlq = await channel.declare_queue(f"{name}.dlq", durable=True,
                                      arguments={"x-queue-type": "quorum"})
    await dlq.bind(dlx)
    return await channel.declare_queue(name, durable=True, arguments={
        "x-queue-type": "quorum", "x-dead-letter-exchange": f"{name}.dlx",
        "x-delivery-limit": 5})


async def _copied(pool: asyncpg.Pool, target: int) -> None:
    started = time.perf_counter()
    while (done := await pool.fetchval("SELECT count(*) FROM copy")) < target:
        if time.perf_counter() - started > 1200:
            raise TimeoutError(f"fair ceiling: {done}/{target} after 20 minutes")
        await asyncio.sleep(0.05)


async def run(items: Sequence[Item], accepted: int) -> dict[str, Any]:
    """Publish ``items``, then time both hops until ``accepted`` items are in the copy table."""
    tag = f"cwbench_fair_{uuid.uuid4().hex[:8]}"
    feeds = {p["ods_code"] for p in load_providers()}  # the guest feed may submit for all
    async with scratch_database(tag, max_size=4) as pool, await aio_pika.connect(AMQP) as connection:
        await pool.execute(SCHEMA)
        setup = await connection.channel()
        submissions = await _declare(setup, f"{tag}.submissions")
        events = await _declare(setup, f"{tag}.events")
        exchange = await setup.declare_exchange(tag, aio_pika.ExchangeType.TOPIC, durable=True)
        await events.bind(exchange, "feedback.accepted.v1.#")
        publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for start in range(0, len(items), 1000):
            await asyncio.gather(*(publisher.default_exchange.publish(
                aio_pika.Message(item.raw(), content_type="application/json", user_id="guest",
                                 message_id=str(uuid.uuid4()),
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=submissions.name, mandatory=True) for item in items[start:start + 1000]))
        out = await connection.channel(publisher_confirms=True, on_return_raises=True)
        out_exchange = await out.get_exchange(tag)

        async def intake(batch: list[aio_pika.abc.AbstractIncomingMessage]) -> None:
            rows, outbox = [], []
            for m in batch:
                parsed = parse(m.body, m.content_type)
                if not isinstance(parsed, Parsed):
                    continue  # carewatch quarantines it; the ceiling only skips it
                s = parsed.submission
                if s.ods_code not in feeds:
                    continue
                item_id = uuid.uuid4()
                content = json.dumps(parsed.content)
                rows.append((item_id, s.ods_code, s.record_id, s.kind, s.occurred_on(),
                             content))
                outbox.append((uuid.uuid4(), f"feedback.accepted.v1.{s.kind}",
                               json.dumps({"id": str(item_id), "ods_code": s.ods_code,
                                           "kind": s.kind, "content": parsed.content}).encode()))
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO feedback SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[],"
                    " $4::text[], $5::date[], $6::jsonb[]) ON CONFLICT DO NOTHING",
                    *zip(*rows, strict=True)) if rows else None
                await conn.execute(
                    "INSERT INTO outbox (id, routing_key, body) SELECT * FROM"
                    " unnest($1::uuid[], $2::text[], $3::bytea[])",
                    *zip(*outbox, strict=True)) if outbox else None
            await asyncio.gather(*(out_exchange.publish(
                aio_pika.Message(body, message_id=str(event_id), content_type="application/json",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=key, mandatory=True) for event_id, key, body in outbox))
            await pool.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::uuid[])",
                               [o[0] for o in outbox])

        async def monitor(batch: list[aio_pika.abc.AbstractIncomingMessage]) -> None:
            decoded = [(uuid.UUID(m.message_id or ""), json.loads(m.body)) for m in batch]
            async with pool.acquire() as conn, conn.transaction():
                fresh = await conn.fetch(
                    "INSERT INTO inbox SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING"
                    " RETURNING event_id", [d[0] for d in decoded])
                new = {r["event_id"] for r in fresh}
                copies = [(uuid.UUID(e["id"]), e["ods_code"], e["kind"], json.dumps(e["content"]))
                          for event_id, e in decoded if event_id in new]
                if copies:
                    await conn.execute(
                        "INSERT INTO copy SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[],"
                        " $4::jsonb[]) ON CONFLICT DO NOTHING", *zip(*copies, strict=True))

        hop1 = await connection.channel()
        await hop1.set_qos(prefetch_count=PREFETCH)
        hop2 = await connection.channel()
        await hop2.set_qos(prefetch_count=PREFETCH)
        first, second = Batcher(intake), Batcher(monitor)
        tags = [(hop1, await (await hop1.get_queue(submissions.name)).consume(first.add)),
                (hop2, await (await hop2.get_queue(events.name)).consume(second.add))]
        # Sustained rate between 10% and 70% of the stream, as carewatch's throughput run.
        await _copied(pool, accepted // 10)
        meter = CpuMeter({}).start()
        t0, c0 = time.perf_counter(), await pool.fetchval("SELECT count(*) FROM copy")
        await _copied(pool, accepted * 7 // 10)
        t1, c1 = time.perf_counter(), await pool.fetchval("SELECT count(*) FROM copy")
        wall, cpu = meter.read()
        done = c1 - c0
        elapsed = t1 - t0
        cpu["fair ceiling (this process)"] = cpu.pop("load generator")
        await _copied(pool, accepted)  # drained: nothing in flight when the queues go
        for channel, consumer in tags:
            queue = await channel.get_queue(submissions.name if channel is hop1 else events.name)
            await queue.cancel(consumer)
        for batcher in (first, second):  # no batch still publishing when the queues go
            await batcher.flush()
        try:
            for name in (submissions.name, events.name):
                await setup.queue_delete(name)
                await setup.queue_delete(f"{name}.dlq")
                await setup.exchange_delete(f"{name}.dlx")
            await setup.exchange_delete(tag)
        except aio_pika.exceptions.AMQPError as exc:
            # A busy shared broker may fail a delete (INTERNAL_ERROR): the measurement
            # stands; the scratch queues are left behind.
            print(f"fair ceiling: cleaning up {tag} failed: {exc!r}")
        return {"rate": done / elapsed, "handled": done, "wall": wall, "cpu": cpu}


async def main(n: int) -> None:
    from tools.bench import stream  # the very stream carewatch's throughput run takes

    items, accepted = stream(n, seed=11)
    result = await run(items, accepted)
    print(f"fair two-hop ceiling: {result['rate']:,.0f} submissions/s over {result['handled']:,}")
    for name, seconds in sorted(result["cpu"].items(), key=lambda kv: -kv[1]):
        print(f"  {name}: {seconds / result['handled'] * 1000:.2f} ms CPU per submission")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("n", type=int, nargs="?", default=20_000)
    asyncio.run(main(p.parse_args().n))
