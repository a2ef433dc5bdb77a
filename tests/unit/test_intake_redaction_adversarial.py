"""Redaction of large adversarial text (issue 14): the shapes that are each pattern's worst
case (repeated digit groups, wide gaps, long runs of separators, many ``@``, long words,
cue words with no date, a year with no age), a few hundred thousand characters of each,
with real personal data placed between them. What is checked is the output: the filler
comes back exactly as it was (or exactly redacted, where the filler is itself personal
data) and every piece of real data is replaced. How fast this is goes in the benchmark
(``python -m tools.bench --redaction-only``), not here."""

from __future__ import annotations

import pytest

from services.intake.redaction import redact

REAL = (" | Note. NHS 943 476 5919, ring 07700 900461 or +44 20 7946 0018, mail"
        " jo.bloggs@example.org, at SW1A 1AA. | ")
REAL_REDACTED = (" | Note. NHS [NHS NUMBER], ring [PHONE] or [PHONE], mail [EMAIL], at"
                 " [POSTCODE]. | ")
REAL_FOUND = {"[NHS NUMBER]": 1, "[PHONE]": 2, "[EMAIL]": 1, "[POSTCODE]": 1}
SIZE = 300_000


@pytest.mark.parametrize("unit, redacted, found", [
    # Repeated digit groups: every group starts a candidate for each number pattern, and
    # none is a number (4, 8, 12... digits: never 10, 11 or 44 and 9).
    ("0044 ", "0044 ", {}),
    ("+44 ", "+44 ", {}),
    ("0", "0", {}),
    ("12.", "12.", {}),            # 10 digits with a failing check digit, again and again
    ("1938 (", "1938 (", {}),      # a year, then no age
    # Wide gaps: 13 blanks between digits is one blank too many to join them...
    ("1" + " " * 13, "1" + " " * 13, {}),
    # ...and 12 is not: ten 1s are an NHS number (1111111111 passes Modulus 11).
    (("1" + " " * 12) * 10, "[NHS NUMBER]" + " " * 12, {"[NHS NUMBER]": 1}),
    # Separators and e-mail characters with nothing to find.
    ("- ", "- ", {}),
    ("-./ ", "-./ ", {}),
    ("@", "@", {}),
    ("a@", "a@", {}),
    ("a@a-", "a@a-", {}),
    ("a" * 64 + "@", "a" * 64 + "@", {}),
    ("a.", "a.", {}),
    ("born on 1 ", "born on 1 ", {}),
    ("X1 1AA ", "X1 1AA ", {}),
    # Fillers that are personal data, each one found.
    ("943 476 5919 ", "[NHS NUMBER] ", {"[NHS NUMBER]": 1}),
    ("07700 900461 ", "[PHONE] ", {"[PHONE]": 1}),
    ("0044 7700 900461 ", "[PHONE] ", {"[PHONE]": 1}),
    ("x@y.co ", "[EMAIL] ", {"[EMAIL]": 1}),
    ("SW1A 1AA ", "[POSTCODE] ", {"[POSTCODE]": 1}),
    ("DOB 03/04/1941 ", "DOB [DATE OF BIRTH] ", {"[DATE OF BIRTH]": 1}),
], ids=repr)
def test_large_adversarial_text_is_redacted_exactly(unit: str, redacted: str,
                                                    found: dict[str, int]) -> None:
    n = SIZE // len(unit)
    text = unit * n + REAL + unit * n + REAL + unit * n
    result = redact(text)
    expected = redacted * n + REAL_REDACTED + redacted * n + REAL_REDACTED + redacted * n
    assert result.text == expected
    want = {label: 2 * count for label, count in REAL_FOUND.items()}
    for label, count in found.items():
        want[label] = want.get(label, 0) + 3 * n * count
    assert dict(result.found) == want


def test_invisible_characters_between_digits_are_removed_where_data_is_found() -> None:
    """Zero-width spaces between digits: the text found to hold data is returned in its
    normalised form, the filler's digits joined into one long run that is no number."""
    text = "\u200b9" * 100_000 + REAL + "\u200b9" * 100_000
    result = redact(text)
    assert result.text == "9" * 100_000 + REAL_REDACTED + "9" * 100_000
    assert dict(result.found) == REAL_FOUND
