"""The measures' monthly series, loaded from quality-monitor's tables: FFT from returns and
responses (see fft.py for the rule), complaints and GP alerts counted per month."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.quality_monitor import fft, store
from services.quality_monitor.series import (
    COUNTED_KINDS,
    Series,
    count_series,
    fft_month_series,
    month_start,
    shift_month,
)
from shared.groupcommit import Batch


async def load_fft_months(batch: Batch, ods_code: str, setting: str,
                          closed: str) -> tuple[list[fft.Month], dict[str, list[Any]]]:
    """A provider's FFT months in one setting from its returns and its responses (a return
    wins its month; responses count once their month has closed: ``closed`` is the latest
    closed month), and the items behind each month, (feedback id, date): the returns, or up
    to 20 of the month's poor and very poor responses."""
    before = month_start(shift_month(closed, 1))
    returns = await store.fft_returns(batch.conn, ods_code, setting)
    responses = await store.fft_response_counts(batch, ods_code, setting, before)
    months = fft.combine(returns, responses, closed)
    behind: dict[str, list[Any]] = {}
    for r in returns:
        behind.setdefault(r["period"], []).append((r["feedback_id"], month_start(r["period"])))
    from_returns = {m.period for m in months if m.source == "return"}
    if len(from_returns) < len(months):
        for r in await store.fft_response_evidence(batch, ods_code, setting, fft.NEGATIVE, before):
            if r["period"] not in from_returns:
                behind.setdefault(r["period"], []).append((r["feedback_id"], r["occurred_on"]))
    return months, behind



async def load_series(conn: asyncpg.Connection, ods_code: str, metric: str, setting: str,
                      closed: str, until: str | None = None) -> Series:
    """The monthly series quality-monitor judges: counts and FFT responses to ``closed`` (the
    latest closed month), FFT returns as they arrived; or, when ``until`` is given (a person
    asking for a month), everything up to ``until``."""
    last = until or closed
    if metric in COUNTED_KINDS:
        rows = await store.feedback_dates(Batch(conn), ods_code, COUNTED_KINDS[metric],
                                          month_start(shift_month(last, 1)))
        return count_series([(r["feedback_id"], r["occurred_on"]) for r in rows], last)
    months, behind = await load_fft_months(Batch(conn), ods_code, setting, last)
    return fft_month_series([m for m in months if until is None or m.period <= until], metric,
                            behind)
