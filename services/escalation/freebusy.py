"""Unavailable periods from an iCalendar file (RFC 5545): a free/busy export (VFREEBUSY) or a
calendar of events (VEVENT). Pure.

Busy, busy-unavailable and busy-tentative periods count; FREE periods, transparent events
(TRANSP:TRANSPARENT, "show as free") and cancelled events do not. An all-day event blocks its
days from local midnight to midnight. A recurring event (RRULE) is expanded up to
``until``. Each period keeps a stable id (the event's UID and start), so importing the same
file again replaces rather than duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from dateutil.rrule import rrulestr
from icalendar import Calendar


@dataclass(frozen=True)
class BusyPeriod:
    uid: str
    starts_at: datetime
    ends_at: datetime
    reason: str


class CalendarError(ValueError):
    """The file is not an iCalendar file carewatch can read."""


def _as_datetime(value: Any, tz: tzinfo) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    if isinstance(value, date):
        return datetime.combine(value, time(0, 0), tz)
    raise CalendarError(f"not a date or date-time: {value!r}")


def busy_periods(data: bytes, tz: tzinfo, *, since: datetime, until: datetime) -> list[BusyPeriod]:
    """The busy periods of the file that end after ``since`` and start before ``until``."""
    try:
        cal = Calendar.from_ical(data)
    except Exception as exc:  # icalendar raises ValueError and others on bad input
        raise CalendarError(f"not an iCalendar file: {exc}") from exc
    found: list[BusyPeriod] = []
    # icalendar's property types are a wide union: read them as the RFC says they are.
    freebusy: list[Any] = cal.walk("VFREEBUSY")
    events: list[Any] = cal.walk("VEVENT")
    for fb in freebusy:
        uid = str(fb.get("UID", "freebusy"))
        values = fb.get("FREEBUSY") or []
        for prop in values if isinstance(values, list) else [values]:
            if str(prop.params.get("FBTYPE", "BUSY")).upper() == "FREE":
                continue
            start, end_or_duration = prop.dt  # a vPeriod: (start, end or duration)
            begin = _as_datetime(start, tz)
            end = (begin + end_or_duration if isinstance(end_or_duration, timedelta)
                   else _as_datetime(end_or_duration, tz))
            found.append(BusyPeriod(f"{uid}:{begin.isoformat()}", begin, end, "busy"))
    for ev in events:
        if str(ev.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT" \
                or str(ev.get("STATUS", "")).upper() == "CANCELLED":
            continue
        if "DTSTART" not in ev:
            raise CalendarError("an event without DTSTART")
        raw_start = ev["DTSTART"].dt
        start = _as_datetime(raw_start, tz)
        if "DTEND" in ev:
            end = _as_datetime(ev["DTEND"].dt, tz)
        elif "DURATION" in ev:
            end = start + ev["DURATION"].dt
        else:  # RFC 5545: a date lasts a day; a date-time, no time at all
            end = start + (timedelta(days=1) if not isinstance(raw_start, datetime)
                           else timedelta())
        length = end - start
        uid = str(ev.get("UID", f"event:{start.isoformat()}"))
        reason = str(ev.get("SUMMARY", "busy"))[:200]
        starts = [start]
        if "RRULE" in ev:
            rule = rrulestr(ev["RRULE"].to_ical().decode(), dtstart=start)
            starts = list(rule.between(since - length, until, inc=True))
        for s in starts:
            found.append(BusyPeriod(f"{uid}:{s.isoformat()}", s, s + length, reason))
    return sorted((p for p in found if p.ends_at > since and p.starts_at < until
                   and p.ends_at > p.starts_at), key=lambda p: (p.starts_at, p.uid))
