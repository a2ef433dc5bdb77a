"""Charts for people: SPC (XmR) charts and funnel plots as PNG images.

Making Data Count colours (as NHSRplotthedots draws them): grey common cause, orange special
cause of concern, blue special cause of improvement; the mean as a solid line and the
process limits as dashed lines. Drawn with matplotlib's object API (no global state), so it
is safe in a server process.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from services.quality_monitor.funnel import Z95, Z998, Band, Funnel
from services.quality_monitor.spc import Chart, Direction, PointType, describe

GREY = "#7B7D7D"
ORANGE = "#FAB428"
BLUE = "#289DE0"
LINE = "#231F20"
NHS_BLUE = "#005EB8"
POINT_COLOURS = {PointType.COMMON_CAUSE: GREY, PointType.CONCERN: ORANGE,
                 PointType.IMPROVEMENT: BLUE}
BAND_COLOURS = {Band.ABOVE_998: ORANGE, Band.ABOVE_95: "#FDDDA0", Band.WITHIN: GREY,
                Band.BELOW_95: "#A9D8F3", Band.BELOW_998: BLUE}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def spc_png(title: str, periods: Sequence[str], chart: Chart, concern: Direction, *,
            y_label: str = "", percent: bool = False) -> bytes:
    """An XmR chart: the series, its mean and process limits, points coloured by variation."""
    lim = chart.limits
    types = chart.point_types(concern)
    xs = list(range(len(periods)))
    fig = Figure(figsize=(10, 5))
    ax = fig.subplots()
    ax.plot(xs, chart.values, color=GREY, linewidth=1.2, zorder=1)
    ax.scatter(xs, chart.values, c=[POINT_COLOURS[t] for t in types], s=46, zorder=3,
               edgecolors="white", linewidths=0.6)
    ax.axhline(lim.mean, color=LINE, linewidth=1.1, label=f"mean {lim.mean:.2f}")
    ax.axhline(lim.upper, color=LINE, linewidth=1, linestyle="--",
               label=f"process limits {lim.lower:.2f} to {lim.upper:.2f}")
    ax.axhline(lim.lower, color=LINE, linewidth=1, linestyle="--")
    for t, name in ((PointType.CONCERN, "special cause: concern"),
                    (PointType.IMPROVEMENT, "special cause: improvement"),
                    (PointType.COMMON_CAUSE, "common cause")):
        if t in types:
            ax.scatter([], [], c=POINT_COLOURS[t], s=46, label=name)
    ax.set_xticks(xs)
    ax.set_xticklabels(periods, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(y_label + (" (%)" if percent and "%" not in y_label else ""))
    latest = [s for s in chart.signals if len(chart.values) - 1 in s.points]
    verdict = describe(latest) or "common cause variation"
    ax.set_title(f"{title}\nlatest ({periods[-1]}): {verdict}", fontsize=11, loc="left")
    ax.grid(axis="y", color="#E8EDEE")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def funnel_png(title: str, f: Funnel, *, y_label: str = "% negative") -> bytes:
    """A funnel plot: each provider's proportion against its responses, the target, and the
    95% and 99.8% limits (overdispersion-adjusted when τ² > 0)."""
    fig = Figure(figsize=(9, 6))
    ax = fig.subplots()
    ns = [p.n for p in f.points]
    low, high = max(min(ns) * 0.5, 10), max(ns) * 1.5
    grid = [low * (high / low) ** (i / 199) for i in range(200)]
    for z, style, name in ((Z95, ":", "95% limits"), (Z998, "--", "99.8% limits")):
        lower = [100 * f.limits(n, z)[0] for n in grid]
        upper = [100 * f.limits(n, z)[1] for n in grid]
        ax.plot(grid, upper, color=LINE, linestyle=style, linewidth=1, label=name)
        ax.plot(grid, lower, color=LINE, linestyle=style, linewidth=1)
    ax.axhline(100 * f.target, color=NHS_BLUE, linewidth=1.1,
               label=f"average {100 * f.target:.2f}%")
    ax.scatter(ns, [100 * p.proportion for p in f.points], s=48, zorder=3,
               c=[BAND_COLOURS[p.band] for p in f.points], edgecolors=GREY, linewidths=0.6)
    for p in f.points:
        ax.annotate(p.key, (p.n, 100 * p.proportion), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:,.0f}" if v > 0 and f"{v:.0e}"[0] in "25" else ""))
    ax.tick_params(axis="x", which="both", labelsize=8)
    ax.set_xlabel("responses")
    ax.set_ylabel(y_label)
    adjusted = (f"overdispersion: phi {f.phi:.2f}, tau² {f.tau2:.2g}" if f.tau2 > 0
                else f"no overdispersion adjustment (phi {f.phi:.2f})")
    ax.set_title(f"{title}\n{len(f.points)} providers; {adjusted}", fontsize=11, loc="left")
    ax.grid(color="#E8EDEE")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)
