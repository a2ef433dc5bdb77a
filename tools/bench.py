"""``make bench``: carewatch measured against this machine's own ceiling, in one run.

Writes BENCHMARKS.md. Each figure runs in a fresh database and namespace of its own, on the
broker and database the settings point at (the local ones by default), with the services as
separate processes, as they run in production:

1. the raw ceiling: a plain aio-pika consumer doing the minimal durable work (insert the
   message id in batches, ack with ``multiple``), on the same broker and database; and the
   fair ceiling (``tools/ceiling.py``): carewatch's two hops done by a minimal pipeline;
2. carewatch throughput through intake and quality-monitor, everything persisted; and the
   same with ``--replicas`` processes of each (2 by default) beside one, alternated
   ``--rounds`` times, with what limits the gain (``--only throughput`` runs this alone,
   the scaled runs when ``--replicas`` is given);
3. the latency of a serious risk from publish to meeting committed and to e-mail accepted
   by the SMTP server, at idle and under background load;
4. the memory (RSS) of each service at steady state;
5. the time to replay an ICB's year of feedback through all five services;
6. a py-spy profile of intake and quality-monitor under load (when py-spy is installed);
7. where the cores went: the CPU of every process (services, broker, database, load
   generator) per submission, in the throughput run and in the year;
8. the clinical-text harm pipeline alone: free-text fields per second per core, and how long
   the event loop waits while long texts are read (``--only harm`` runs this one alone);
9. the monthly CQRM packs of 100 providers (``tools/reports_bench.py``; ``--only reports``);
10. a national FFT year (14 million responses) extrapolated from ``--national`` responses
    (100,000 by default, a few minutes; the 2 million the issue asks for take over an hour
    on a slow host) through the five services (``--only national``), one message a response,
    then in bulk messages of ``--national-bulk`` responses (500 by default; 0: not run;
    ``--only national-bulk`` runs the bulk one alone).

An "## Analysis" section written by the engineers is carried over from the previous file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
import uuid
from datetime import date, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

from services.catalogue import SERVICES
from shared.submissions import BULK_KIND, MAX_BULK_ITEMS, KO41aSubject
from tools import ceiling as fair_ceiling
from tools.publisher import publish_items
from tools.reports_bench import monthly_packs, reports_section
from tools.stacks import ADMIN_DSN, AMQP, Stack, free_port, scratch_database, stack
from tools.stream import Item, StreamGenerator, load_providers

ROOT = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def next_poll(remaining: int, rate: float, *, finest: float = 0.05,
              coarsest: float = 1.0) -> float:
    """Seconds until the next count: a quarter of the time the rest should take at the rate
    seen so far, between ``finest`` and ``coarsest``. The count (``count(*)`` of a table the
    run fills) costs the database a scan of all it holds: polled every 50 ms through a year,
    it was a large part of the database's CPU the year measured, and it grew with the table.
    Counting finely only near the end keeps the drain time as exact."""
    if rate <= 0:
        return finest
    return min(coarsest, max(finest, remaining / rate / 4))


async def wait_for(conn: asyncpg.Connection, sql: str, target: int, timeout: float,
                   label: str, progress: list[tuple[float, int]] | None = None) -> float:
    """Seconds until ``sql`` counts ``target``; each count is appended to ``progress`` as
    (seconds, count) if given."""
    started = time.perf_counter()
    last_report = started
    while True:
        n = await conn.fetchval(sql)
        now = time.perf_counter()
        if progress is not None:
            progress.append((now - started, n))
        if n >= target:
            return now - started
        if now - started > timeout:
            raise TimeoutError(f"{label}: {n}/{target} after {timeout:.0f}s")
        if now - last_report > 15:
            log(f"  {label}: {n}/{target} ({n / (now - started):.0f}/s)")
            last_report = now
        await asyncio.sleep(next_poll(target - n, n / max(now - started, 1e-9)))


# -- 1. the raw ceiling -----------------------------------------------------------------------
async def raw_ceiling(n: int) -> float:
    """aio-pika consumer: insert each message id (batches of 100), ack with multiple=True."""
    body = json.dumps({"kind": "fft_response", "pad": "x" * 520}).encode()  # ~609 bytes
    queue_name = f"cwbench_raw_{uuid.uuid4().hex[:8]}"
    async with scratch_database(f"{queue_name}_db") as pool, await aio_pika.connect(AMQP) as connection:
        await pool.execute("CREATE TABLE seen (id text PRIMARY KEY)")
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        for start in range(0, n, 1000):
            await asyncio.gather(*(channel.default_exchange.publish(
                aio_pika.Message(body, message_id=str(i),
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue_name) for i in range(start, min(n, start + 1000))))
        consume = await connection.channel()
        await consume.set_qos(prefetch_count=500)
        q = await consume.get_queue(queue_name)
        done = asyncio.Event()
        pending: list[aio_pika.abc.AbstractIncomingMessage] = []
        count = 0
        lock = asyncio.Lock()

        async def flush() -> None:
            nonlocal count
            batch, pending[:] = list(pending), []
            await pool.execute("INSERT INTO seen SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                               [m.message_id for m in batch])
            await batch[-1].ack(multiple=True)
            count += len(batch)
            if count >= n:
                done.set()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            pending.append(message)
            if len(pending) >= 100 or count + len(pending) >= n:
                async with lock:
                    if pending:
                        await flush()

        started = time.perf_counter()
        tag = await q.consume(on_message)
        await asyncio.wait_for(done.wait(), 600)
        elapsed = time.perf_counter() - started
        await q.cancel(tag)
        await consume.queue_delete(queue_name)
        return n / elapsed


# -- 2. carewatch throughput ------------------------------------------------------------------
def stream(n: int, seed: int) -> tuple[list[Item], int]:
    generator = StreamGenerator(load_providers(), seed=seed)
    items = generator.take(n, date(2025, 12, 1), serious_every=10_000_000)
    return items, generator.expected.accepted


# The services a throughput run scales out: extra processes of the same service on the same
# queues (competing consumers), as `docker compose up --scale` runs them.
SCALED = ("intake", "quality_monitor")


async def throughput(n: int, profile_seconds: int, replicas: int = 1) -> dict[str, Any]:
    """The sustained rate of ``n`` queued submissions through ``replicas`` processes each of
    intake and quality-monitor; the CPU of a service is the sum over its replicas."""
    async with stack() as s:
        items, accepted = stream(n, seed=11)
        await publish_items(items, url=s.settings.amqp_url, namespace=s.settings.namespace,
                            run=uuid.uuid4().hex[:8])
        log(f"  {n} submissions queued; starting {replicas} x intake and quality-monitor")
        conn = await asyncpg.connect(s.settings.database_url)
        # quality-monitor first, consuming before intake starts: it loads its language
        # models for a while, and intake would otherwise run alone through the queue
        # meanwhile (with more replicas to start, through all of it), leaving the measured
        # window to quality-monitor draining what intake had done.
        for _ in range(replicas):
            s.start("quality_monitor")
        await s.wait_consuming(replicas)
        for _ in range(replicas):
            s.start("intake")
        await s.wait_consuming(replicas)
        # Sustained rate: between 10% and 70% of the stream, after start-up.
        await wait_for(conn, "SELECT count(*) FROM monitor.feedback", accepted // 10, 600, "warm-up")
        meter = s.cpu().start()
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), await conn.fetchval("SELECT count(*) FROM monitor.feedback")
        await wait_for(conn, "SELECT count(*) FROM monitor.feedback", accepted * 7 // 10, 1200,
                       "throughput")
        t1, c1 = time.perf_counter(), await conn.fetchval("SELECT count(*) FROM monitor.feedback")
        wall, cpu = meter.read()
        load1 = os.getloadavg()[0]
        # Profiled after the measured window: py-spy takes CPU from a two-core machine.
        profiles = await profile(s, profile_seconds) if profile_seconds else {}
        rss = s.rss_mib()
        await conn.close()
        rate = (c1 - c0) / (t1 - t0)
        return {"n": n, "accepted": accepted, "rate": rate, "rss": rss, "profiles": profiles,
                "cpu": cpu, "wall": wall, "handled": c1 - c0, "replicas": replicas,
                "load": (load0, load1)}


async def scale_runs(n: int, replicas: int, rounds: int,
                     first: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Throughput with one replica and with ``replicas``, alternated ``rounds`` times (1, N,
    1, N, ...: a shared machine's load drifts, and alternating spreads the drift over both);
    ``first``: a one-replica run already made, used as the first."""
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for k in (1, replicas):
            if r == 0 and k == 1 and first is not None:
                runs.append(first)
                continue
            log(f"  round {r + 1}/{rounds}: {k} replica(s) of intake and quality-monitor")
            run = await throughput(n, 0, k)
            log(f"  {run['rate']:.0f} submissions/s (load {run['load'][0]:.2f}"
                f" -> {run['load'][1]:.2f})")
            runs.append(run)
    return runs


