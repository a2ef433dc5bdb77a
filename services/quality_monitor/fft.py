"""Friends and Family Test monthly figures from individual responses and monthly returns, the
way NHS England publishes them. Pure functions.

- **Aggregation.** Counts add up ward → site → trust (provider): a level's figures are the sums
  of its answers, never an average of percentages. % positive = (very good + good) / all
  responses, % negative = (poor + very poor) / all responses; "don't know" is a response, in
  the denominator (NHS England's FFT guidance, 2020 onwards).
- **Two sources, one count.** A provider sends either monthly returns (``fft_monthly``, one per
  site, setting and month: NHS England's collection layout) or individual responses
  (``fft_response``), or both. For one provider, setting and month, **a monthly return wins**:
  when any return exists for it, the returns alone are that month's figures and the month's
  responses are not counted (a return is the provider's submission to NHS England and covers
  every mode of collection, paper and SMS included; responses may be a subset). Otherwise the
  month is the sum of its responses. The choice is per provider, setting and month, never per
  site, so a trust-level return and site-level responses are never added together.
- **Small numbers.** NHS England suppresses a figure computed from 1 to 4 responses ("*"). Every
  output a person sees (charts, tables, concern reasons, figures) goes through
  :func:`shown`; a suppressed month is left out of an XmR chart (it is not published) but does
  not break the run of months; a provider with 1-4 responses in a month is left off that
  month's funnel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ANSWERS = ("very_good", "good", "neither_good_nor_poor", "poor", "very_poor", "dont_know")
POSITIVE = ("very_good", "good")
NEGATIVE = ("poor", "very_poor")
SUPPRESS_BELOW = 5  # 1-4 responses: suppressed
SUPPRESSED = "*"


@dataclass(frozen=True)
class Counts:
    """One level's answers in one month (site or provider, one setting)."""

    very_good: int = 0
    good: int = 0
    neither_good_nor_poor: int = 0
    poor: int = 0
    very_poor: int = 0
    dont_know: int = 0

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Counts:
        return cls(**{a: int(row.get(a) or 0) for a in ANSWERS})

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{a: getattr(self, a) + getattr(other, a) for a in ANSWERS})

    @property
    def responses(self) -> int:
        return sum(getattr(self, a) for a in ANSWERS)

    @property
    def positive(self) -> int:
        return self.very_good + self.good

    @property
    def negative(self) -> int:
        return self.poor + self.very_poor

    @property
    def suppressed(self) -> bool:
        return suppressed(self.responses)

    def percent(self, metric: str) -> float | None:
        """% positive or % negative (``fft_positive`` / ``fft_negative``); None without
        responses."""
        if not self.responses:
            return None
        part = self.negative if metric == "fft_negative" else self.positive
        return 100 * part / self.responses


def suppressed(responses: int) -> bool:
    return 0 < responses < SUPPRESS_BELOW


def shown(value: float | None, responses: int, digits: int = 1, unit: str = "%") -> str:
    """A figure as a person may see it: "*" when from 1-4 responses, "-" when none."""
    if responses == 0 or value is None:
        return "-"
    if suppressed(responses):
        return SUPPRESSED
    return f"{value:.{digits}f}{unit}"


def add_up(rows: Iterable[Mapping[str, Any]], keys: tuple[str, ...]) -> dict[tuple[Any, ...], Counts]:
    """Sum answer counts of ``rows`` by ``keys`` (e.g. ward rows by site, site rows by trust)."""
    out: dict[tuple[Any, ...], Counts] = {}
    for r in rows:
        key = tuple(r[k] for k in keys)
        out[key] = out.get(key, Counts()) + Counts.of(r)
    return out


@dataclass(frozen=True)
class Month:
    """A provider's figures for one setting and month, and where they came from."""

    period: str
    counts: Counts
    source: str  # "return" or "responses"
    sites: dict[str, Counts]


def combine(returns: Iterable[Mapping[str, Any]], responses: Iterable[Mapping[str, Any]],
            last_closed: str | None = None) -> list[Month]:
    """One provider's months in one setting from its monthly returns and its responses (rows
    of ``site_code``, ``period`` and the six answer counts), oldest first: a month with any
    return is the returns' (by site, summed); otherwise the responses' (by site, summed), for
    months up to ``last_closed`` only (a month still open is incomplete)."""
    by_return = {k: v for k, v in _by_period_site(returns).items()}
    by_response = _by_period_site(responses)
    months = []
    for period in sorted(set(by_return) | set(by_response)):
        if period in by_return:
            sites, source = by_return[period], "return"
        elif last_closed is None or period <= last_closed:
            sites, source = by_response[period], "responses"
        else:
            continue
        total = Counts()
        for c in sites.values():
            total = total + c
        months.append(Month(period, total, source, sites))
    return months


def _by_period_site(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Counts]]:
    out: dict[str, dict[str, Counts]] = {}
    for (period, site), counts in add_up(rows, ("period", "site_code")).items():
        out.setdefault(period, {})[site or ""] = counts
    return out
