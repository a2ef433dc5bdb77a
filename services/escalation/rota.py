"""Who meets when: the commissioner's people, their capacity, and the slot a meeting takes.
Pure functions over plain data.

Each person has working hours and days, a maximum number of meetings a day, a buffer
between meetings and unavailable periods (leave, other commitments). A meeting needs one
person of each of its roles (a quality lead or deputy, a lay member, and a safeguarding lead
for a safeguarding concern) and the provider free. ``choose_slot`` takes the earliest slot on
the office-hours grid where every role has someone free; among those free it takes the one
with the lightest load, so a rota of several leads shares the work. When nothing fits inside
the window, the earliest slot after it is taken and flagged as a breach, with the reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo

from services.escalation.calendar import Interval, OfficeHours, candidate_slots

DEFAULT_HOURS = OfficeHours()
ROLE_GROUPS: dict[str, tuple[str, ...]] = {
    "commissioner quality lead": ("quality lead", "deputy quality lead"),
    "lay member": ("lay member",),
    "safeguarding lead": ("safeguarding lead",),
}


@dataclass(frozen=True)
class Person:
    email: str
    name: str
    role: str
    works_from: time = time(9, 0)
    works_until: time = time(17, 0)
    working_days: frozenset[int] = frozenset(range(5))  # Monday = 0
    max_meetings_per_day: int = 3
    buffer_minutes: int = 30


@dataclass(frozen=True)
class Diary:
    """A person and what already fills their time."""

    person: Person
    meetings: tuple[Interval, ...] = ()
    unavailable: tuple[Interval, ...] = ()
    load: int = 0  # meetings already given to them lately (the rota's measure)


@dataclass(frozen=True)
class Choice:
    start: datetime
    end: datetime
    deadline: datetime
    breach: bool
    people: dict[str, Person]  # attendee role -> who
    breach_reason: str | None = None


@dataclass
class _Tally:
    """Why slots inside the window were refused, for the breach reason."""

    provider_busy: int = 0
    refused: dict[str, Counter[str]] = field(default_factory=dict)

    def note(self, role: str, why: str) -> None:
        self.refused.setdefault(role, Counter())[why] += 1

    def describe(self, slots: int) -> str:
        parts = [f"{slots} slot(s) inside the window"]
        if self.provider_busy:
            parts.append(f"the provider was already booked in {self.provider_busy}")
        for role, counts in self.refused.items():
            reasons = ", ".join(f"{why} {n}" for why, n in counts.most_common())
            parts.append(f"no {role} free in the others ({reasons})")
        return "; ".join(parts)


def _overlaps(a: Interval, b: Interval) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def why_not(diary: Diary, start: datetime, end: datetime, tz: tzinfo) -> str | None:
    """Why the person cannot take [start, end), or None if they can."""
    p = diary.person
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    day = local_start.date()
    if day.weekday() not in p.working_days:
        return "not a working day"
    if local_start.time() < p.works_from or local_end.date() != day \
            or local_end.time() > p.works_until:
        return "outside working hours"
    if any(_overlaps((start, end), u) for u in diary.unavailable):
        return "unavailable"
    buffer = timedelta(minutes=p.buffer_minutes)
    if any(_overlaps((start, end + buffer), (m[0], m[1] + buffer)) for m in diary.meetings):
        return "busy or inside the buffer"
    on_day = sum(1 for m in diary.meetings if m[0].astimezone(tz).date() == day)
    if on_day >= p.max_meetings_per_day:
        return "at the daily cap"
    return None


def _pick(diaries: Sequence[Diary], start: datetime, end: datetime, tz: tzinfo,
          role: str, tally: _Tally | None) -> Person | None:
    free: list[Diary] = []
    for d in diaries:
        why = why_not(d, start, end, tz)
        if why is None:
            free.append(d)
        elif tally is not None:
            tally.note(role, why)
    if not diaries and tally is not None:
        tally.note(role, "nobody on the rota")
    if not free:
        return None
    return min(free, key=lambda d: (d.load, d.person.email)).person


def choose_slot(now: datetime, *, deadline: datetime, duration: timedelta,
                roles: Mapping[str, Sequence[Diary]], provider_busy: Iterable[Interval],
                hours: OfficeHours = DEFAULT_HOURS,
                minimum_notice: timedelta = timedelta(hours=1),
                horizon: timedelta = timedelta(days=120),
                not_before: datetime | None = None) -> Choice:
    """The earliest slot where the provider and one person of each role are free.

    ``roles`` maps an attendee role (e.g. "commissioner quality lead") to the diaries of the
    people who can fill it. If no slot ends by ``deadline``, the earliest after it, flagged
    as a breach with the reason. LookupError if nothing fits before ``horizon``.
    """
    busy = sorted(provider_busy)
    tally = _Tally()
    inside = 0
    earliest = max(now + minimum_notice, not_before) if not_before else now + minimum_notice
    for start, end in candidate_slots(earliest, duration, hours):
        if start > now + horizon:
            break
        within = end <= deadline
        inside += int(within)
        if any(_overlaps((start, end), b) for b in busy):
            if within:
                tally.provider_busy += 1
            continue
        chosen: dict[str, Person] = {}
        for role, diaries in roles.items():
            person = _pick(diaries, start, end, hours.tz, role, tally if within else None)
            if person is None:
                break
            chosen[role] = person
        else:
            reason = None if within else (
                f"no slot before the deadline {deadline.isoformat()}: "
                + tally.describe(inside))
            return Choice(start, end, deadline, breach=not within, people=chosen,
                          breach_reason=reason)
    raise LookupError(f"no slot for {', '.join(roles)} and the provider before"
                      f" {(now + horizon).date().isoformat()}")


def meetings_per_day(diary_meetings: Iterable[Interval], tz: tzinfo) -> dict[date, int]:
    """How many meetings fall on each local day (for reports and checks)."""
    return dict(Counter(m[0].astimezone(tz).date() for m in diary_meetings))