def machine_share(run: dict[str, Any], cores: int) -> tuple[float, float]:
    """(share of the machine's cores busy in the run's window, the share of it used by
    everything outside the run: other work on a shared machine)."""
    capacity = run["wall"] * cores
    return sum(run["cpu"].values()) / capacity, run["cpu"].get("everything else", 0.0) / capacity


def scale_table(runs: list[dict[str, Any]], cores: int) -> list[str]:
    """One row per run: its replicas, rate, CPU per submission of each process group (a
    service's summed over its replicas) and of all, the machine's busy share, the load."""
    names = [*SCALED, "rabbitmq", "postgresql", "load generator", "everything else"]
    rows = ["| replicas | submissions/s | " + " | ".join(names) + " | all | cores busy (others)"
            " | load 1 min (start -> end) |", "|---" * (len(names) + 5) + "|"]
    for run in runs:
        handled = max(1, run["handled"])
        busy, others = machine_share(run, cores)
        cells = [f"{1000 * run['cpu'].get(name, 0.0) / handled:.2f}" for name in names]
        rows.append(f"| {run['replicas']} | {run['rate']:,.0f} | " + " | ".join(cells)
                    + f" | {1000 * sum(run['cpu'].values()) / handled:.2f}"
                    f" | {busy:.0%} ({others:.0%}) | {run['load'][0]:.2f} -> {run['load'][1]:.2f} |")
    return rows


def scale_section(runs: list[dict[str, Any]], cores: int) -> list[str]:
    return [f"### Scaling out: 1 and {max(r['replicas'] for r in runs)} replicas of intake and"
            " quality-monitor",
            f"The same throughput run ({runs[0]['n']:,} queued submissions, sustained from 10%"
            " to 70%) with each service as one process and as several on the same queues"
            " (competing consumers, as `docker compose up --scale`), alternated; CPU per"
            " submission in ms by process group (a service's summed over its replicas), the"
            " share of the cores busy in the window (and of it, other work on the machine),"
            " and the 1-minute load average.", "", *scale_table(runs, cores), "",
            f"- {scale_verdict(runs, cores)}", ""]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def scale_verdict(runs: list[dict[str, Any]], cores: int) -> str:
    """The gain of the replicas (median rates) and what limits it, from the figures: the
    machine's cores all busy (CPU-bound: then the run's own CPU per submission says what the
    cores could carry, against what one process of the busiest service could), or one
    process group at a full core per process (a serial step), or neither (the time goes to
    waiting: commits, confirms, locks)."""
    one = [r for r in runs if r["replicas"] == 1]
    many = [r for r in runs if r["replicas"] > 1]
    if not one or not many:
        return "(no comparison: runs of one replica and of more are both needed)"
    replicas = many[0]["replicas"]
    rate1, rate_n = median([r["rate"] for r in one]), median([r["rate"] for r in many])

    def cost(rs: list[dict[str, Any]], names: tuple[str, ...] | None = None) -> float:
        """CPU per submission (ms) of ``names`` (default: all the run's own processes, other
        work on the machine not), the median of the runs."""
        return median([1000 * sum(v for k, v in r["cpu"].items()
                                  if (k in names if names else k != "everything else"))
                       / max(1, r["handled"]) for r in rs])

    busy = median([machine_share(r, cores)[0] for r in many])
    others = median([machine_share(r, cores)[1] for r in many])
    gain = (f"{replicas} replicas: {rate_n:,.0f} submissions/s against {rate1:,.0f} with one"
            f" ({rate_n / rate1:.2f} x; medians of {len(many)} and {len(one)} runs)")
    if busy >= 0.9:
        own1, own_n = cost(one), cost(many)
        busiest = max(SCALED, key=lambda name: cost(one, (name,)))
        single = 1000 / cost(one, (busiest,))
        cap1, cap_n = cores * 1000 / own1, cores * 1000 / own_n
        bound = (f"the cores bind before any one process does: replicas add processes, not"
                 f" cores, and pay off only where a service's process is the bound (more"
                 f" cores, the broker and database elsewhere: up to ~{single:,.0f}/s per"
                 f" replica of {busiest})" if cap1 < single else
                 f"one process of {busiest} binds before the cores: replicas help up to the"
                 f" cores' ~{cap_n:,.0f}/s")
        return (f"{gain}. What limits it: the CPU. The {cores} cores were {busy:.0%} busy with"
                f" {replicas} replicas ({others:.0%} of the machine other work, so the run had"
                f" {busy - others:.0%} of it), so more processes can only share the same"
                f" cycles. The run's own CPU per submission (services, broker, database, load"
                f" generator) went from {own1:.2f} ms to {own_n:.2f} ms: with the {cores}"
                f" cores to itself it would reach ~{cap1:,.0f}/s with one replica and"
                f" ~{cap_n:,.0f}/s with {replicas}; one process of {busiest} at a full core"
                f" ({cost(one, (busiest,)):.2f} ms per submission) ~{single:,.0f}/s: {bound}.")
    run = many[0]
    groups = {name: run["cpu"].get(name, 0.0) / run["wall"] / (replicas if name in SCALED
                                                                 else 1)
              for name in run["cpu"] if name != "everything else"}
    name, core = max(groups.items(), key=lambda kv: kv[1])
    if core >= 0.9:
        return (f"{gain}. What limits it: {name}, at {core:.0%} of a core per process, while"
                f" the {cores} cores were {busy:.0%} busy: a step that does not spread.")
    return (f"{gain}. What limits it: not the CPU (the {cores} cores {busy:.0%} busy, no"
            f" process above {core:.0%} of a core): the time goes to waiting (commits,"
            f" confirms, locks).")


# -- 2c. a national FFT year, extrapolated ----------------------------------------------------
# A national FFT year, as carewatch issue 21 puts it; and the run it asks for, and its target.
NATIONAL_FFT_YEAR = 14_000_000
NATIONAL_ASKED = 2_000_000
NATIONAL_TARGET_SECONDS = 2 * 3600


def extrapolate(count: int, seconds: float, target: int = NATIONAL_FFT_YEAR) -> float:
    """Seconds for ``target`` responses at the rate of ``count`` in ``seconds`` (linear)."""
    if count <= 0 or seconds <= 0:
        raise ValueError("a run of some responses in some time is needed")
    return seconds * target / count


