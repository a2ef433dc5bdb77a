""""You said, we did": for the public, per provider and quarter. The themes people raised
and the actions completed because of them, in plain English. Pure.

No personal data: only counts by theme (1 to 4 shown as "fewer than 5"), and the actions
agreed with the provider (their descriptions, redacted again like every text of every
report); never a comment, an owner's name or the evidence of completion, which could name
someone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.quality_monitor.reports.document import Cell, Report, Section, Table, small
from services.quality_monitor.reports.periods import LONDON, Period
from services.quality_monitor.reports.sources import EscalationView, within

KIND = "you_said_we_did"
# What the public raised, by kind: the kinds people (not professionals) write.
SOURCES = {"complaint": "complaints", "online_review": "online reviews",
           "engagement_feedback": "patient groups and forums", "fft_response": "Friends and"
           " Family Test comments", "compliment": "compliments"}


@dataclass
class PublicData:
    ods_code: str
    name: str
    feedback: list[dict[str, Any]]
    concerns: dict[str, str]  # concern id -> theme (the concerns behind the actions)


def theme_of(f: dict[str, Any]) -> str | None:
    kind, c = f["kind"], f["content"]
    if kind == "complaint":
        return str(c.get("subject_area") or f["theme"] or "other")
    if kind == "online_review":
        rating = c.get("rating")
        return None if rating is not None and rating >= 4 else "experience of care"
    if kind == "fft_response":
        return None if c.get("answer") not in ("poor", "very_poor") else \
            f"care in {str(c.get('setting', '')).replace('_', ' ')}"
    if kind == "engagement_feedback":
        return str(c.get("topic") or "other")
    return None


def counted(n: int) -> Cell:
    value = small(n)
    return "fewer than 5" if value == "*" else value


def you_said_we_did(d: PublicData, esc: EscalationView, p: Period) -> Report:
    raised: Counter[tuple[str, str]] = Counter()
    for f in d.feedback:
        theme = theme_of(f)
        if f["kind"] in SOURCES and theme:
            raised[(theme.lower(), SOURCES[f["kind"]])] += 1
    said: list[list[Cell]] = [[theme[0].upper() + theme[1:], source, counted(n)]
                              for (theme, source), n in sorted(
                                  raised.items(), key=lambda kv: (-kv[1], kv[0]))]
    done: list[list[Cell]] = []
    for a in esc.actions:
        completed = a.get("completed_at")
        if not completed or not within(completed, p):
            continue
        theme = d.concerns.get(str(a["concern_id"]), "quality of care")
        when = datetime.fromisoformat(str(completed)).astimezone(LONDON)
        done.append([theme, f"We asked {d.name} to: {a['description'].rstrip('.')}."
                     f" This was done in {when:%B %Y}.", f"{when:%B %Y}"])
    total = sum(raised.values())
    intro = (f"Between {p.start:%-d %B %Y} and {p.last_day:%-d %B %Y}, people told us about"
             f" their care at {d.name} {counted(total)} times, through complaints, reviews,"
             " the Friends and Family Test and patient groups. Here is what they raised, and"
             " what was done.")
    return Report(
        kind=KIND, scope=d.ods_code, period=p.label, audience="public",
        title=f"You said, we did: {d.name}, {p.words()}",
        subtitle="What people told us about their care, and what changed because of it.",
        sections=[
            Section("What you told us", [intro] + ([] if said else [
                "No feedback was raised in this quarter."]),
                [Table("you_said", "What people raised, by theme",
                       ["Theme", "How you told us", "Number of times"], said)]),
            Section("What we did", [
                f"{len(done)} action(s) agreed with {d.name} were completed this quarter."
                if done else "No actions were completed this quarter. Work on the themes"
                " above goes on, and will be reported next quarter."],
                [Table("we_did", "Actions completed because of what people raised",
                       ["Theme", "What was done", "When"], done)]),
            Section("About this summary", [
                "We do not publish anything that could identify you. Numbers from 1 to 4 are"
                " shown as 'fewer than 5'. To tell us about your care, use the feedback page"
                " of your integrated care board."]),
        ])
