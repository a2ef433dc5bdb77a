"""The quarterly Quality & Performance report across providers. Pure: the quarter's records
of every provider in, a :class:`Report` out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from services.quality_monitor.reports.cqrm import cut, day, unavailable
from services.quality_monitor.reports.document import Cell, Chart, Report, Section, Table
from services.quality_monitor.reports.periods import Period
from services.quality_monitor.reports.sources import EscalationView, within
from services.quality_monitor.summary import Row

KIND = "quality_performance"
COUNTED = {"complaint": "complaints", "gp_alert": "GP alerts", "insight_visit": "visits"}


@dataclass
class QuarterData:
    names: dict[str, str]
    summary: list[Row]
    feedback: list[dict[str, Any]]  # the quarter's complaints, GP alerts and visits
    previous: list[dict[str, Any]]  # the same kinds, the quarter before
    concerns: list[dict[str, Any]]  # open at some time in the quarter
    previous_concerns: list[dict[str, Any]]
    funnels: list[dict[str, Any]] = field(default_factory=list)  # monitor.funnel_results


def _name(d: QuarterData, ods: str) -> str:
    return f"{d.names.get(ods, ods)} ({ods})"


def summary_section(d: QuarterData) -> Section:
    rows: list[list[Cell]] = [
        [_name(d, r.ods_code), r.metric.replace("_", " "), r.setting.replace("_", " "),
         r.period, r.value, r.variation_words, r.assurance_words or "no target"]
        for r in sorted(d.summary, key=lambda r: (r.metric, r.setting, r.ods_code))]
    return Section("Summary of measures", [
        "Each provider's measures at the quarter's last month, as Making Data Count reads them:"
        " the variation icon (common or special cause) and the assurance icon (whether the"
        " target will be met), in words."],
        [Table("summary", "Measure by provider: latest point, variation and assurance",
               ["Provider", "Measure", "Setting", "Month", "Latest", "Variation", "Assurance"],
               rows)])


def funnel_section(d: QuarterData, charts: list[Chart]) -> Section:
    rows: list[list[Cell]] = [
        [f["setting"].replace("_", " "), f["period"], _name(d, f["ods_code"]), f["responses"],
         f"{100 * f['proportion']:.1f}%", f"{100 * f['target']:.1f}%",
         f["band"].replace("_", " ")]
        for f in sorted(d.funnels, key=lambda f: (f["setting"], f["ods_code"]))]
    return Section("Funnel plots: FFT % negative across providers", [
        "Each provider's share of answers that were poor or very poor against the average of"
        " its setting; outside the 99.8% limits is further from the average than chance"
        " explains (the limits widen for overdispersion)."],
        [Table("funnel", "Providers on the funnel of their setting (the quarter's last month)",
               ["Setting", "Month", "Provider", "Responses", "% negative", "Average", "Band"],
               rows)], charts)


def by_provider_and_theme(d: QuarterData) -> Section:
    counts: Counter[tuple[str, str, str]] = Counter(
        (f["ods_code"], COUNTED[f["kind"]], f["theme"] or "other") for f in d.feedback)
    rows: list[list[Cell]] = [[_name(d, ods), kind, theme, n] for (ods, kind, theme), n in
                              sorted(counts.items())]
    visits: list[list[Cell]] = [
        [_name(d, f["ods_code"]), day(f["occurred_on"]), cut(f["content"].get("service"), 80),
         str(f["content"].get("rating", "")).replace("_", " ")]
        for f in d.feedback if f["kind"] == "insight_visit"]
    return Section("Complaints, GP alerts and insight visits by provider and theme", [
        f"{sum(1 for f in d.feedback if f['kind'] == 'complaint')} complaint(s),"
        f" {sum(1 for f in d.feedback if f['kind'] == 'gp_alert')} GP alert(s) and"
        f" {len(visits)} visit(s) in the quarter."],
        [Table("by_provider_theme", "Items by provider, kind and theme",
               ["Provider", "Kind", "Theme", "Items"], rows),
         Table("visits", "Insight and Enter and View visits", ["Provider", "Visited", "Service",
                                                               "Rating"], visits)])


def ladder_section(d: QuarterData, esc: EscalationView) -> Section:
    rows: list[list[Cell]] = [
        [_name(d, c["ods_code"]), c["theme"], c["severity"],
         str(c["level"]).replace("_", " "), c["status"]]
        for c in sorted(esc.concerns, key=lambda c: (c["ods_code"], c["theme"]))
        if c.get("level")]
    return Section("Escalations on the ladder (National Quality Board, 2022)",
                   [*unavailable(esc), f"{len(rows)} concern(s) on the ladder: their"
                                       " current rung, from a remedial meeting up."],
                   [Table("ladder", "Concerns escalated up the ladder",
                          ["Provider", "Theme", "Severity", "Level", "Status"], rows)])


def watch_section(d: QuarterData, esc: EscalationView, p: Period) -> Section:
    rows: list[list[Cell]] = [
        [_name(d, w["ods_code"]), cut(w["item"], 300), day(w["added_at"]), w["status"]]
        for w in esc.watch_list if within(w["added_at"], p) or w["status"] == "open"]
    return Section("The watch list of low concerns", [
        *unavailable(esc), f"{len(rows)} low concern(s) watched this quarter."],
        [Table("watch_list", "Low concerns on the watch list",
               ["Provider", "Item", "Added", "Status"], rows)])


def changes_section(d: QuarterData, p: Period) -> Section:
    now: Counter[tuple[str, str]] = Counter((f["ods_code"], f["kind"]) for f in d.feedback)
    before: Counter[tuple[str, str]] = Counter((f["ods_code"], f["kind"]) for f in d.previous)
    raised = Counter(c["ods_code"] for c in d.concerns if within(c["raised_at"], p)
                     or within(c["first_evidence"], p))
    raised_before = Counter(c["ods_code"] for c in d.previous_concerns
                            if within(c["raised_at"], p.previous())
                            or within(c["first_evidence"], p.previous()))
    providers = sorted({o for o, _ in now} | {o for o, _ in before} | set(raised)
                       | set(raised_before))
    rows: list[list[Cell]] = []
    for ods in providers:
        rows.append([_name(d, ods), now[(ods, "complaint")], before[(ods, "complaint")],
                     now[(ods, "gp_alert")], before[(ods, "gp_alert")], raised[ods],
                     raised_before[ods]])
    return Section("What changed since last quarter", [
        f"Counts for {p.words()} beside {p.previous().words()}."],
        [Table("changes", "This quarter and the last, by provider",
               ["Provider", "Complaints", "Complaints last quarter", "GP alerts",
                "GP alerts last quarter", "Concerns raised", "Concerns raised last quarter"],
               rows)])


def quality_performance(d: QuarterData, esc: EscalationView, p: Period,
                        charts: list[Chart] | None = None) -> Report:
    severities = Counter(c["severity"] for c in d.concerns)
    providers = ({f["ods_code"] for f in d.feedback} | {c["ods_code"] for c in d.concerns}
                 | {r.ods_code for r in d.summary} | {f["ods_code"] for f in d.funnels})
    overview = Section("The quarter at a glance", [
        f"{len(providers)} provider(s) with measures, feedback or concerns;"
        f" {len(d.concerns)} concern(s) open during the"
        f" quarter (" + ", ".join(f"{severities[s]} {s}" for s in ("serious", "high",
                                                                   "moderate", "low")) + ")."])
    return Report(
        kind=KIND, scope="all", period=p.label,
        title=f"Quality and Performance report, {p.words()}",
        subtitle="For the Quality and Performance Committee: every provider's measures,"
                 " concerns, escalations and the watch list.",
        sections=[overview, summary_section(d), funnel_section(d, charts or []),
                  by_provider_and_theme(d), ladder_section(d, esc), watch_section(d, esc, p),
                  changes_section(d, p)])
