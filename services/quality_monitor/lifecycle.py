"""When concerns resolve and when the monthly and daily reviews fall due. Pure functions.

- A concern resolves when escalation closes it (``concern.closed.v1``), or when its signal
  returns to common cause for the configured period:
  SPC: the latest N points in a row carry no concern signal; peer outlier: the provider is
  within the upper 99.8% limit in its latest N months; cluster: a whole window has passed
  since the last item with fewer than N items in the window that ends today; visit: a later
  visit to the service is rated good or outstanding; service change: a later notice for the
  service has no failings; complaint handling: the share is below the threshold at a month's
  close.
- Months close ``month_close_days`` after they end (Europe/London): only then are a month's
  complaints and GP alerts counted, so late-arriving items are in. FFT months arrive as
  monthly returns and are charted as they arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.quality_monitor.series import month_of, month_start, shift_month

LONDON = ZoneInfo("Europe/London")


def month_close_at(month: str, close_days: int) -> datetime:
    """When ``month`` (YYYY-MM) is closed: midnight London, ``close_days`` after it ends."""
    first_of_next = month_start(shift_month(month, 1))
    return datetime.combine(first_of_next + timedelta(days=close_days), time(0), LONDON)


def last_closed_month(now: datetime, close_days: int) -> str:
    """The latest month whose close time is not after ``now``."""
    month = shift_month(month_of(now.astimezone(LONDON).date()), -1)
    while month_close_at(month, close_days) > now:
        month = shift_month(month, -1)
    return month


def next_daily_review(now: datetime, at: time) -> datetime:
    """The first daily review time (London wall clock) strictly after ``now``."""
    local = now.astimezone(LONDON)
    candidate = datetime.combine(local.date(), at, LONDON)
    if candidate <= now:
        candidate = datetime.combine(local.date() + timedelta(days=1), at, LONDON)
    return candidate


def today_in_london(now: datetime) -> date:
    return now.astimezone(LONDON).date()


def spc_resolved(common_cause_tail: int, needed: int) -> bool:
    return common_cause_tail >= needed


def outlier_resolved(latest_first_outlier_flags: Sequence[bool], needed: int) -> bool:
    """True when the latest ``needed`` months (newest first) are all within the limit."""
    recent = list(latest_first_outlier_flags[:needed])
    return len(recent) >= needed and not any(recent)


def visit_resolves(rating: str) -> bool:
    return rating in ("good", "outstanding")
