"""The monthly Clinical Quality Review Meeting (CQRM) pack of one provider. Pure: the
provider's records in, a :class:`Report` out."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime
from typing import Any

from services.quality_monitor.handling import Complaint as HandledComplaint
from services.quality_monitor.handling import acknowledgement_due
from services.quality_monitor.reports.document import Cell, Chart, Report, Section, Table
from services.quality_monitor.reports.periods import LONDON, Period
from services.quality_monitor.reports.sources import EscalationView, MonitorData, within

KIND = "cqrm_pack"
SEVERITY_ORDER = {"serious": 0, "high": 1, "moderate": 2, "low": 3}


def day(value: Any) -> str:
    """A date as the pack shows it: 14 Oct 2026 (London)."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value or " " in value \
            else date.fromisoformat(value)
    if isinstance(value, datetime):
        value = value.astimezone(LONDON).date()
    return f"{value.day} {value:%b %Y}"


def cut(text: Any, limit: int = 300) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def yes_no(value: Any) -> str:
    return "yes" if value else "no"


def _of(feedback: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [f for f in feedback if f["kind"] == kind]


def unavailable(esc: EscalationView) -> list[str]:
    return [] if esc.available else [f"Not available: {esc.reason}."]


# -- sections --------------------------------------------------------------------------------
def concerns_section(m: MonitorData, p: Period) -> tuple[Section, dict[str, int]]:
    rows: list[list[Cell]] = []
    counts: Counter[str] = Counter()
    for c in sorted(m.concerns, key=lambda c: (SEVERITY_ORDER.get(c["severity"], 9),
                                               c["raised_at"])):
        resolved_in = within(c["resolved_at"], p)
        new = within(c["raised_at"], p) or (c["first_evidence"] is not None
                                            and within(c["first_evidence"], p))
        state = "resolved" if resolved_in else "new" if new else "open"
        if new:
            counts["new"] += 1
        counts["resolved" if resolved_in else "open"] += 1
        rows.append([state, c["severity"], c["theme"], c["rule"].replace("_", " "),
                     day(c["raised_at"]), day(c["resolved_at"]) if resolved_in else "",
                     c["evidence_items"], cut(c["reason"], 400)])
    words = (f"{counts['new']} new concern(s) this month; {counts['open']} open at the end of"
             f" the month; {counts['resolved']} resolved in the month.")
    table = Table("concerns", "Concerns: new, open and resolved, with their evidence",
                  ["State", "Severity", "Theme", "Rule", "Raised", "Resolved",
                   "Evidence items", "Why (the rule's reason)"], rows)
    return Section("Concerns", [words], [table]), dict(counts)


def meetings_section(esc: EscalationView, p: Period) -> Section:
    rows: list[list[Cell]] = [
        [day(x["starts_at"]), x.get("kind", "remedial").replace("_", " "), x.get("severity"),
         x.get("status"), cut(x.get("outcome") or ("(not yet recorded)" if x.get("status") ==
                                                   "held" else ""), 400)]
        for x in sorted(esc.meetings, key=lambda x: str(x["starts_at"]))
        if within(x["starts_at"], p)]
    held = sum(1 for r in rows if r[3] == "held")
    return Section("Meetings and their outcomes",
                   [*unavailable(esc), f"{len(rows)} meeting(s) in the month, {held} held."],
                   [Table("meetings", "Remedial-action meetings in the month",
                          ["Date", "Kind", "Severity", "Status", "Outcome"], rows)])


def before_end(value: Any, p: Period) -> bool:
    return datetime.fromisoformat(str(value)).astimezone(LONDON).date() < p.end


def action_state(a: dict[str, Any], p: Period) -> str:
    completed = a.get("completed_at")
    if completed and before_end(completed, p):
        return "completed"
    return "overdue" if date.fromisoformat(str(a["due_on"])) < p.end else "on track"


def actions_section(esc: EscalationView, p: Period) -> tuple[Section, Counter[str]]:
    rows: list[list[Cell]] = []
    states: Counter[str] = Counter()
    for a in sorted(esc.actions, key=lambda a: str(a["due_on"])):
        if a.get("created_at") and not before_end(a["created_at"], p):
            continue  # agreed after the month: next month's pack
        state = action_state(a, p)
        states[state] += 1
        rows.append([cut(a["description"], 300), a["owner"], day(a["due_on"]), state,
                     day(a.get("completed_at")) if state == "completed" else "",
                     cut(a.get("evidence_of_completion") or "", 300) if state == "completed"
                     else ""])
    words = (f"{states['on track']} on track, {states['overdue']} overdue, "
             f"{states['completed']} completed with evidence.")
    return Section("Action plan", [*unavailable(esc), words], [Table(
        "action_plan", "Remedial actions: owner, due date and state at the end of the month",
        ["Action", "Owner", "Due", "State", "Completed", "Evidence of completion"], rows)]), \
        states


def complaints_section(m: MonitorData, p: Period) -> tuple[Section, int]:
    by_area: dict[str, Counter[str]] = defaultdict(Counter)
    complaints = _of(m.feedback, "complaint")
    for f in complaints:
        c = f["content"]
        area = c.get("subject_area") or f["theme"] or "Other"
        counts = by_area[area]
        counts["received"] += 1
        received = f["occurred_on"]
        ack = date.fromisoformat(c["acknowledged_on"]) if c.get("acknowledged_on") else None
        due = acknowledgement_due(HandledComplaint(f["feedback_id"], received, ack))
        if ack is not None and ack <= due:
            counts["ack_on_time"] += 1
        elif ack is not None or due < p.end:
            counts["ack_late"] += 1
        if c.get("responded_on"):
            counts["responded"] += 1
        if c.get("outcome") in ("upheld", "partly_upheld"):
            counts["upheld"] += 1
    rows: list[list[Cell]] = [
        [area, n["received"], n["ack_on_time"], n["ack_late"], n["responded"], n["upheld"]]
        for area, n in sorted(by_area.items(), key=lambda kv: (-kv[1]["received"], kv[0]))]
    if rows:
        rows.append(["All subject areas", *(sum(int(r[i] or 0) for r in rows)
                                            for i in range(1, 6))])
    words = (f"{len(complaints)} written complaint(s) received in the month. Acknowledgement is"
             " due within 3 working days (England bank holidays excluded); a response within"
             " 6 months.")
    return Section("Complaints by KO41a subject area", [words], [Table(
        "complaints", "Complaints received in the month, by KO41a subject area",
        ["Subject area", "Received", "Acknowledged within 3 working days",
         "Acknowledged late or overdue", "Responded", "Upheld or partly upheld"], rows)]), \
        len(complaints)


def measures_section(m: MonitorData, charts: list[Chart]) -> Section:
    rows: list[list[Cell]] = [
        [r.metric.replace("_", " "), r.setting.replace("_", " "), r.period, r.value,
         round(r.mean, 1), f"{r.lower:.1f} to {r.upper:.1f}", r.variation_words,
         r.assurance_words or "no target"] for r in m.summary]
    words = ("Friends and Family Test by setting, complaints and GP alerts per month, as Making"
             " Data Count reads them (XmR charts: the latest month, the mean and process"
             " limits, and the variation and assurance icons in words)."
             if rows else "Too few months of data for a chart yet (at least 12 are needed).")
    return Section("Friends and Family Test and other measures (SPC)", [words], [Table(
        "measures", "The latest point of each measure, with its variation and assurance",
        ["Measure", "Setting", "Month", "Latest", "Mean", "Process limits", "Variation",
         "Assurance"], rows)], charts)


def surveys_section(m: MonitorData) -> Section:
    rows: list[list[Cell]] = []
    for f in sorted(m.recent, key=lambda f: f["occurred_on"]):
        c = f["content"]
        if f["kind"] == "survey_result":
            rows.append(["survey", cut(c.get("survey"), 80), cut(c.get("question"), 200),
                         day(f["occurred_on"]), c.get("score"), c.get("national_score"),
                         (c.get("comparison") or "").replace("_", " ")])
        elif f["kind"] == "prom_score":
            rows.append(["PROM", cut(c.get("measure"), 80), "", c.get("period"),
                         c.get("score"), c.get("national_score"),
                         (c.get("comparison") or "").replace("_", " ")])
    return Section("National surveys and PROMs against the national comparison",
                   [f"{len(rows)} result(s) published in the 12 months to the end of the month."],
                   [Table("surveys_proms", "Survey and PROM results",
                          ["Source", "Survey or measure", "Question", "Published", "Score",
                           "National", "Compared with England"], rows)])


def gp_alerts_section(m: MonitorData) -> tuple[Section, int]:
    alerts = _of(m.feedback, "gp_alert")
    themes: dict[str, Counter[str]] = defaultdict(Counter)
    for f in alerts:
        t = themes[f["theme"] or "Other"]
        t["alerts"] += 1
        t["safety"] += bool(f["content"].get("patient_safety"))
    rows: list[list[Cell]] = [[theme, n["alerts"], n["safety"]] for theme, n in
                              sorted(themes.items(), key=lambda kv: (-kv[1]["alerts"], kv[0]))]
    return Section("GP alerts by theme", [f"{len(alerts)} GP alert(s) in the month."],
                   [Table("gp_alerts", "GP alerts by theme", ["Theme", "Alerts",
                                                              "About patient safety"], rows)]), \
        len(alerts)


def reviews_section(m: MonitorData) -> Section:
    reviews = _of(m.feedback, "online_review")
    status = Counter((f["content"].get("source", "other"),
                      f["content"].get("response_status", "awaiting_response")) for f in reviews)
    summary: list[list[Cell]] = [[src.replace("_", " "), st.replace("_", " "), n]
                                 for (src, st), n in sorted(status.items())]
    comments: list[list[Cell]] = [
        [day(f["occurred_on"]), f["content"].get("source", "").replace("_", " "),
         f["content"].get("rating"), f["content"].get("response_status", "").replace("_", " "),
         cut(" ".join(filter(None, [f["content"].get("title"), f["content"].get("text")])), 400)]
        for f in reviews[-30:]]
    return Section("NHS website and Care Opinion comments",
                   [f"{len(reviews)} comment(s) posted in the month."
                    + (" The latest 30 are listed." if len(reviews) > 30 else "")],
                   [Table("online_comments_status", "Comments by source and response status",
                          ["Source", "Response status", "Comments"], summary),
                    Table("online_comments", "Comments (redacted)",
                          ["Posted", "Source", "Rating", "Response status", "Comment"],
                          comments)])


def visits_section(m: MonitorData, esc: EscalationView, p: Period) -> Section:
    done: list[list[Cell]] = [
        [day(f["occurred_on"]), f["content"].get("visit_type", "").replace("_", " "),
         cut(f["content"].get("service"), 80),
         f["content"].get("rating", "").replace("_", " "),
         cut(f["content"].get("recommendations") or "(none recorded)", 400)]
        for f in _of(m.recent, "insight_visit")]
    planned: list[list[Cell]] = [
        [day(v["due_on"]), (v.get("visit_kind") or "").replace("_", " "), cut(v.get("theme"), 80),
         v.get("status"), cut(v.get("reason"), 200)]
        for v in esc.visits if v.get("status") == "planned"]
    return Section("Visits, re-visits and recommendations",
                   [f"{len(done)} visit(s) in the 12 months to the end of the month;"
                    f" {len(planned)} planned.", *unavailable(esc)],
                   [Table("visits", "Insight and Enter and View visits, with recommendations",
                          ["Visited", "Type", "Service", "Rating", "Recommendations"], done),
                    Table("visits_planned", "Visits and re-visits planned",
                          ["Due", "Kind", "Theme", "Status", "Why"], planned)])


def service_changes_section(m: MonitorData) -> Section:
    rows: list[list[Cell]] = []
    for f in _of(m.feedback, "service_change_notice"):
        c = f["content"]
        weeks: Cell = ""
        if c.get("consultation_start") and c.get("consultation_end"):
            weeks = (date.fromisoformat(c["consultation_end"])
                     - date.fromisoformat(c["consultation_start"])).days // 7
        rows.append([day(f["occurred_on"]), cut(c.get("service"), 80), cut(c.get("change"), 300),
                     day(c.get("effective_from")), yes_no(c.get("engagement_plan")),
                     yes_no(c.get("eia_done")), yes_no(c.get("qia_done")), weeks,
                     ", ".join(c.get("informed") or []) or "none"])
    return Section("Service-change notices and their engagement checks",
                   [f"{len(rows)} notice(s) in the month."],
                   [Table("service_changes", "Service-change notices",
                          ["Notified", "Service", "Change", "Effective", "Engagement plan",
                           "EIA", "QIA", "Consultation (weeks)", "Informed"], rows)])


def engagement_section(m: MonitorData) -> Section:
    items = _of(m.feedback, "engagement_feedback")
    rows: list[list[Cell]] = [[day(f["occurred_on"]), cut(f["content"].get("group"), 80),
                               cut(f["content"].get("topic"), 80),
                               cut(f["content"].get("summary"), 400)] for f in items]
    return Section("Patient participation group and engagement-forum themes",
                   [f"{len(rows)} meeting report(s) in the month."],
                   [Table("engagement", "Engagement feedback",
                          ["Met", "Group", "Topic", "Summary"], rows)])


STANDARDS = {"wres": "Workforce Race Equality Standard",
             "eds": "Equality Delivery System",
             "ais": "Accessible Information Standard",
             "quality_account_priority": "Quality Account priority"}


def figure(value: Any) -> Cell:
    """A return's measured figure as given (a whole number without its ``.0``)."""
    if value is None:
        return ""
    return int(value) if float(value).is_integer() else float(value)


def returns_section(m: MonitorData, p: Period) -> Section:
    order = list(STANDARDS)
    returns = sorted(m.returns, key=lambda r: (order.index(r["standard"])
                                               if r["standard"] in order else len(order),
                                               r["priority"]))
    rows: list[list[Cell]] = [
        [STANDARDS.get(r["standard"], r["standard"]), cut(r["priority"], 120), r["period"],
         r["status"].replace("_", " "), figure(r["figure"]), cut(r["summary"], 400)]
        for r in returns]
    states = Counter(r["status"] for r in returns)
    missing = [STANDARDS[s] for s in ("wres", "eds", "ais")
               if not any(r["standard"] == s for r in returns)]
    words = [f"{len(rows)} progress return(s), the latest of each standard and Quality Account"
             f" priority up to {p.words()}: {states['on_track']} on track,"
             f" {states['at_risk']} at risk, {states['off_track']} off track,"
             f" {states['completed']} completed."]
    if missing:
        words.append(f"No return yet on: {', '.join(missing)}.")
    return Section("Equality and Quality Account returns", words, [Table(
        "equality_returns", "Progress returns on the WRES, EDS and AIS, and against the"
        " Quality Account priorities",
        ["Standard", "Priority", "Period", "Status", "Figure", "Progress summary"], rows)])


def cqrm_pack(m: MonitorData, esc: EscalationView, p: Period,
              charts: list[Chart] | None = None) -> Report:
    """The pack for one provider and month."""
    concerns, counts = concerns_section(m, p)
    actions, states = actions_section(esc, p)
    complaints, n_complaints = complaints_section(m, p)
    alerts, n_alerts = gp_alerts_section(m)
    fft_responses = len(_of(m.feedback, "fft_response")) + sum(
        sum(int(f["content"].get(k, 0) or 0) for k in ("very_good", "good",
                                                        "neither_good_nor_poor", "poor",
                                                        "very_poor", "dont_know"))
        for f in _of(m.feedback, "fft_monthly"))
    overview = Section("This month at a glance", [
        f"{counts.get('new', 0)} new concern(s), {counts.get('open', 0)} open at the month's"
        f" end, {counts.get('resolved', 0)} resolved. {n_complaints} complaint(s),"
        f" {n_alerts} GP alert(s) and {fft_responses} Friends and Family Test response(s)."
        + (f" Actions: {states['overdue']} overdue, {states['completed']} completed."
           if esc.available else "")])
    return Report(
        kind=KIND, scope=m.ods_code, period=p.label,
        title=f"CQRM pack: {m.name} ({m.ods_code}), {p.words()}",
        subtitle=f"Clinical Quality Review Meeting pack for {m.name}, covering {p.words()}.",
        sections=[overview, concerns, meetings_section(esc, p), actions, complaints,
                  measures_section(m, charts or []), surveys_section(m), alerts,
                  reviews_section(m), visits_section(m, esc, p), service_changes_section(m),
                  engagement_section(m), returns_section(m, p)])
