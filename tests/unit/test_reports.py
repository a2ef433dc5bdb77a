"""The reports' pure parts: periods and the first working day, small numbers, the second
redaction, spreadsheet-safe cells, the digest that decides a new version."""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import replace
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook

from services.quality_monitor.reports import periods
from services.quality_monitor.reports.cqrm import action_state, actions_section, returns_section
from services.quality_monitor.reports.document import (
    Chart,
    Report,
    Section,
    Table,
    sanitised,
    small,
    texts,
)
from services.quality_monitor.reports.render import csv_zip, xlsx
from services.quality_monitor.reports.sources import EscalationView, MonitorData

LONDON = ZoneInfo("Europe/London")


@pytest.mark.parametrize(("label", "first"), [
    ("2026-12", date(2027, 1, 4)),   # 1 January a bank holiday (Friday), then the weekend
    ("2027-03", date(2027, 4, 1)),   # Good Friday is 26 March: 1 April is a Thursday
    ("2026-10", date(2026, 11, 2)),  # 1 November 2026 is a Sunday
    ("2027-04", date(2027, 5, 4)),   # 1 May 2027 a Saturday, 3 May the early May bank holiday
])
def test_reports_fall_due_on_the_first_working_day_after_the_month(label: str,
                                                                    first: date) -> None:
    assert periods.due_at(periods.month(label), time(7)) == \
        datetime.combine(first, time(7), LONDON)


def test_quarters() -> None:
    q = periods.quarter("2026-Q4")
    assert (q.start, q.end, q.months) == (date(2026, 10, 1), date(2027, 1, 1),
                                          ["2026-10", "2026-11", "2026-12"])
    assert q.previous().label == "2026-Q3" and q.next().label == "2027-Q1"
    assert periods.quarter("2027-Q1").previous().label == "2026-Q4"
    assert periods.due_at(q, time(7)).date() == date(2027, 1, 4)
    assert periods.last_quarter_before(datetime(2027, 1, 4, 8, tzinfo=LONDON)).label == "2026-Q4"
    assert periods.last_month_before(datetime(2027, 1, 4, 8, tzinfo=LONDON)).label == "2026-12"
    with pytest.raises(ValueError, match="not a quarter"):
        periods.quarter("2026-Q5")
    with pytest.raises(ValueError, match="not a month"):
        periods.month("2026-13")


def test_small_numbers_are_suppressed() -> None:
    assert [small(n) for n in range(7)] == [0, "*", "*", "*", "*", 5, 6]


def report(text: str, cell: str = "x") -> Report:
    return Report("cqrm_pack", "RJ1", "2026-10", f"Title {text}", f"Sub {text}", [Section(
        f"Heading {text}", [f"Para {text}"],
        [Table("t", f"Caption {text}", [f"Col {text}"], [[cell], [3]])],
        [Chart("c", "<svg/>", f"Chart {text}")])])


def test_every_text_is_redacted_again() -> None:
    pii = "call 07700 900123, NHS number 943 476 5919, or mail jo.bloggs@example.com"
    clean = sanitised(report(pii, pii))
    for text in texts(clean):
        assert "07700" not in text and "943 476" not in text and "jo.bloggs" not in text
    cell = clean.sections[0].tables[0].rows[0][0]
    assert isinstance(cell, str)
    assert "[PHONE]" in clean.title and "[NHS NUMBER]" in cell
    assert clean.sections[0].tables[0].rows[1] == [3]  # numbers stay numbers


def test_cells_a_spreadsheet_would_run_are_text() -> None:
    r = report("plain", "=HYPERLINK(\"http://evil.example\",\"click\")")
    with zipfile.ZipFile(io.BytesIO(csv_zip(r))) as z:
        rows = list(csv.reader(io.StringIO(z.read("t.csv").decode())))
    assert rows[1][0].startswith("'=HYPERLINK")
    cell = load_workbook(io.BytesIO(xlsx(r)))["t"]["A2"]
    assert cell.data_type == "s" and cell.value.startswith("=HYPERLINK")


def test_the_digest_follows_what_the_report_says_not_the_chart_markup() -> None:
    r = report("a")
    redrawn = replace(r, sections=[replace(r.sections[0], charts=[Chart("c", "<svg id='2'/>",
                                                                        "Chart a")])])
    assert r.digest() == redrawn.digest()
    assert r.digest() != report("b").digest()


def test_an_action_state_at_the_end_of_the_month() -> None:
    p = periods.month("2026-10")
    assert action_state({"due_on": "2026-10-20", "completed_at": "2026-10-19T10:00:00+00:00"},
                        p) == "completed"
    assert action_state({"due_on": "2026-10-20", "completed_at": "2026-11-02T10:00:00+00:00"},
                        p) == "overdue"
    assert action_state({"due_on": "2026-11-20", "completed_at": None}, p) == "on track"


def test_the_action_plan_is_the_plan_at_the_months_end() -> None:
    def action(description: str, created: str) -> dict[str, object]:
        return {"description": description, "owner": "Chief nurse", "due_on": "2026-12-01",
                "created_at": created, "completed_at": None}
    section, states = actions_section(EscalationView(True, actions=[
        action("Agreed in October", "2026-10-19T12:00:00+00:00"),
        action("Agreed in November", "2026-11-03T12:00:00+00:00")]), periods.month("2026-10"))
    assert [row[0] for row in section.tables[0].rows] == ["Agreed in October"]
    assert states["on track"] == 1


def test_the_returns_section_shows_the_latest_of_each_standard_and_names_the_missing() -> None:
    def ret(standard: str, status: str, fig: float | None, priority: str = "",
            period: str = "2026-10") -> dict[str, object]:
        return {"standard": standard, "priority": priority, "period": period, "status": status,
                "figure": fig, "summary": f"{standard} progress."}
    data = MonitorData("RPT", "Riverside", [], [], [], [], returns=[
        ret("quality_account_priority", "on_track", 92.5, "Sepsis screening"),
        ret("ais", "completed", 88.0, period="2026-07"),
        ret("wres", "at_risk", 1.42)])
    section = returns_section(data, periods.month("2026-10"))
    assert section.paragraphs == [
        "3 progress return(s), the latest of each standard and Quality Account priority up to"
        " October 2026: 1 on track, 1 at risk, 0 off track, 1 completed.",
        "No return yet on: Equality Delivery System."]
    assert section.tables[0].rows == [
        ["Workforce Race Equality Standard", "", "2026-10", "at risk", 1.42, "wres progress."],
        ["Accessible Information Standard", "", "2026-07", "completed", 88, "ais progress."],
        ["Quality Account priority", "Sepsis screening", "2026-10", "on track", 92.5,
         "quality_account_priority progress."]]
    empty = returns_section(MonitorData("RPT", "Riverside", [], [], [], []),
                            periods.month("2026-10"))
    assert empty.tables[0].rows == [] and empty.paragraphs[1] == (
        "No return yet on: Workforce Race Equality Standard, Equality Delivery System,"
        " Accessible Information Standard.")
