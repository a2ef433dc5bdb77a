"""Charts for people: SPC (XmR) charts and funnel plots, as SVG or PNG.

Making Data Count colours (as NHSRplotthedots draws them): grey common cause, orange special
cause of concern, blue special cause of improvement; the mean as a solid line and the
process limits as dashed lines, per rebase group (a vertical line where the series was
rebased); the target as a red dashed line. The variation and assurance icons sit top right,
and a subtitle says in plain English what the latest month shows.

Funnel plots name providers (not ODS codes alone), label only the outliers and the selected
provider, and move labels apart so that none overlaps another; the subtitle says what the
chart shows and a footnote explains any widening of the limits for overdispersion.

Drawn with matplotlib's object API (no global state), so it is safe in a server process.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal

import asyncpg
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import Bbox

from services.quality_monitor import fft, spc, store
from services.quality_monitor.config import MonitorRules
from services.quality_monitor.funnel import Z95, Z998, Band, Funnel, Unit, funnel
from services.quality_monitor.lifecycle import last_closed_month
from services.quality_monitor.measures import load_series
from services.quality_monitor.series import ALL_SETTINGS, METRICS
from services.quality_monitor.spc import Chart, Direction, PointType, describe
from shared.groupcommit import Batch

GREY = "#7B7D7D"
ORANGE = "#FAB428"
BLUE = "#289DE0"
LINE = "#231F20"
NHS_BLUE = "#005EB8"
TARGET = "#DE2F2F"
POINT_COLOURS = {PointType.COMMON_CAUSE: GREY, PointType.CONCERN: ORANGE,
                 PointType.IMPROVEMENT: BLUE}
BAND_COLOURS = {Band.ABOVE_998: ORANGE, Band.ABOVE_95: "#FDDDA0", Band.WITHIN: GREY,
                Band.BELOW_95: "#A9D8F3", Band.BELOW_998: BLUE}
Format = Literal["svg", "png"]
MEDIA: dict[str, str] = {"svg": "image/svg+xml", "png": "image/png"}


def render(fig: Figure, fmt: Format = "png") -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _png(fig: Figure) -> bytes:
    return render(fig, "png")


# -- icons ---------------------------------------------------------------------------------------

VARIATION_ICON = {  # icon -> (colour, letter)
    "common_cause": (GREY, ""), "concern_high": (ORANGE, "H"), "concern_low": (ORANGE, "L"),
    "improvement_high": (BLUE, "H"), "improvement_low": (BLUE, "L")}
ASSURANCE_ICON = {spc.Assurance.PASS: (BLUE, "P"), spc.Assurance.FAIL: (ORANGE, "F"),
                  spc.Assurance.HIT_AND_MISS: (GREY, "?")}


def _icon(fig: Figure, x: float, colour: str, letter: str, caption: str) -> None:
    ax = fig.add_axes((x, 0.905, 0.06, 0.085))
    ax.set_aspect("equal")
    ax.axis("off")
    ax.add_patch(Circle((0.5, 0.5), 0.45, facecolor="white", edgecolor=colour, linewidth=3))
    ax.text(0.5, 0.5, letter, ha="center", va="center", fontsize=12, fontweight="bold",
            color=colour)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.text(x + 0.03, 0.895, caption, ha="center", va="top", fontsize=7, color=LINE)


# -- SPC -----------------------------------------------------------------------------------------

def _subtitle(periods: Sequence[str], chart: Chart, concern: Direction, value: str,
              assurance: spc.Assurance | None, target: float | None, unit: str) -> str:
    kind = chart.point_types(concern)[-1]
    latest = [s for s in chart.signals if len(chart.values) - 1 in s.points]
    if kind is PointType.CONCERN:
        what = f"a change for the worse that chance does not explain ({describe(latest)})"
    elif kind is PointType.IMPROVEMENT:
        what = f"a change for the better that chance does not explain ({describe(latest)})"
    else:
        what = "within what this service usually does (common cause variation)"
    text = f"Latest month ({periods[-1]}): {value}, {what}."
    if assurance is not None and target is not None:
        meets = {spc.Assurance.PASS: "will consistently meet",
                 spc.Assurance.FAIL: "will consistently miss",
                 spc.Assurance.HIT_AND_MISS: "will sometimes meet and sometimes miss"}
        text += f"\nAgainst the target of {target:g}{unit}, the process {meets[assurance]} it."
    return text


def spc_figure(title: str, periods: Sequence[str], chart: Chart, concern: Direction, *,
               y_label: str = "", percent: bool = False, target: float | None = None,
               rebase_notes: Mapping[int, str] | None = None) -> Figure:
    """An XmR chart: the series, its mean and process limits (per rebase group), the
    target, points coloured by variation, the icons and a plain-English subtitle."""
    types = chart.point_types(concern)
    xs = list(range(len(periods)))
    unit = "%" if percent else ""
    fig = Figure(figsize=(10, 5.6))
    ax = fig.add_axes((0.08, 0.14, 0.7, 0.6))
    ax.plot(xs, chart.values, color=GREY, linewidth=1.2, zorder=1)
    ax.scatter(xs, chart.values, c=[POINT_COLOURS[t] for t in types], s=46, zorder=3,
               edgecolors="white", linewidths=0.6)
    for k, g in enumerate(chart.groups):
        span = [g.start - 0.4, g.end - 0.6]
        lim = g.limits
        last = k == len(chart.groups) - 1
        ax.plot(span, [lim.mean] * 2, color=LINE, linewidth=1.1,
                label=f"mean {lim.mean:.2f}{unit}" if last else None)
        for y in (lim.upper, lim.lower):
            ax.plot(span, [y] * 2, color=LINE, linewidth=1, linestyle="--",
                    label=(f"process limits {lim.lower:.2f} to {lim.upper:.2f}{unit}"
                           if last and y == lim.upper else None))
        if g.start > 0:
            ax.axvline(g.start - 0.5, color=NHS_BLUE, linewidth=1, linestyle="-.")
            note = (rebase_notes or {}).get(g.start, "")
            ax.annotate(f"rebased from {periods[g.start]}" + (f": {note}" if note else ""),
                        (g.start - 0.45, 1.0), xycoords=("data", "axes fraction"),
                        fontsize=7, color=NHS_BLUE, va="top")
    if target is not None:
        ax.axhline(target, color=TARGET, linewidth=1.2, linestyle=(0, (5, 3)),
                   label=f"target {target:g}{unit}")
    for t, name in ((PointType.CONCERN, "special cause: concern"),
                    (PointType.IMPROVEMENT, "special cause: improvement"),
                    (PointType.COMMON_CAUSE, "common cause")):
        if t in types:
            ax.scatter([], [], c=POINT_COLOURS[t], s=46, label=name)
    ax.set_xticks(xs)
    ax.set_xticklabels(periods, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(y_label + (" (%)" if percent and "%" not in y_label else ""))
    ax.grid(axis="y", color="#E8EDEE")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 0.8), frameon=False)
    icon = spc.variation_icon(types[-1], concern)
    assurance = spc.assurance(chart.limits, target, concern)
    value = f"{chart.values[-1]:.1f}{unit}" if percent else f"{chart.values[-1]:g}"
    fig.text(0.02, 0.985, title, fontsize=12, fontweight="bold", va="top")
    subtitle = _subtitle(periods, chart, concern, value, assurance, target, unit)
    fig.text(0.02, 0.93, "\n".join(textwrap.fill(line, 100) for line in subtitle.split("\n")),
             fontsize=9, va="top")
    _icon(fig, 0.80, *VARIATION_ICON[icon], "variation")
    if assurance is not None:
        _icon(fig, 0.88, *ASSURANCE_ICON[assurance], "assurance")
    return fig


def spc_png(title: str, periods: Sequence[str], chart: Chart, concern: Direction, *,
            y_label: str = "", percent: bool = False, target: float | None = None) -> bytes:
    return _png(spc_figure(title, periods, chart, concern, y_label=y_label, percent=percent,
                           target=target))


# -- funnel --------------------------------------------------------------------------------------

def _renderer(fig: Figure) -> RendererAgg:
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    return canvas.get_renderer()


def _text_box(t: Text, renderer: RendererAgg) -> Bbox:
    """The box of a label's text (an annotation's own extent includes its arrow)."""
    return Text.get_window_extent(t, renderer)


def _separate(texts: Sequence[Text], fig: Figure, down: bool, gap: float = 2.0) -> None:
    """Move labels apart in display space until none overlaps another: the highest first,
    moving down (``down``: labels above the average stay inside the chart), or the lowest
    first, moving up."""
    renderer = _renderer(fig)
    placed: list[Bbox] = []
    sign = -1 if down else 1
    for t in sorted(texts, key=lambda t: sign * _text_box(t, renderer).y0):
        for _ in range(len(texts) + 1):
            box = _text_box(t, renderer)
            hit = [p for p in placed if p.overlaps(box)]
            if not hit:
                break
            move = (min(p.y0 for p in hit) - box.y1 - gap) if down else (
                max(p.y1 for p in hit) - box.y0 + gap)  # pixels
            x, y = t.get_position()  # offset points
            t.set_position((x, y + move * 72 / fig.dpi))
        placed.append(_text_box(t, renderer))


def label_boxes(fig: Figure) -> list[Bbox]:
    """The boxes of the provider labels of a funnel figure (tests check overlaps)."""
    renderer = _renderer(fig)
    return [_text_box(t, renderer) for ax in fig.axes for t in ax.texts
            if t.get_gid() == "provider-label"]


def funnel_figure(title: str, f: Funnel, *, names: Mapping[str, str] | None = None,
                  selected: str | None = None, y_label: str = "% negative") -> Figure:
    """A funnel plot: each provider's proportion against its responses, the average, and
    the 95% and 99.8% limits; labels for the outliers and the selected provider only."""
    names = names or {}
    fig = Figure(figsize=(9, 6.6))
    ax = fig.add_axes((0.1, 0.16, 0.68, 0.62))
    ns = [p.n for p in f.points]
    low, high = max(min(ns) * 0.5, 5), max(ns) * 1.5
    grid = [low * (high / low) ** (i / 199) for i in range(200)]
    for z, style, name in ((Z95, ":", "95% limits"), (Z998, "--", "99.8% limits")):
        lower = [100 * f.limits(n, z)[0] for n in grid]
        upper = [100 * f.limits(n, z)[1] for n in grid]
        ax.plot(grid, upper, color=LINE, linestyle=style, linewidth=1, label=name)
        ax.plot(grid, lower, color=LINE, linestyle=style, linewidth=1)
    ax.axhline(100 * f.target, color=NHS_BLUE, linewidth=1.1,
               label=f"average of all providers {100 * f.target:.1f}%")
    ax.scatter(ns, [100 * p.proportion for p in f.points], s=48, zorder=3,
               c=[BAND_COLOURS[p.band] for p in f.points], edgecolors=GREY, linewidths=0.6)
    texts: dict[bool, list[Text]] = {True: [], False: []}  # above the average?
    for p in f.points:
        outlier = p.band in (Band.ABOVE_998, Band.BELOW_998)
        if not (outlier or p.key == selected):
            continue
        name = names.get(p.key, p.key)
        label = f"{name} ({p.key})" if name != p.key else p.key
        t = ax.annotate(f"{label}: {100 * p.proportion:.1f}%", (p.n, 100 * p.proportion),
                        textcoords="offset points", xytext=(8, 6), fontsize=8,
                        fontweight="bold" if p.key == selected else "normal",
                        arrowprops={"arrowstyle": "-", "color": GREY, "linewidth": 0.6})
        t.set_gid("provider-label")
        texts[p.proportion > f.target].append(t)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:,.0f}" if v > 0 and f"{v:.0e}"[0] in "25" else ""))
    ax.tick_params(axis="x", which="both", labelsize=8)
    ax.set_xlabel("responses in the month")
    ax.set_ylabel(y_label)
    ax.grid(color="#E8EDEE")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    above = sum(p.band is Band.ABOVE_998 for p in f.points)
    below = sum(p.band is Band.BELOW_998 for p in f.points)
    fig.text(0.02, 0.985, title, fontsize=12, fontweight="bold", va="top")
    fig.text(0.02, 0.935, textwrap.fill(
        f"Each dot is one of {len(f.points)} providers: its share of answers, against how many"
        " people answered. Small providers vary more by chance, so the limits narrow as the"
        f" responses grow. {above} provider(s) above and {below} below the outer (99.8%)"
        " limits: further from the average than chance explains.", 115), fontsize=9, va="top")
    if f.adjusted and f.tau2 > 0:
        note = ("* The limits are widened: providers differ from each other more than chance"
                " alone would explain (overdispersion, ratio"
                f" {f.phi:.2f}), so only a difference beyond that spread is flagged.")
    elif f.phi <= 1:
        note = ("* No widening: the providers differ from each other no more than chance"
                f" explains (overdispersion ratio {f.phi:.2f}, at most 1), so the limits are"
                " those of chance alone.")
    else:
        note = ("* The limits are those of chance alone: providers differ from each other more"
                f" than chance would explain (overdispersion ratio {f.phi:.2f}), and these limits"
                " do not allow for it (overdispersion adjustment switched off).")
    fig.text(0.02, 0.02, textwrap.fill(note, 140), fontsize=7.5, va="bottom", style="italic")
    _separate(texts[True], fig, down=True)
    _separate(texts[False], fig, down=False)
    _separate([*texts[True], *texts[False]], fig, down=False)  # where the two groups meet
    return fig


def funnel_png(title: str, f: Funnel, *, y_label: str = "% negative") -> bytes:
    return _png(funnel_figure(title, f, y_label=y_label))


# -- from quality-monitor's tables -----------------------------------------------------------

async def load_spc(conn: asyncpg.Connection, rules: MonitorRules, now: datetime,
                   provider: str, metric: str, setting: str,
                   until: str | None = None) -> Figure | str:
    """The chart of one provider's measure, or why there is none."""
    if metric not in METRICS:
        return f"unknown metric {metric!r}; one of {', '.join(METRICS)}"
    if metric.startswith("fft_") == (setting == ALL_SETTINGS):
        return "FFT measures need a setting (e.g. inpatient); complaints and GP alerts 'all'"
    measure = METRICS[metric]
    closed = last_closed_month(now, rules.schedule.month_close_days)
    series = await load_series(conn, provider, metric, setting, closed, until)
    ref = await store.provider_ref(conn, provider)
    rebases = [r for r in await store.list_rebases(conn, provider, "accepted")
               if r["metric"] == metric and r["setting"] == setting]
    breaks = spc.breaks_at(series.periods, [r["period"] for r in rebases])
    verdict = spc.assess(series.values, measure.concern, rules.spc.options, breaks)
    if verdict is None:
        return (f"{len(series.values)} months of {measure.label} for {provider}: at least"
                f" {rules.spc.min_points} are needed for a chart")
    notes = {spc.breaks_at(series.periods, [r["period"]])[0]: r["reason"] for r in rebases
             if spc.breaks_at(series.periods, [r["period"]])}
    name = ref.name if ref else provider
    where = "" if setting == ALL_SETTINGS else f" ({setting.replace('_', ' ')})"
    return spc_figure(f"{name} ({provider}): {measure.label}{where}", series.periods,
                      verdict.chart, measure.concern, y_label=measure.label,
                      percent=measure.percent, target=rules.spc.target(metric, setting),
                      rebase_notes=notes)


async def load_funnel(conn: asyncpg.Connection, rules: MonitorRules, now: datetime,
                      setting: str, period: str, selected: str | None = None) -> Figure | str:
    """The funnel of FFT % negative across the providers of one setting and month."""
    closed = period <= last_closed_month(now, rules.schedule.month_close_days)
    rows = await store.fft_period_combined(Batch(conn), setting, period, closed)
    units = [Unit(r["ods_code"], r["negative"], r["responses"]) for r in rows
             if r["responses"] >= fft.SUPPRESS_BELOW]  # 1-4 responses: suppressed
    if len(units) < 2:
        return f"{len(units)} provider(s) with FFT {setting} figures for {period}"
    f = funnel(units, winsorise_by=rules.funnel.winsorise,
               overdispersion=rules.funnel.overdispersion,
               phi_fallback=rules.funnel.phi_fallback)
    names = {r["ods_code"]: r["provider"]["name"] for r in await conn.fetch(
        "SELECT ods_code, provider FROM monitor.providers WHERE ods_code = ANY($1)",
        [u.key for u in units])}
    return funnel_figure(f"FFT: share of answers poor or very poor, {setting.replace('_', ' ')},"
                         f" {period}", f, names=names, selected=selected)
