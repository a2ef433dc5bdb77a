"""``carewatch submit FILE``: load a bulk file through intake, as a provider feed would.

Records go through the same door as any feed's (nothing is written to intake's tables
directly), in batches with several in flight:
- over AMQP (default): published to ``{ns}.submissions`` with the feed's RabbitMQ user as
  ``user_id``, publisher confirms pipelined; the outcome of each record is then read back
  from intake's receipts (the loader is an operator tool with database access). Records of
  a kind a bulk message may carry (an ``fft-responses-csv`` export's) go as one bulk message
  a batch (``submission.bulk.v1``: a message, a transaction and an acknowledgement for 500
  records rather than one each); the others one message each;
- over HTTP (``--http URL --api-key KEY``): ``POST /v1/submissions/batch``, whose response
  carries each outcome.

A checkpoint next to the file records how far the load got; an interrupted load resumes
from there with the same message ids, so that records already admitted are recognised
(their outcome is looked up, or reported as a replay) rather than counted twice.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any, Protocol, TextIO
from urllib.parse import unquote, urlsplit

import aio_pika
import asyncpg
import httpx

from services.intake import store
from services.intake.bulk import Checkpoint, Record, records
from services.intake.bulk_message import item_bytes, item_message_id
from services.intake.validation import submission_id
from shared.db import create_pool
from shared.retry import Backoff
from shared.settings import Settings
from shared.submissions import (
    BULK_ITEM_KINDS,
    BULK_KIND,
    BULK_ROUTING_KEY,
    MAX_BULK_BYTES,
    MAX_BULK_ITEMS,
)
from shared.topology import Topology

OUTCOMES = ("accepted", "duplicate", "rejected")
# A failed HTTP batch: 0.5 s, 1 s, 2 s ... at most 5 s before it is sent again.
HTTP_RETRY = Backoff(first=0.5, cap=5.0)


class LoadError(Exception):
    """The load stopped before the end (it can be resumed)."""


@dataclass(frozen=True)
class Outcome:
    """What became of one record (for a replay, what became of its first copy)."""

    outcome: str
    submission_id: str | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)


class Sender(Protocol):
    feed: str

    async def submit(self, batch: list[Record], resumed: bool) -> list[Outcome]: ...

    async def close(self) -> None: ...


def batched(items: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


_KIND = re.compile(rb'"kind"\s*:\s*"([a-z0-9_]{1,50})"')


def routing_key(body: bytes) -> str:
    """``submission.<kind>.v1`` (intake reads the kind from the body; this is for routing)."""
    m = _KIND.search(body[:4096])
    return f"submission.{m[1].decode() if m else 'unknown'}.v1"


def url_user(url: str) -> str:
    user = urlsplit(url).username
    return unquote(user) if user else "guest"


class AmqpSender:
    """Publishes as the RabbitMQ user of ``amqp_url`` and reads outcomes from receipts."""

    def __init__(self, settings: Settings, amqp_url: str, run_id: str, *,
                 stall_timeout: float, poll_interval: float = 0.2, bulk: bool = False) -> None:
        self.feed = url_user(amqp_url)
        self._bulk = bulk  # send bulk messages where the records' kind allows
        self._settings = settings
        self._url = amqp_url
        self._run_id = run_id
        self._stall_timeout = stall_timeout
        self._poll = poll_interval
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self._connection = await aio_pika.connect(self._url, timeout=10)
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        name = Topology(self._settings.namespace).submissions_exchange
        try:
            self._exchange = await channel.get_exchange(name, ensure=True)
        except aio_pika.exceptions.ChannelClosed as exc:
            raise LoadError(f"exchange {name!r} does not exist: is intake's topology declared"
                            " (`carewatch topology declare`)?") from exc
        self._pool = await create_pool(self._settings.database_url, min_size=1, max_size=4)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        if self._pool is not None:
            await self._pool.close()

    def _ids(self, record: Record) -> tuple[str, uuid.UUID]:
        message_id = f"{self._run_id}:{record.number}"
        return message_id, submission_id(self.feed, message_id, record.body)

    async def _known(self, sids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Outcome]:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            rows = await store.receipts(conn, list(sids))
        return {sid: Outcome(r["outcome"], str(sid), r["reasons"] or [])
                for sid, r in rows.items()}

    def _message(self, body: bytes, message_id: str) -> aio_pika.Message:
        return aio_pika.Message(body, content_type="application/json",
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                message_id=message_id, user_id=self.feed)

    async def submit(self, batch: list[Record], resumed: bool) -> list[Outcome]:
        assert self._exchange is not None
        exchange = self._exchange
        bulk_id = f"{self._run_id}:{batch[0].number}:bulk"
        grouped = bulk_items(batch) if self._bulk else None
        if grouped is None:
            ids = [self._ids(r) for r in batch]
        else:  # each item's id, as intake derives it (the bulk message's id and place)
            ids = [(bulk_id, submission_id(self.feed, item_message_id(bulk_id, n), item))
                   for n, item in enumerate(grouped[1])]
        known = await self._known(sid for _, sid in ids) if resumed else {}
        if grouped is not None:
            if any(sid not in known for _, sid in ids):  # known items are answered as replays
                await exchange.publish(self._message(grouped[0], bulk_id), BULK_ROUTING_KEY,
                                       mandatory=True, timeout=60)
        else:
            await asyncio.gather(*(
                exchange.publish(
                    self._message(record.body, message_id),
                    # ".bulk": a load takes the routine lane, whatever its kinds (intake
                    # limits each feed's rate on the urgent keys).
                    f"{routing_key(record.body)}.bulk", mandatory=True, timeout=60)
                for record, (message_id, sid) in zip(batch, ids, strict=True)
                if sid not in known))
        waiting = {sid for _, sid in ids} - set(known)
        last_progress = time.monotonic()
        while waiting:
            await asyncio.sleep(self._poll)
            found = await self._known(waiting)
            if found:
                known.update(found)
                waiting -= set(found)
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > self._stall_timeout:
                raise LoadError(f"no outcome for {len(waiting)} published records in"
                                f" {self._stall_timeout:.0f}s: is intake running?")
        return [known[sid] for _, sid in ids]


def bulk_items(batch: list[Record]) -> tuple[bytes, list[bytes]] | None:
    """A batch as one bulk message (its body, and its items as intake reads them), when
    every record is a JSON object of one kind a bulk message may carry and it fits; else
    None (the records go one message each)."""
    try:
        objects = [json.loads(r.body) for r in batch]
    except ValueError:
        return None
    kinds = {o.get("kind") if isinstance(o, dict) else None for o in objects}
    if len(kinds) != 1 or not kinds <= BULK_ITEM_KINDS or len(objects) > MAX_BULK_ITEMS:
        return None
    body = json.dumps({"kind": BULK_KIND, "version": 1, "item_kind": kinds.pop(),
                       "items": objects}, ensure_ascii=False).encode()
    if len(body) > MAX_BULK_BYTES:
        return None
    return body, [item_bytes(o) for o in objects]


class HttpSender:
    """Posts batches to intake's HTTP API with the feed's API key."""

    def __init__(self, base_url: str, api_key: str, run_id: str, *, timeout: float,
                 attempts: int = 5) -> None:
        self.feed = "(API key)"
        self._url = base_url.rstrip("/") + "/v1/submissions/batch"
        self._run_id = run_id
        self._attempts = attempts
        self._client = httpx.AsyncClient(timeout=timeout, headers={
            "Authorization": f"Bearer {api_key}", "Content-Type": "application/x-ndjson"})

    async def close(self) -> None:
        await self._client.aclose()

    async def submit(self, batch: list[Record], resumed: bool) -> list[Outcome]:
        # The same key on a retry or a resumed load: intake recognises the replays.
        headers = {"Idempotency-Key": f"{self._run_id}:{batch[0].number}"}
        body = b"\n".join(r.body for r in batch)
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.post(self._url, content=body, headers=headers)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return [Outcome(r["first_outcome"] if r.get("replay") else r["outcome"],
                                    r["submission_id"], r.get("reasons", []))
                            for r in response.json()["results"]]
                if response.status_code == 429:  # over the feed's rate limit: wait, again
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                if response.status_code < 500:
                    raise LoadError(f"intake refused the batch: {response.status_code}"
                                    f" {response.text[:300]}")
                error = f"HTTP {response.status_code}"
            if attempt < self._attempts:
                await asyncio.sleep(HTTP_RETRY.seconds(attempt))
        raise LoadError(f"intake's HTTP API failed {self._attempts} times: {error}")


class Progress(Protocol):
    def advance(self, n: int, counts: dict[str, int]) -> None: ...


async def load(path: Path, fmt: str, sender: Sender, cp: Checkpoint, cp_path: Path,
               progress: Progress, rejections: IO[str], *, batch_size: int = 500,
               in_flight: int = 8, setting: str | None = None,
               ods_code: str | None = None) -> Checkpoint:
    """Send the file's records from the checkpoint on; the checkpoint is saved as outcomes
    come back, in file order (so ``done`` never passes a record whose outcome is unknown)."""
    resumed_until = cp.sent
    pending: deque[tuple[list[Record], asyncio.Task[list[Outcome]]]] = deque()

    async def settle_oldest() -> None:
        batch, task = pending.popleft()
        for record, out in zip(batch, await task, strict=True):
            cp.counts[out.outcome] = cp.counts.get(out.outcome, 0) + 1
            if out.outcome == "rejected":
                rejections.write(json.dumps({"line": record.line,
                                             "submission_id": out.submission_id,
                                             "reasons": out.reasons}) + "\n")
        cp.done = batch[-1].number
        cp.save(cp_path)
        progress.advance(len(batch), cp.counts)

    try:
        for batch in batched(records(path, fmt, start_after=cp.done, setting=setting,
                                     ods_code=ods_code), batch_size):
            if batch[-1].number > cp.sent:
                cp.sent = batch[-1].number
                cp.save(cp_path)  # before sending: a crash now leaves them to be looked up
            pending.append((batch, asyncio.create_task(
                sender.submit(batch, resumed=batch[0].number <= resumed_until))))
            while len(pending) >= in_flight:
                await settle_oldest()
        while pending:
            await settle_oldest()
    finally:
        for _, task in pending:
            task.cancel()
        await asyncio.gather(*(t for _, t in pending), return_exceptions=True)
        rejections.flush()
    return cp


class Reporter:
    """A progress bar on a terminal (rich), a line every few seconds otherwise."""

    def __init__(self, total: int, done: int, label: str, stream: TextIO = sys.stderr,
                 every: float = 5.0) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.total, self.done, self.started = total, done, time.monotonic()
        self._first = done
        self._stream, self._every, self._last = stream, every, 0.0
        console = Console(file=stream)
        self._bar: RichProgress | None = None
        if console.is_terminal:
            self._bar = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[counts]}"), console=console)
            self._task = self._bar.add_task(label, total=total, completed=done,
                                            counts=self._counts_text({}))
            self._bar.start()

    @staticmethod
    def _counts_text(counts: dict[str, int]) -> str:
        return "  ".join(f"{o} {counts.get(o, 0):,}" for o in OUTCOMES)

    def rate(self) -> float:
        return (self.done - self._first) / max(time.monotonic() - self.started, 1e-9)

    def advance(self, n: int, counts: dict[str, int]) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n, counts=self._counts_text(counts))
        elif time.monotonic() - self._last >= self._every or self.done == self.total:
            self._last = time.monotonic()
            pct = 100 * self.done / self.total if self.total else 100.0
            print(f"{self.done:,}/{self.total:,} records ({pct:.0f}%)  {self._counts_text(counts)}"
                  f"  {self.rate():,.0f}/s", file=self._stream, flush=True)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]