def rate_thirds(samples: list[tuple[float, int]]) -> tuple[float, float]:
    """(rate of the first third, rate of the last third) of a run from its (seconds, stored)
    samples: a run that slows as its tables grow makes a linear extrapolation optimistic."""
    if len(samples) < 4:
        raise ValueError("at least four samples are needed")
    end = samples[-1][0]

    def rate(a: float, b: float) -> float:
        first = min(samples, key=lambda s: abs(s[0] - a))
        last = min(samples, key=lambda s: abs(s[0] - b))
        return (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else 0.0

    start = samples[0][0]
    third = (end - start) / 3
    return rate(start, start + third), rate(end - third, end)


def national_estimate(count: int, seconds: float, samples: list[tuple[float, int]]
                      ) -> dict[str, float]:
    """The national year by the run's average rate and by its last third's rate, and the
    one reported: the slower (a year's tables are larger than any run's)."""
    early, late = rate_thirds(samples)
    by_average = extrapolate(count, seconds)
    by_late = NATIONAL_FFT_YEAR / late if late > 0 else float("inf")
    return {"rate": count / seconds, "early": early, "late": late, "by_average": by_average,
            "by_late": by_late, "year": max(by_average, by_late),
            "asked": extrapolate(count, seconds, NATIONAL_ASKED)}


def own_cpu_cap(run: dict[str, Any], cores: int, target: int = NATIONAL_FFT_YEAR,
                within: float = NATIONAL_TARGET_SECONDS) -> dict[str, float]:
    """What the CPU alone allows, whatever else the machine was doing: the run's own CPU per
    item (its processes': other work on the machine left out), the rate the ``cores``
    would carry at it, ``target`` items at that rate, and the cores ``target`` in
    ``within`` seconds would need at it."""
    own = sum(v for k, v in run["cpu"].items() if k != "everything else") / max(1, run["handled"])
    if own <= 0:
        raise ValueError("no CPU measured")
    return {"ms": 1000 * own, "rate": cores / own, "seconds": target * own / cores,
            "cores": target * own / within}


def bulk_messages(items: list[Item], size: int) -> list[Item]:
    """FFT responses as bulk messages (``BulkSubmissionV1``) of up to ``size`` each, as a
    vendor's export is sent (routing key ``submission.bulk.v1``)."""
    return [Item({"kind": BULK_KIND, "version": 1, "item_kind": "fft_response",
                  "items": [i.body for i in items[k:k + size]]}, "accept")
            for k in range(0, len(items), size)]


async def national_fft(n: int, replicas: int = 1, chunk: int = 20_000,
                       backlog: int = 60_000, bulk: int = 0) -> dict[str, Any]:
    """``n`` FFT responses of a year published while the five services run (``replicas`` of
    intake and quality-monitor), generated and published in chunks with at most ``backlog``
    waiting in the broker (a feed arriving, not a queue of millions), timed to the last one
    stored; extrapolated to a national year. With ``bulk``, the feed sends bulk messages of
    that many responses each rather than one message a response."""
    async with stack() as s:
        for _ in range(replicas):
            s.start(*SCALED)
        s.start(*(name for name in SERVICES if name not in SCALED))
        conn = await asyncpg.connect(s.settings.database_url)
        await s.wait_consuming()
        generator = StreamGenerator(load_providers(), seed=31)
        responses = generator.fft_year(n, 2025)
        sql = "SELECT count(*) FROM monitor.feedback"
        run = uuid.uuid4().hex[:8]
        meter = s.cpu().start()
        load0 = os.getloadavg()[0]
        started = time.perf_counter()
        samples: list[tuple[float, int]] = [(0.0, 0)]
        sent = stored = 0
        last_log = moved = started
        while True:
            if sent < n:
                items = list(itertools.islice(responses, chunk))
                sent += len(items)
                if bulk:
                    items = bulk_messages(items, bulk)
                await publish_items(items, url=s.settings.amqp_url,
                                    namespace=s.settings.namespace,
                                    run=f"{run}-{sent // chunk:05d}")
            # Waits on the services' progress: until there is room for the next chunk, or
            # (everything sent) until the last response is stored.
            while True:
                now = time.perf_counter()
                count = await conn.fetchval(sql)
                if count > stored:
                    stored, moved = count, now
                samples.append((now - started, count))
                if now - last_log > 30:
                    log(f"  {count:,}/{n:,} stored ({count / (now - started):.0f}/s)")
                    last_log = now
                if count >= n or (sent < n and count >= sent - backlog):
                    break
                if now - moved > 300:
                    raise TimeoutError(f"national FFT: {count}/{n}, no progress for 300 s")
                await asyncio.sleep(0.5)
            if stored >= n:
                break
        elapsed = time.perf_counter() - started
        wall, cpu = meter.read()
        load1 = os.getloadavg()[0]
        await conn.close()
        return {"n": n, "accepted": generator.expected.accepted, "seconds": elapsed,
                "samples": samples, "cpu": cpu, "wall": wall, "handled": n,
                "replicas": replicas, "load": (load0, load1), "backlog": backlog,
                "bulk": bulk, "estimate": national_estimate(n, elapsed, samples)}


async def national_runs(n: int, replicas: int = 1, bulk: int = 0,
                        bulk_n: int = 0) -> list[dict[str, Any]]:
    """The national FFT run one message a response, then (with ``bulk``) ``bulk_n`` responses
    (``n`` if not given) in bulk messages."""
    runs = [await national_fft(n, replicas)]
    if bulk:
        runs.append(await national_fft(bulk_n or n, replicas, bulk=bulk))
    return runs


def national_sections(runs: list[dict[str, Any]], cores: int) -> list[str]:
    """Each national run; and, with both, the bulk run beside the one-message-a-response."""
    lines = [line for run in runs for line in national_section(run, cores)]
    if len(runs) == 2:
        one, bulk = runs
        a, b = own_cpu_cap(one, cores), own_cpu_cap(bulk, cores)
        lines += [f"Bulk messages of {bulk['bulk']:,} beside one message a response"
                  f" ({bulk['n']:,} and {one['n']:,} responses):"
                  f" {bulk['estimate']['rate'] / one['estimate']['rate']:.2f} x the rate,"
                  f" {b['ms']:.2f} ms of CPU per response against {a['ms']:.2f} ms"
                  f" ({b['ms'] / a['ms']:.0%}).", ""]
    return lines


def national_section(run: dict[str, Any], cores: int) -> list[str]:
    e = run["estimate"]
    cap = own_cpu_cap(run, cores)
    hours = e["year"] / 3600
    verdict = ("within" if e["year"] <= NATIONAL_TARGET_SECONDS else "over")
    asked = ("the size the issue asks for" if run["n"] >= NATIONAL_ASKED else
             f"**not** the {NATIONAL_ASKED:,} the issue asks for: {run['n'] / NATIONAL_ASKED:.1%}"
             f" of it, sized to finish in minutes on this host (that run would take about"
             f" {e['asked'] / 60:.0f} minutes at this rate; `--national {NATIONAL_ASKED}` runs"
             f" it)")
    how = (f"in bulk messages of {run['bulk']:,} (`--national-bulk {run['bulk']}"
           f" --national-bulk-responses {run['n']}`)"
           if run.get("bulk") else "one message a response")
    return [
        f"## A national FFT year (extrapolated), {how}",
        f"- Run: **{run['n']:,} FFT responses** of one year across the registry's providers,"
        f" published as a feed {how} (at most {run['backlog']:,} responses waiting) while all"
        f" five services ran"
        f" ({run['replicas']} of intake and quality-monitor), timed to the last stored:"
        f" {run['seconds'] / 60:.1f} minutes, {e['rate']:,.0f}/s (first third"
        f" {e['early']:,.0f}/s, last third {e['late']:,.0f}/s; load"
        f" {run['load'][0]:.2f} -> {run['load'][1]:.2f}). This is {asked}.",
        f"- A national year of {NATIONAL_FFT_YEAR:,} responses, **extrapolated** linearly"
        f" from that run (at the slower of its average and its last third's rate):"
        f" **{hours:.1f} hours** on this machine, {verdict} the target of"
        f" {NATIONAL_TARGET_SECONDS / 3600:.0f} hours (which needs"
        f" {NATIONAL_FFT_YEAR / NATIONAL_TARGET_SECONDS:,.0f}/s). An extrapolation, not a"
        f" measurement: the registry has {len(load_providers())} providers, a national year"
        f" thousands, and tables {NATIONAL_FFT_YEAR // max(1, run['n']):,} times larger.",
        f"- What the CPU alone allows, other work on this shared machine left out: the run's"
        f" own processes used {cap['ms']:.2f} ms of CPU per response, so the {cores} cores to"
        f" itself would carry ~{cap['rate']:,.0f}/s, a national year in"
        f" ~{cap['seconds'] / 3600:.1f} hours at best; {NATIONAL_TARGET_SECONDS / 3600:.0f}"
        f" hours would need ~{cap['cores']:.1f} cores at this CPU per response.", "",
        f"CPU per response by process ({run['handled']:,} responses in {run['wall']:.0f} s):",
        "", *cpu_table(run, cores), ""]


async def profile(s: Stack, seconds: int) -> dict[str, str]:
    """py-spy top functions of each running service (needs ptrace; root here)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(py_spy):
        return {}
    out = {}
    running = []
    for name, procs in s.procs.items():
        path = ROOT / "var" / f"profile-{name}.txt"
        proc = await asyncio.create_subprocess_exec(
            py_spy, "record", "--pid", str(procs[0].pid), "--duration", str(seconds),
            "--format", "raw", "--output", str(path), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        out[name] = str(path)
        running.append(proc)
    await asyncio.gather(*(proc.wait() for proc in running))
    return {name: summarise_profile(Path(path)) for name, path in out.items()}


def summarise_profile(path: Path, top: int = 8) -> str:
    """Self time of the hottest frames from a py-spy raw (collapsed stacks) file."""
    if not path.exists():
        return "(no profile)"
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        # Attribute time to the innermost frame of our own code, or of the library.
        mine = next((f for f in reversed(frames) if "/work/main/" in f or "services" in f
                     or "shared" in f), leaf)
        key = f"{leaf.split(' (')[0]}  <- {mine.split(' (')[0]}" if mine != leaf else leaf
        own[key] = own.get(key, 0) + int(count)
        total += int(count)
    rows = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    return "\n".join(f"    {100 * c / total:5.1f}%  {k[:110]}" for k, c in rows)


# -- 3. serious-risk latency ------------------------------------------------------------------
class MailClock:
    """A real SMTP server recording when each meeting's invitation was accepted."""

    def __init__(self) -> None:
        # Every invitation each meeting sent (a provider's later concern joins its open
        # meeting, and the updated invitation is the one that tells of it).
        self.accepted: dict[str, list[float]] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.time()
        msg = message_from_bytes(envelope.content, policy=policy.default)
        for part in msg.walk():
            if part.get_content_type() == "text/calendar":
                payload = part.get_payload(decode=True)
                text = payload.decode() if isinstance(payload, bytes) else str(payload)
                for line in text.splitlines():
                    if line.startswith("UID:meeting-"):
                        self.accepted.setdefault(line[12:48], []).append(now)
        return "250 OK"


def serious_complaint(ods: str, subject: KO41aSubject, record_id: str) -> Item:
    return Item({"kind": "complaint", "version": 1, "ods_code": ods, "record_id": record_id,
                 "received_on": date.today().isoformat(), "subject_area": subject.value,
                 "description": "My father died after staff failed to escalate his"
                                " deteriorating observations.",
                 "risk": {"consequence": 5, "likelihood": 4}}, "accept", "serious")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


async def latency(samples: int, background_rate: float) -> dict[str, Any]:
    from aiosmtpd.controller import Controller

    port = free_port()
    clock = MailClock()
    controller = Controller(clock, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        async with stack(smtp_port=port) as s:
            s.start(*SERVICES)
            conn = await asyncpg.connect(s.settings.database_url)
            await s.wait_consuming()
            background = None
            if background_rate:
                # Enough for every sample (0.2-0.4 s each) to run under the load; cancelled after.
                items, _ = stream(int(background_rate * (samples * 0.4 + 30)), seed=5)
                background = asyncio.create_task(publish_items(
                    items, url=s.settings.amqp_url, namespace=s.settings.namespace,
                    run="bg" + uuid.uuid4().hex[:6], rate=background_rate, window=50))
                await asyncio.sleep(5)
            pairs = [(p["ods_code"], subj) for p in load_providers() for subj in KO41aSubject]
            random.Random(3).shuffle(pairs)
            published: dict[str, float] = {}
            missed = joined = 0
            to_meeting: list[float] = []
            to_mail: list[float] = []
            stages: dict[str, list[float]] = {}
            # The feed's connection is open before the clock starts: its set-up is the feed's
            # cost, not carewatch's. The clock runs from the publish to the confirm as well.
            feed = await aio_pika.connect(s.settings.amqp_url)
            channel = await feed.channel(publisher_confirms=True, on_return_raises=True)
            submissions = await channel.get_exchange(f"{s.settings.namespace}.submissions")
            for i in range(samples):
                ods, subject = pairs[i]
                record = f"LAT-{uuid.uuid4().hex[:10]}"
                item = serious_complaint(ods, subject, record)
                published[record] = time.time()
                await submissions.publish(aio_pika.Message(
                    item.raw(), content_type="application/json", user_id="guest",
                    message_id=record, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="submission.complaint.v1", mandatory=True)
                try:
                    meeting = await poll_meeting(conn, ods, record, timeout=30)
                    to_meeting.append(meeting[1] - published[record])
                    marks = (published[record], *meeting[2], meeting[1])
                    for stage, (a, b) in zip(STAGES, itertools.pairwise(marks), strict=True):
                        stages.setdefault(stage, []).append(b - a)
                    if meeting[3]:
                        to_mail.append(await wait_mail(clock, meeting[0], published[record],
                                                       timeout=30) - published[record])
                    else:
                        joined += 1
                except TimeoutError:
                    missed += 1  # counted against the figures, not hidden
                await asyncio.sleep(0.2 + random.random() * 0.1)
            await feed.close()
            if background:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await background
            await conn.close()
            return {"meeting": to_meeting, "mail": to_mail, "missed": missed,
                    "stages": stages, "joined": joined}
    finally:
        controller.stop()


# Where the time to the meeting went: when each service's transaction began, as PostgreSQL
# recorded it (the row's received_at / updated_at defaults are the transaction's start).
STAGES = ("to intake's transaction", "intake to quality-monitor", "quality-monitor to"
          " escalation", "escalation's transaction to committed")


async def poll_meeting(conn: asyncpg.Connection, ods: str, record: str, timeout: float
                       ) -> tuple[str, float, tuple[float, float, float], bool]:
    """The meeting whose agenda holds ``ods``'s complaint ``record``: its id, when it was seen
    committed, the start times of intake's, quality-monitor's and escalation's transactions,
    and whether the concern opened the meeting (False: it joined the provider's open one)."""
    deadline = time.time() + timeout
    sql = ("SELECT m.meeting_id::text AS meeting, extract(epoch FROM f.received_at) AS intake,"
           " extract(epoch FROM mf.received_at) AS monitor,"
           " extract(epoch FROM c.updated_at) AS escalation,"
           " m.concern_id = mc.concern_id AS opened"
           # On the agenda of a meeting: a provider's first serious concern opens one, a
           # later one joins the meeting already open (issue 17).
           " FROM escalation.meeting_concerns mc JOIN escalation.meetings m USING (meeting_id)"
           " JOIN escalation.concerns c ON c.concern_id = mc.concern_id"
           " JOIN escalation.concern_evidence e ON e.concern_id = mc.concern_id"
           " JOIN intake.feedback f ON e.feedback_id = f.feedback_id"
           " JOIN monitor.feedback mf ON mf.feedback_id = f.feedback_id"
           # By the provider's key, an index look-up: a scan of the growing feedback table
           # every 5 ms would load the database the figures are measuring.
           " WHERE f.ods_code = $1 AND f.provider_record_id = $2")
    while time.time() < deadline:
        row = await conn.fetchrow(sql, ods, record)
        if row:
            return row["meeting"], time.time(), (float(row["intake"]), float(row["monitor"]),
                                                 float(row["escalation"])), row["opened"]
        await asyncio.sleep(0.005)
    raise TimeoutError(f"no meeting for {record}")


async def wait_mail(clock: MailClock, meeting_id: str, since: float, timeout: float) -> float:
    """When the meeting's first invitation sent after ``since`` was accepted."""
    deadline = time.time() + timeout
    while True:
        sent = [t for t in clock.accepted.get(meeting_id, ()) if t >= since]
        if sent:
            return min(sent)
        if time.time() > deadline:
            raise TimeoutError(f"no e-mail for meeting {meeting_id}")
        await asyncio.sleep(0.005)


# -- 5. an ICB's year -------------------------------------------------------------------------
def fft_in_bulk(items: list[Item], size: int) -> list[Item]:
    """The stream with its FFT responses sent as their vendors export them: each run of
    ``size`` responses as one bulk message, where its last response fell in the stream; the
    other submissions one message each, in their order. The stream's bad and duplicated FFT
    responses go in the bulk messages too; intake admits each item as it would alone, so
    the same ones are stored."""
    out: list[Item] = []
    held: list[Item] = []
    for item in items:
        if item.kind == "fft_response":
            held.append(item)
            if len(held) == size:
                out += bulk_messages(held, size)
                held = []
        else:
            out.append(item)
    return out + (bulk_messages(held, size) if held else [])


async def icb_year(n: int, bulk: int = 0) -> dict[str, Any]:
    """``n`` submissions of an ICB's year published while the five services run, timed to
    the last one stored; with ``bulk``, the FFT responses in bulk messages of that many."""
    async with stack() as s:
        items, accepted = stream(n, seed=23)
        if bulk:
            items = fft_in_bulk(items, bulk)
        log(f"  publishing {n} submissions ({len(items):,} messages) with all five services"
            " running")
        s.start(*SERVICES)
        conn = await asyncpg.connect(s.settings.database_url)
        await s.wait_consuming()
        meter = s.cpu().start()
        started = time.perf_counter()
        publishing = asyncio.create_task(publish_items(
            items, url=s.settings.amqp_url, namespace=s.settings.namespace,
            run=uuid.uuid4().hex[:8]))
        probing = asyncio.create_task(serious_during_backlog(s, publishing))
        progress: list[tuple[float, int]] = []
        await wait_for(conn, "SELECT count(*) FROM monitor.feedback", accepted, 7200, "ICB year",
                       progress)
        await publishing
        elapsed = time.perf_counter() - started
        wall, cpu = meter.read()
        # It stops by itself at its next probe (the publishing done and the backlog gone).
        probes = await asyncio.wait_for(probing, 120)
        rss = s.rss_mib()
        # The workspace's pages over the year it consumed.
        from tools.workspace_pages import page_latency

        pages = await page_latency(s.settings.database_url)
        await conn.close()
        return {"n": n, "accepted": accepted, "seconds": elapsed, "rss": rss, "cpu": cpu,
                "wall": wall, "handled": accepted, "probes": probes, "pages": pages,
                "progress": progress, "bulk": bulk, "messages": len(items)}


async def serious_during_backlog(s: Stack, publishing: asyncio.Task[Any],
                                 every: float = 15.0) -> dict[str, Any]:
    """While the year drains, a serious complaint every ``every`` seconds: publish to meeting
    committed, with intake's routine backlog (ready messages) when it was published."""
    conn = await asyncpg.connect(s.settings.database_url)
    feed = await aio_pika.connect(s.settings.amqp_url)
    out: dict[str, Any] = {"meeting": [], "backlog": [], "missed": 0}
    try:
        channel = await feed.channel(publisher_confirms=True, on_return_raises=True)
        submissions = await channel.get_exchange(f"{s.settings.namespace}.submissions")
        pairs = [(p["ods_code"], subj) for p in load_providers() for subj in KO41aSubject]
        random.Random(7).shuffle(pairs)
        for ods, subject in pairs:
            await asyncio.sleep(every)
            queue = await channel.declare_queue(f"{s.settings.namespace}.intake.submissions",
                                                passive=True)
            backlog = queue.declaration_result.message_count or 0
            if publishing.done() and backlog == 0:
                break
            record = f"PROBE-{uuid.uuid4().hex[:10]}"
            published = time.time()
            await submissions.publish(aio_pika.Message(
                serious_complaint(ods, subject, record).raw(), content_type="application/json",
                user_id="guest", message_id=record,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="submission.complaint.v1", mandatory=True)
            try:
                meeting = await poll_meeting(conn, ods, record, timeout=60)
                out["meeting"].append(meeting[1] - published)
                out["backlog"].append(backlog)
                marks = (published, *meeting[2], meeting[1])
                for stage, (a, b) in zip(STAGES, itertools.pairwise(marks), strict=True):
                    out.setdefault("stages", {}).setdefault(stage, []).append(b - a)
            except TimeoutError:
                out["missed"] += 1  # counted against the figures, not hidden
    finally:
        await feed.close()
        await conn.close()
    return out


# -- the report -------------------------------------------------------------------------------
def machine() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    mem = next((int(line.split()[1]) // 1024 // 1024 for line in
                Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0)
    versions = []
    for cmd in (["rabbitmqctl", "version"], ["psql", "--version"]):
        with contextlib.suppress(Exception):
            versions.append(subprocess.run(cmd, capture_output=True, text=True,
                                           timeout=20).stdout.strip())
    return [f"- CPU: {os.cpu_count()} cores, {cpu}", f"- Memory: {mem} GiB",
            f"- Python {platform.python_version()} on {platform.platform()}",
            f"- RabbitMQ {versions[0] if versions else '?'}; "
            f"{versions[1] if len(versions) > 1 else 'PostgreSQL ?'}",
            "- Broker, database and services all on this one machine."]


def cpu_table(run: dict[str, Any], cores: int) -> list[str]:
    """Where the cores went during a run: CPU per submission and share of the machine."""
    wall, handled = run["wall"], max(1, run["handled"])
    rows = ["| process | CPU per submission | share of the machine |", "|---|---|---|"]
    total = 0.0
    for name, seconds in sorted(run["cpu"].items(), key=lambda kv: -kv[1]):
        total += seconds
        rows.append(f"| {name} | {1000 * seconds / handled:.2f} ms | {seconds / wall / cores:.0%} |")
    rows.append(f"| **all** | **{1000 * total / handled:.2f} ms** | **{total / wall / cores:.0%}** |")
    return rows


def previous_analysis(path: Path) -> list[str]:
    """The engineers' analysis in the last BENCHMARKS.md, kept (and marked as such) so that
    a re-run does not erase what was learnt; its figures are those of the run it names."""
    if not path.exists():
        return []
    text = path.read_text()
    marker = "\n## Analysis"
    if marker not in text:
        return []
    return ["## Analysis", *text.split(marker, 1)[1].splitlines()[1:]]


def stats(values: list[float], missed: int = 0) -> str:
    if not values:
        return f"no sample completed ({missed} over 30 s)"
    late = f"; {missed} not within 30 s" if missed else ""
    return (f"p50 {percentile(values, 50) * 1000:.0f} ms, p95 {percentile(values, 95) * 1000:.0f}"
            f" ms, p99 {percentile(values, 99) * 1000:.0f} ms (n={len(values)},"
            f" max {max(values) * 1000:.0f} ms{late})")


# What a newcomer types most: the list of commands and the list commands. `--help` of a
# command imports everything the command does (its module and what that imports), without
# needing a broker or a database.
CLI_COMMANDS = (("--help",), ("concerns", "list", "--help"), ("meetings", "list", "--help"),
                ("quarantine", "list", "--help"), ("status", "--help"))
CLI_TARGET = 0.5  # seconds


def cli_startup(runs: int = 10) -> dict[str, list[float]]:
    """Wall time of `carewatch ...` for each of CLI_COMMANDS, ``runs`` times each."""
    exe = str(Path(sys.executable).with_name("carewatch"))
    times: dict[str, list[float]] = {}
    for args in CLI_COMMANDS:
        name = " ".join(["carewatch", *args])
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([exe, *args], stdout=subprocess.DEVNULL, check=True, cwd=ROOT)
            times.setdefault(name, []).append(time.perf_counter() - started)
    return times


def cli_table(times: dict[str, list[float]]) -> list[str]:
    rows = ["| command | median | max |", "|---|---|---|"]
    for name, values in times.items():
        values = sorted(values)
        rows.append(f"| `{name}` | {values[len(values) // 2] * 1000:.0f} ms |"
                    f" {values[-1] * 1000:.0f} ms |")
    return [*rows, "", f"Target: under {CLI_TARGET * 1000:.0f} ms (the median)."]


# -- free text: the harm pipeline ---------------------------------------------------------------
def _harm_fields(n: int, seed: int) -> list[str]:
    """``n`` free-text fields of one to four sentences of the harm corpus (tests/data/harm),
    drawn at random: distinct texts, the length of a complaint's description."""
    corpus = [json.loads(line)["text"] for name in ("dev.jsonl", "test.jsonl")
              for line in (ROOT / "tests" / "data" / "harm" / name).read_text().splitlines()
              if line.strip()]
    rng = random.Random(seed)
    return [" ".join(rng.sample(corpus, rng.randint(1, 4))) for _ in range(n)]


def _fft_fields(n: int, seed: int) -> list[str]:
    """``n`` FFT-comment-like fields: one or two of the stream's FFT comments ("Waited too long
    to be seen.") and the corpus's ordinary sentences (dev_ordinary.jsonl), drawn at random."""
    from tools.stream import _FFT_NEGATIVE, _FFT_POSITIVE

    path = ROOT / "tests" / "data" / "harm" / "dev_ordinary.jsonl"
    pool = [t for t in _FFT_POSITIVE + _FFT_NEGATIVE if t]
    pool += [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    return [" ".join(rng.sample(pool, rng.randint(1, 2))) for _ in range(n)]


async def _loop_stall(work: Any) -> tuple[float, float]:
    """(the longest the event loop went without a turn, the wall time) while ``work`` ran."""
    longest = 0.0
    done = False

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = time.perf_counter()
    await work()
    wall = time.perf_counter() - start
    done = True
    await task
    return longest, wall


def _init_harm_worker() -> None:
    from services.quality_monitor.harm import pipeline
    pipeline.analyser()


async def harm_text(fields: int = 20_000, seed: int = 7, mix: str = "corpus"
                    ) -> dict[str, Any]:
    """The clinical-text harm pipeline alone, in this process: fields per CPU second (one
    core), the time to build it, and how long the event loop waits while long texts are
    read inline, on the pipeline's thread (what quality-monitor does) or in a process pool."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from services.quality_monitor.harm import pipeline

    start = time.perf_counter()
    pipeline.analyser()
    build = time.perf_counter() - start
    texts = _fft_fields(fields, seed) if mix == "fft" else _harm_fields(fields, seed)
    for text in texts[:200]:  # warm up
        pipeline.mentions(text)
    cpu, wall = time.process_time(), time.perf_counter()
    found = sum(bool(pipeline.mentions(text)) for text in texts)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    short = max(len(t) for t in texts)
    reads: list[float] = []
    for text in texts[:2000]:
        t0 = time.perf_counter()
        pipeline.mentions(text)
        reads.append((time.perf_counter() - t0) * 1000)
    big = [" ".join(_harm_fields(60, seed + n)) for n in range(10)]  # ~20,000 characters each
    modes: dict[str, tuple[float, float]] = {}

    async def inline() -> None:
        for text in big:
            pipeline.analyser()._mentions(text)  # the whole text at once, on the loop

    async def pieces() -> None:
        for text in big:
            await pipeline.read_harm(text)

    async def thread() -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as one:
            for text in big:
                await loop.run_in_executor(one, pipeline.mentions, text)

    modes["inline"] = await _loop_stall(inline)
    modes["pieces"] = await _loop_stall(pieces)
    modes["thread"] = await _loop_stall(thread)
    with ProcessPoolExecutor(1, initializer=_init_harm_worker) as pool:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, pipeline.mentions, "warm up")

        async def process() -> None:
            for text in big:
                await loop.run_in_executor(pool, pipeline.mentions, text)

        modes["process"] = await _loop_stall(process)
    return {"fields": fields, "mix": mix, "cpu": cpu, "wall": wall, "rate": fields / cpu,
            "build": build,
            "flagged": found, "mean_chars": sum(map(len, texts)) / len(texts),
            "max_chars": short, "reads_ms": reads,
            "big_chars": sum(map(len, big)) / len(big), "modes": modes,
            "piece_chars": pipeline.CHUNK_CHARS}


def workspace_section(p: dict[str, Any]) -> list[str]:
    """The workspace's pages over the read model its handlers built from an events-shaped
    year (``tools/workspace_pages.py``)."""
    sizes, events = p["sizes"], p["events"]
    rows = [f"| {page} | {p[page]['p50']:.0f} | {p[page]['p95']:.0f} |"
            for page in ("overview", "provider", "meeting", "reviews") if page in p]
    return ["## The workspace's pages over an events-shaped year",
            f"{sum(events.values()):,} events of a year ({events.get('concern.raised.v1', 0):,}"
            f" concerns over {sizes['providers']} providers, {sizes['meetings']:,} meetings,"
            f" {sizes['meeting_replies']:,} replies, {sizes['actions']:,} actions,"
            f" {sizes['timeline']:,} timeline lines) handed to the workspace's own handlers"
            f" ({p['built_seconds']:.0f} s), then each page rendered 100 times in-process as the"
            " quality lead (`python -m tools.bench --only workspace`). Target: p95 under"
            " 200 ms.", "", "| page | p50 ms | p95 ms |", "|---|---|---|", *rows, ""]


def harm_section(h: dict[str, Any]) -> list[str]:
    lines = [
        "## Free text: the harm pipeline",
        f"- {h['fields']:,} free-text fields ("
        + ("one or two FFT comments and ordinary sentences (--harm-mix fft)"
           if h.get("mix") == "fft" else "one to four sentences of tests/data/harm at random")
        + f", {h['mean_chars']:.0f} characters on average) read by the clinical-text"
        f" pipeline in one process: **{h['rate']:,.0f} fields/s per core** ({h['cpu']:.1f} CPU"
        f" seconds; {h['flagged']:,} flagged). Target: 2,000/s. Built once per process in"
        f" {h['build']:.1f} s.",
        f"- One field read (up to {h['max_chars']:,} characters), 2,000 reads: p50"
        f" {percentile(h['reads_ms'], 50):.2f} ms, p99 {percentile(h['reads_ms'], 99):.2f} ms,"
        f" max {max(h['reads_ms']):.1f} ms (the machine is shared); quality-monitor reads a field in pieces of whole"
        f" sentences of about {h['piece_chars']:,} characters, the loop getting a turn"
        " between pieces.",
        f"- Ten long texts (~{h['big_chars']:,.0f} characters each): the longest the event loop"
        " waited for a turn, and the wall time for the ten:", "",
        "| where the long texts are read | longest wait of the loop | wall time |",
        "|---|---|---|"]
    names = {"inline": "whole, on the loop", "pieces": "in pieces on the loop (used)",
             "thread": "a thread", "process": "a process pool"}
    for mode, (stall, wall) in h["modes"].items():
        lines.append(f"| {names[mode]} | {stall * 1000:.1f} ms | {wall:.2f} s |")
    return [*lines, ""]


async def main(args: argparse.Namespace) -> None:
    from tools import workspace_pages  # it imports this module (percentile)

    if args.cli_only:
        print("\n".join(cli_table(cli_startup(args.cli_runs))))
        return
    if args.only == "harm":
        h = await harm_text(args.harm_fields, mix=args.harm_mix)
        print("\n".join(harm_section(h)))
        return
    if args.only == "reports":
        print("\n".join(reports_section(await monthly_packs(args.report_providers))))
        return
    if args.only == "throughput":
        fair = await fair_ceiling.run(*stream(args.throughput, seed=11))
        t = await throughput(args.throughput, 0)
        cores = os.cpu_count() or 1
        print("\n".join([
            f"fair ceiling {fair['rate']:,.0f} submissions/s; carewatch {t['rate']:,.0f}"
            f" submissions/s = {t['rate'] / fair['rate']:.2f} x (load"
            f" {t['load'][0]:.2f} -> {t['load'][1]:.2f})", "", "fair ceiling:",
            *cpu_table(fair, cores), "", "carewatch:", *cpu_table(t, cores)]))
        if args.replicas and args.replicas > 1:
            scaled = await scale_runs(args.throughput, args.replicas, args.rounds, first=t)
            print("\n".join(["", *scale_section(scaled, cores)]))
        return
    if args.only == "year":
        for bulk in (0, args.year_bulk) if args.year_bulk else (0,):
            year = await icb_year(args.year, bulk)
            first, last = rate_thirds(year["progress"])
            how = f", FFT responses in bulk messages of {bulk}" if bulk else ""
            print("\n".join([
                f"an ICB's year{how}: {year['n']:,} submissions ({year['accepted']:,} valid,"
                f" {year['messages']:,} messages) drained in {year['seconds']:.0f} s"
                f" ({year['n'] / year['seconds']:,.0f}/s end to end); stored {first:,.0f}/s in"
                f" the first third of the time, {last:,.0f}/s in the last;"
                f" serious complaints to the meeting"
                f" {stats(year['probes']['meeting'], year['probes']['missed'])}",
                *(f"  {stage}: {stats(year['probes'].get('stages', {}).get(stage, []))}"
                  for stage in STAGES), "",
                *cpu_table(year, os.cpu_count() or 1), ""]))
        return
    if args.only in ("national", "national-bulk"):
        cores = os.cpu_count() or 1
        fft_runs = (await national_runs(args.national, args.national_replicas,
                                        args.national_bulk, args.national_bulk_responses)
                    if args.only == "national" else
                    [await national_fft(args.national_bulk_responses, args.national_replicas,
                                        bulk=args.national_bulk or 500)])
        print("\n".join(national_sections(fft_runs, cores)))
        return
    if args.only == "latency":
        runs = {"idle": await latency(args.samples, 0)}
        if args.load:
            runs[f"{args.load:.0f}/s"] = await latency(args.samples, args.load)
        for name, run in runs.items():
            print(f"{name}: to meeting {stats(run['meeting'], run['missed'])};"
                  f" to e-mail {stats(run['mail'], run['missed'])}; {run['joined']} joined an"
                  " open meeting")
        return
    if args.only == "workspace":
        print("\n".join(workspace_section(await workspace_pages.measure(ADMIN_DSN))))
        return
    (ROOT / "var").mkdir(exist_ok=True)
    report: list[str] = ["# Benchmarks", "",
                         f"`make bench` on {datetime.now():%Y-%m-%d %H:%M}, one run"
                         f" (`{' '.join(['python -m tools.bench', *sys.argv[1:]])}`).", "",
                         "## Machine", *machine(), ""]
    args.replicas = 2 if args.replicas is None else args.replicas
    steps = 10 + (args.replicas > 1) + bool(args.national) + bool(args.year_bulk)
    done = 0

    def step(what: str) -> None:
        nonlocal done
        done += 1
        log(f"{done}/{steps} {what}")

    step("CLI start-up")
    cli = cli_startup(args.cli_runs)
    step("raw ceiling")
    ceiling = await raw_ceiling(args.ceiling)
    log(f"  {ceiling:.0f} msgs/s")
    step("the fair ceiling: the same two hops by a minimal hand-written pipeline")
    fair = await fair_ceiling.run(*stream(args.throughput, seed=11))
    log(f"  {fair['rate']:.0f} submissions/s")
    step("throughput through intake and quality-monitor")
    t = await throughput(args.throughput, args.profile)
    log(f"  {t['rate']:.0f} submissions/s")
    scale = []
    if args.replicas > 1:
        step(f"the same with {args.replicas} replicas of intake and quality-monitor,"
            f" alternated with one ({args.rounds} round(s))")
        scale = await scale_runs(args.throughput, args.replicas, args.rounds, first=t)
    step("latency at idle")
    idle = await latency(args.samples, 0)
    log(f"  meeting {stats(idle['meeting'])}")
    step(f"latency with {args.load:.0f} submissions/s of background load")
    loaded = await latency(args.samples, args.load)
    log(f"  meeting {stats(loaded['meeting'])}")
    step(f"an ICB's year ({args.year} submissions)")
    year = await icb_year(args.year)
    log(f"  {year['seconds']:.0f} s")
    year_bulk = None
    if args.year_bulk:
        step(f"the same year, its FFT responses in bulk messages of {args.year_bulk}")
        year_bulk = await icb_year(args.year, args.year_bulk)
        log(f"  {year_bulk['seconds']:.0f} s")
    national = None
    if args.national:
        step(f"{args.national:,} FFT responses, extrapolated to a national year")
        national = await national_runs(args.national, args.national_replicas,
                                       args.national_bulk, args.national_bulk_responses)
        for run in national:
            log(f"  {'bulk ' if run['bulk'] else ''}{run['seconds']:.0f} s; a national year"
                f" ~{run['estimate']['year'] / 3600:.1f} h (extrapolated)")
    step("the harm pipeline on free text")
    harm = await harm_text(args.harm_fields)
    log(f"  {harm['rate']:.0f} fields/s per core")
    step(f"the monthly CQRM packs of {args.report_providers} providers")
    packs = await monthly_packs(args.report_providers)
    log(f"  {packs['seconds']:.1f} s")
    step("the workspace's pages over an events-shaped year of its own")
    pages = await workspace_pages.measure(ADMIN_DSN)
    log(f"  overview p95 {pages['overview']['p95']:.0f} ms")
    report += [
        "## Throughput",
        f"- Raw ceiling (aio-pika consumer, id inserted in batches of 100, multi-ack, quorum"
        f" queue, persistent, {args.ceiling} messages of ~609 bytes): **{ceiling:,.0f} msgs/s**.",
        f"- carewatch through intake and quality-monitor, everything persisted (validation,"
        f" redaction, de-duplication, feedback stored, outbox relayed with confirms, monitor"
        f" inbox and rules), sustained from 10% to 70% of {t['n']:,} realistic"
        f" submissions: **{t['rate']:,.0f} submissions/s**, **{t['rate'] / ceiling:.0%} of the"
        f" ceiling**, **{t['rate'] / fair['rate']:.2f} x the fair ceiling**.",
        f"- The fair ceiling (`tools/ceiling.py`): the same two hops of durable work by a"
        f" minimal hand-written pipeline on the same libraries, stream and queue arguments"
        f" (validate, authorise, redact, store the row and an outbox row per batch, publish"
        f" with confirms in flight; then inbox and copy rows per batch, multi-ack):"
        f" **{fair['rate']:,.0f} submissions/s**. Target: carewatch at 1.0 x or more.", "",
        f"CPU per submission by process, fair ceiling ({fair['handled']:,} submissions in"
        f" {fair['wall']:.0f} s):", "", *cpu_table(fair, os.cpu_count() or 1), "",
        *(scale_section(scale, os.cpu_count() or 1) if scale else []),
        "## Latency of a serious risk",
        "Publish of a serious complaint (a distinct provider and theme each time) to the"
        " remedial-action meeting committed with the concern on its agenda, and to the"
        " invitation accepted by the SMTP server (a provider's first serious concern opens a"
        " meeting; a later one joins the meeting already open, its updated invitation"
        " announced with the others of its burst after the coalescing window, so only the"
        " first invitations are timed to the e-mail).", "",
        "| load | to meeting | to e-mail |", "|---|---|---|",
        f"| idle | {stats(idle['meeting'], idle['missed'])} | {stats(idle['mail'], idle['missed'])} |",
        f"| {args.load:.0f} submissions/s | {stats(loaded['meeting'], loaded['missed'])} |"
        f" {stats(loaded['mail'], loaded['missed'])} |",
        "", f"Samples that joined an open meeting: {idle['joined']} idle,"
        f" {loaded['joined']} under load.",
        "", "Targets: p99 under 0.5 s to the meeting and under 2 s to the e-mail.", "",
        "Where the time to the meeting went, from the start of each service's transaction as"
        " PostgreSQL recorded it (the publisher's and PostgreSQL's clocks are this machine's):",
        "", "| stage | idle | " + f"{args.load:.0f} submissions/s |", "|---|---|---|",
        *(f"| {stage} | {stats(idle['stages'].get(stage, []))} |"
          f" {stats(loaded['stages'].get(stage, []))} |" for stage in STAGES), "",
        "## Memory (RSS at steady state)",
        *(f"- {name}: {mib:.0f} MiB" for name, mib in sorted(year["rss"].items())), "",
        "## An ICB's year",
        f"- {year['n']:,} submissions ({year['accepted']:,} valid) published while all five"
        f" services ran: drained in **{year['seconds'] / 60:.1f} minutes**"
        f" ({year['n'] / year['seconds']:,.0f}/s end to end).",
        f"- A serious complaint published every 15 s while the year drained, behind a backlog"
        f" of {min(year['probes']['backlog'], default=0):,} to"
        f" {max(year['probes']['backlog'], default=0):,} submissions in intake's routine queue:"
        f" to the meeting {stats(year['probes']['meeting'], year['probes']['missed'])}"
        f" (the urgent lanes at work).",
        f"- The workspace's pages over that year (in-process, {year['pages']['sizes']['concerns']:,}"
        f" concerns in its read model): overview p95 {year['pages']['overview']['p95']:.0f} ms"
        f" (p50 {year['pages']['overview']['p50']:.0f}), the busiest provider's profile p95"
        f" {year['pages']['provider']['p95']:.0f} ms (p50 {year['pages']['provider']['p50']:.0f})"
        " (target: p95 under 200 ms).",
        "- Target for the year: under 3 minutes.",
        *([f"- The same year with its FFT responses sent as their vendors export them, in"
           f" bulk messages"
           f" of {year_bulk['bulk']} ({year_bulk['messages']:,} messages in all): drained in"
           f" **{year_bulk['seconds'] / 60:.1f} minutes**"
           f" ({year_bulk['n'] / year_bulk['seconds']:,.0f}/s end to end); the serious"
           f" complaints to the meeting"
           f" {stats(year_bulk['probes']['meeting'], year_bulk['probes']['missed'])}."]
          if year_bulk else []), "",
        *(national_sections(national, os.cpu_count() or 1) if national else []),
    ]
    report += ["## CLI start-up",
               f"`carewatch` as a newcomer calls it, {args.cli_runs} runs each (no broker or"
               " database needed: `--help` imports what the command imports).", "",
               *cli_table(cli), ""]
    report += workspace_section(pages)
    report += harm_section(harm)
    report += reports_section(packs)
    if t["profiles"]:
        report += ["## Where the time goes (py-spy, self time, during the throughput run)"]
        for name, text in t["profiles"].items():
            report += [f"{name}:", "```", text, "```"]
    cores = os.cpu_count() or 1
    report += [
        "## Where the cores went",
        f"CPU seconds of each process over the measured window, per submission handled, and"
        f" as a share of this machine's {cores} cores (the broker's and the database's"
        " processes included).", "",
        f"Throughput run ({t['handled']:,} submissions through intake and quality-monitor in"
        f" {t['wall']:.0f} s):", "", *cpu_table(t, cores), "",
        f"An ICB's year ({year['handled']:,} submissions through all five services, the load"
        f" generator publishing alongside, {year['wall']:.0f} s):", "",
        *cpu_table(year, cores), "",
        *([f"The same year, its FFT responses in bulk messages of {year_bulk['bulk']}"
           f" ({year_bulk['wall']:.0f} s):", "", *cpu_table(year_bulk, cores), ""]
          if year_bulk else [])]
    report += redaction_report(args.redaction_size)
    out = Path(args.out)
    report += previous_analysis(out) or ["## Analysis", "(written by the engineers after a run)", ""]
    out.write_text("\n".join(report).rstrip() + "\n")
    log(f"wrote {out}")


def redaction_texts(size: int) -> dict[str, str]:
    """Texts of ``size`` characters for :func:`redaction_throughput`: realistic free text
    (the redaction corpus, repeated) and adversarial shapes, each aimed at a pattern's worst
    case (a long run of e-mail characters with no ``@``, digits and separators, cue words,
    postcode-like tokens, invisible characters, one run of digits, ``0044``, dashes, near
    misses of a postcode and of a date then an age, a character whose lower case is longer
    (which turns off the windows); repeated digit groups that are, and are not, numbers;
    the widest gap between digits, and one blank more; long runs of separators; many
    ``@``; long words before an ``@``)."""
    corpus = [json.loads(line)["text"] for line in (
        ROOT / "tests/unit/redaction_corpus.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()]
    shapes = {
        "normal": " ".join(corpus) + " ",
        "email chars, no @": "a",
        "dotted words, no @": "a.",
        "@ and hyphens": "a@a-",
        "spaced digits": "1 ",
        "dotted digits": "12.",
        "cue words": "born in DOB ",
        "spelled-out at": "x at y dot ",
        "postcode-like": "SW1A ",
        "zero-width digits": "\u200b9",
        "one digit run": "1",
        "zeros": "0",
        "0044 prefixes": "0044 ",
        "dashes between digits": "1\u2013",
        "near-miss postcodes": "X1 1AA ",
        "year then bracket": "1938 (",
        "cue then digit": "born on 1 ",
        "no-same-length lower case": "\u0130a@a-",
        # Repeated digit groups (every group starts a candidate for each number pattern).
        "+44 prefixes": "+44 ",
        "0044 then a number": "0044 7700 900461 ",
        "NHS numbers": "943 476 5919 ",
        "phone numbers": "07700 900461 ",
        "random digit groups": _random_digit_groups(),
        # Gaps and separators: the widest gap that joins digits, one blank more, and long
        # runs of separators.
        "12-blank gaps": "1" + " " * 12,
        "13-blank gaps": "1" + " " * 13,
        "separators": "-./ ",
        # Many @, and long words before one.
        "@ only": "@",
        "a@": "a@",
        "long words then @": "a" * 64 + "@",
        "cue then date": "DOB 03/04/1941 ",
    }
    return {name: (unit * (size // len(unit) + 1))[:size] for name, unit in shapes.items()}


def _random_digit_groups() -> str:
    """Groups of 1-5 random digits joined by the separators numbers may have (seeded: the
    same text on every run): Modulus 11 passes about one candidate in eleven."""
    rng = random.Random(14)
    return "".join(
        "".join(rng.choices("0123456789", k=rng.randint(1, 5))) + rng.choice(" ..--/ \n")
        for _ in range(2_000))


def redaction_throughput(size: int = 1_000_000) -> dict[str, float]:
    """Redaction speed in MB/s (characters, as UTF-8 is mostly ASCII here) on each text of
    :func:`redaction_texts`: the best of three runs, in CPU time (redaction is synchronous,
    one thread: its CPU time is the time it holds the event loop, and other processes on
    the machine do not count)."""
    from services.intake.redaction import redact
    rates = {}
    for name, text in redaction_texts(size).items():
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            redact(text)
            best = min(best, time.process_time() - start)
        rates[name] = len(text) / best / 1e6
    return rates


def redaction_report(size: int) -> list[str]:
    rates = redaction_throughput(size)
    worst = min((r, n) for n, r in rates.items() if n != "normal")
    return ["## Redaction", f"intake's redaction of free text, {size:,} characters at once,"
            f" best of three in CPU time (`python -m tools.bench --redaction-only`): normal text"
            f" **{rates['normal']:.3g} MB/s**; adversarial text at worst **{worst[0]:.3g}"
            f" MB/s** ({worst[1]}: {1e3 / worst[0]:.0f} ms per MB).", "",
            "| text | MB/s | ms per MB |", "|---|---|---|",
            *(f"| {name} | {rate:.3g} | {1e3 / rate:.0f} |" for name, rate in rates.items()),
            ""]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ceiling", type=int, default=50_000)
    p.add_argument("--throughput", type=int, default=50_000)
    # 200: with 100, the p99 is the single worst sample.
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--load", type=float, default=500.0)
    p.add_argument("--year", type=int, default=330_000)
    p.add_argument("--profile", type=int, default=10, help="seconds of py-spy (0: none)")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="the report to write")
    p.add_argument("--cli-runs", type=int, default=10, help="runs of each CLI command timed")
    p.add_argument("--cli-only", action="store_true",
                   help="time the CLI's start-up only (prints the table; no services needed)")
    p.add_argument("--redaction-size", type=int, default=1_000_000,
                   help="characters of each text the redaction figure redacts at once")
    p.add_argument("--redaction-only", action="store_true",
                   help="measure redaction alone (no broker, no database) and print it")
    p.add_argument("--harm-fields", type=int, default=20_000,
                   help="free-text fields for the harm pipeline's figure")
    p.add_argument("--harm-mix", choices=["corpus", "fft"], default="corpus",
                   help="with --only harm: the corpus's sentences (the figure) or FFT-comment-like"
                        " fields (the stream's comments and ordinary sentences)")
    p.add_argument("--report-providers", type=int, default=100,
                   help="providers whose monthly CQRM packs are timed")
    p.add_argument("--replicas", type=int,
                   help="replicas of intake and quality-monitor in the scaled throughput run,"
                        " reported beside one replica (the full run: 2 unless given; with"
                        " --only throughput: none unless given; 1: none)")
    p.add_argument("--rounds", type=int, default=1,
                   help="rounds of the one-replica and scaled throughput runs, alternated")
    p.add_argument("--year-bulk", type=int, default=500,
                   help="after the year one message a submission, the same year with its FFT"
                        " responses in bulk messages of this many (0: none)")
    p.add_argument("--national", type=int, default=100_000,
                   help="FFT responses, one message each, run to extrapolate a national"
                        " year (14 million) from (0: none; the bulk run is the 2,000,000 the"
                        " issue asks for)")
    p.add_argument("--national-bulk", type=int, default=500,
                   help="after the national run one message a response, a run of"
                        " --national-bulk-responses in bulk messages (submission.bulk.v1) of"
                        " this many responses (0: none; at"
                        f" most {MAX_BULK_ITEMS:,})")
    p.add_argument("--national-bulk-responses", type=int, default=2_000_000,
                   help="FFT responses of the bulk-message run (and of --only national-bulk):"
                        " the 2,000,000 the issue asks for, about 7 minutes here")
    p.add_argument("--national-replicas", type=int, default=1,
                   help="replicas of intake and quality-monitor in the national FFT run")
    p.add_argument("--only", choices=["harm", "reports", "workspace", "throughput", "latency",
                                      "national", "national-bulk", "year"],
                   help="run one figure alone and print it (BENCHMARKS.md is not written)")
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.redaction_only:
        print("\n".join(redaction_report(arguments.redaction_size)))
    else:
        asyncio.run(main(arguments))
