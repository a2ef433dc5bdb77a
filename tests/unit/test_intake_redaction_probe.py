"""The probes of redaction's patterns (``services/intake/probe.py``, issue 14). A pattern run
only where its probe finds it may match finds exactly what a scan of the whole text finds:
on personal data placed at the edges of the stretches a probe marks (a stretch is about
1,000 characters, and the pattern reads up to its reach past one: 200 characters, or 1,000
for an e-mail address), among Unicode that RE2 and Python read differently, and on random
mixes of both. And a probe finds nothing at all
in a text of near misses, which is what makes such a text cost one RE2 scan (how fast is
for the benchmark, ``python -m tools.bench --redaction-only``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake import redaction
from services.intake.probe import _STRETCH, Probe, finditer, live

PROBES = {name: getattr(redaction, name) for name in (
    "_DOB", "_DOB_CI", "_YEAR_THEN_AGE", "_EMAIL", "_EMAIL_CI", "_TEN_DIGITS",
    "_INTERNATIONAL_PHONE", "_PHONE", "_POSTCODE", "_GIR")}

DATA = ["born on 3rd of september 1954", "DOB: 12/03/1938", "Date of Birth 1938-03-12",
        "12/03/1938 (86)", "1938-03-12 aged 86", "jo.bloggs@example.org",
        "JO [AT] EXAMPLE [DOT] ORG", "x at y dot com", "943 476 5919", "9434765919",
        "+44 20 7946 0018", "0044 (0) 7700 900461", "07700.900.461", "(020) 7946 0018",
        "SW1A  1AA", "b1 1aa", "GIR 0AA", "1 1 1 1 1 1 1 1 1 1",
        "1" + (" " * 12 + "1") * 9,  # (the longest number: 118 characters)
        "date of birth is 3rd of september 1954",
        "a" * 64 + " [at] " + " [dot] ".join(["b" * 63] * 9)]  # (the longest e-mail: 693)
# Characters that RE2 and Python's re read differently: Unicode spaces (Python's \s, not
# RE2's), letters that match an ASCII one ignoring case in Python (İ, ı, K, ſ), a letter
# that is a word character in Python only, and a lone surrogate (JSON may carry one: it is
# no UTF-8).
ODD = ["\u2028", "\u3000", "\u00a0", "\x1c", "\x85", "\u0130", "\u0131", "\u212a", "\u017f",
       "\u00e9", "_", "\ud800"]


def _spans(probe: Probe, text: str) -> list[tuple[int, int]]:
    return [m.span() for m in probe.pattern.finditer(text)]


@pytest.mark.parametrize("name", PROBES)
@pytest.mark.parametrize("gap", [0, 1, 7, 199, 200, 201, 999, 1000, 1008, 1009, 1200, 2000,
                                 2009, 3000])
def test_matches_at_the_edges_of_stretches_are_those_of_a_whole_scan(name: str,
                                                                     gap: int) -> None:
    probe = PROBES[name]
    filler = f" {('x ' * gap)[:gap]} "
    text = filler.join([*DATA, *DATA]) + filler + "".join(ODD).join(DATA)
    assert finditer(probe, text) == _spans(probe, text)
    assert _spans(probe, text), "the data holds a match of every pattern"


@pytest.mark.parametrize("name", PROBES)
def test_a_match_across_a_stretchs_end_is_found_whole(name: str) -> None:
    """Data that starts, or ends, where the stretch that a hit at the text's start marks
    ends (``_STRETCH`` characters on), then data far away: each at each offset around the
    end."""
    probe = PROBES[name]
    for data in DATA:
        if _spans(probe, data):
            for at in range(_STRETCH - 10 - len(data), _STRETCH + 12):
                text = f"{data}{' ' * (at - len(data))}{data}{' ' * 3000}{data}"
                assert finditer(probe, text) == _spans(probe, text), (data, at)


@pytest.mark.parametrize("name", PROBES)
@given(pieces=st.lists(st.one_of(st.sampled_from(DATA + ODD + [
    " ", "-", ".", "/", "(", ")", "@", " at ", " dot ", "0", "44", "1938", " aged ", " yrs",
    "born in ", "may ", "SW", "1A"]), st.text(max_size=3)), max_size=40),
       gap=st.sampled_from([0, 150, 250, 1100]))
@settings(max_examples=60, deadline=None)
def test_matches_in_random_mixes_are_those_of_a_whole_scan(name: str, pieces: list[str],
                                                           gap: int) -> None:
    probe = PROBES[name]
    text = f" {'y' * gap} ".join(pieces)
    assert finditer(probe, text) == _spans(probe, text)


@pytest.mark.parametrize("name", PROBES)
@pytest.mark.parametrize("unit", ["0044 ", "+44 ", "0", "1", "1938 (", "X1 1AA ", "SW1A ",
                                  "born on 1 ", "born in DOB ", "a@a-", "a" * 64 + "@",
                                  "x at y ", "a.", "-./ ", "@", "1" + " " * 13,
                                  "\u0130a@a-"])
def test_a_probe_finds_nothing_in_near_misses(name: str, unit: str) -> None:
    text = unit * (100_000 // len(unit))
    assert list(live(PROBES[name], text)) == []


def test_text_with_lone_surrogates_is_redacted() -> None:
    """A lone surrogate is no UTF-8 (RE2 reads UTF-8): the probes read it as "?", and the
    data around it is found."""
    result = redaction.redact("NHS 943 476 5919 \ud800 ring 07700 900461\udfff")
    assert result.text == "NHS [NHS NUMBER] \ud800 ring [PHONE]\udfff"
