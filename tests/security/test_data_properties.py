"""Property: whatever intake accepts, every service downstream handles without
dead-lettering (issue 14, item 7: a complaint dated 0001-01-01 was accepted, then
dead-lettered by quality-monitor after six OverflowErrors, so accepted but never monitored).

Hypothesis draws submissions of every kind with extreme but valid values (dates at the
bounds, counts at their maximum, scores and texts at their limits, any Unicode); those
intake accepts go through the real pipeline, and then no queue has dead letters, no handler
recorded a failure, and quality-monitor holds every accepted one. Bounded: one batch of
about a hundred drawn submissions.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from services.intake.validation import Parsed, parse
from shared.settings import Settings
from shared.submissions import EARLIEST_DATE, YEARS_AHEAD, today_in_england
from tests.integration.test_intake_support import VALID_EXAMPLES, example_message
from tests.security.data_stack import DataStack, data_stack, report

pytestmark = pytest.mark.integration
TODAY = today_in_england()
AHEAD = date(TODAY.year + YEARS_AHEAD, 12, 31)
LATER_FIELDS = {"effective_from", "consultation_start", "consultation_end"}
EXAMPLES = {name: (m["body"] if isinstance(m["body"], dict) else json.loads(m["body"]))
            for name in VALID_EXAMPLES for m in [example_message(name)]}

text = st.text(alphabet=st.characters(codec="utf-8",
                                      blacklist_characters="\x00"), min_size=1, max_size=60)
# Whitespace-only text is stripped to nothing (a reason, not an acceptance): a letter first.
free_text = st.one_of(st.builds(lambda t: f"x{t}", text),
                      st.sampled_from(["x" * 200, "\u00e9" * 200, "\U0001f600" * 200]))
past = st.one_of(st.sampled_from([EARLIEST_DATE, TODAY]),
                 st.dates(min_value=EARLIEST_DATE, max_value=TODAY))
later = st.one_of(st.sampled_from([EARLIEST_DATE, AHEAD]),
                  st.dates(min_value=EARLIEST_DATE, max_value=AHEAD))
count = st.one_of(st.sampled_from([0, 10_000_000]), st.integers(0, 10_000_000))
score = st.one_of(st.sampled_from([0.0, -0.0, 1e-300, 1e300, -1e300]),
                  st.floats(allow_nan=False, allow_infinity=False))
period = st.builds(lambda d: f"{d.year:04d}-{d.month:02d}", past)


@st.composite
def submission(draw: st.DrawFn) -> dict[str, Any]:
    body = dict(EXAMPLES[draw(st.sampled_from(sorted(EXAMPLES)))])
    for key, value in list(body.items()):
        if key in ("kind", "version", "ods_code", "record_id", "site_code",
                   "raised_by_practice", "subject_area", "theme_area", "setting", "answer",
                   "category", "about", "source", "visit_type", "outcome", "comparison",
                   "response_status", "informed", "rating", "risk"):
            continue
        if key == "period":
            body[key] = draw(period)
        elif key.endswith(("_on", "_from", "_start", "_end")):
            body[key] = draw(later if key in LATER_FIELDS else past).isoformat()
        elif isinstance(value, bool):
            body[key] = draw(st.booleans())
        elif isinstance(value, int):
            body[key] = draw(count)
        elif isinstance(value, float):
            body[key] = draw(score)
        elif isinstance(value, str):
            body[key] = draw(free_text)
    return body


def draw_submissions(n: int) -> list[dict[str, Any]]:
    drawn: list[dict[str, Any]] = []

    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(submission())
    def collect(body: dict[str, Any]) -> None:
        drawn.append(body)

    collect()
    return drawn


@pytest.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[DataStack]:
    async with data_stack(settings, "props") as s:
        yield s


async def test_whatever_intake_accepts_is_handled_downstream(stack: DataStack) -> None:
    run = uuid.uuid4().hex[:8]
    drawn = [{**body, "record_id": f"PROP-{run}-{n}"}
             for n, body in enumerate(draw_submissions(120))]
    accepted = [b for b in drawn if isinstance(parse(json.dumps(b).encode()), Parsed)]
    assert len(accepted) >= len(drawn) // 2, "the strategy draws mostly valid submissions"
    sids = [await stack.publish(body) for body in accepted]
    outcomes = await stack.outcomes(sids, timeout=180)
    assert set(outcomes.values()) == {"accepted"}, outcomes
    await stack.settle(timeout=240)
    dead = await stack.dead_letters()
    monitored = await stack.pool.fetchval(
        "SELECT count(*) FROM monitor.feedback WHERE submission_id = ANY($1::uuid[])", sids)
    report("extreme but valid submissions dead-lettered downstream", len(sids),
           len(sids) - dead, dead)
    assert dead == 0
    assert monitored == len(sids)
