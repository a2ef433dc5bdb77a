"""Redaction of personal data from free text, before anything leaves intake.

Finds NHS numbers (only those whose Modulus 11 check digit is valid, in any spacing), UK
phone numbers, email addresses, UK postcodes and dates of birth (a date introduced as a date
of birth), and replaces each with a bracketed label. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

NHS_NUMBER = "[NHS NUMBER]"
PHONE = "[PHONE]"
EMAIL = "[EMAIL]"
POSTCODE = "[POSTCODE]"
DATE_OF_BIRTH = "[DATE OF BIRTH]"

_MONTHS = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
           r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_DATE = (rf"(?:\d{{1,2}}[/.\-]\d{{1,2}}[/.\-]\d{{2,4}}"
         rf"|\d{{4}}-\d{{1,2}}-\d{{1,2}}"
         rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}\.?,?\s+\d{{4}}"
         rf"|{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})")
_DOB_RE = re.compile(
    rf"(?P<cue>\b(?:d\.?\s?o\.?\s?b\.?|date\s+of\s+birth|birth\s*date|born(?:\s+on)?)"
    rf"\s*(?:(?:is|was)\s+)?[:\-]?\s*)(?P<date>{_DATE})",
    re.IGNORECASE,
)
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-']+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)+")
# Ten digits with any single spaces or hyphens between them, not inside a longer number.
_TEN_DIGITS_RE = re.compile(r"(?<![\d\w])(?:\d[ \-]?){9}\d(?![\d\w])")
# UK numbers: 0 or +44 (optionally "(0)") then 9-10 more digits, grouped by spaces/hyphens.
_PHONE_RE = re.compile(
    r"(?<![\d\w+])(?:\+\s?44\s?(?:\(0\)\s?)?|\(?0)(?:[ \-)]{0,2}\d){9,10}(?![\d\w])")
_POSTCODE_RE = re.compile(
    r"\b(?:GIR\s?0AA|[A-PR-UWYZ](?:[A-HK-Y]?\d[A-Z\d]?|\d[A-HJKPSTUW])\s?\d[ABD-HJLNP-UW-Z]{2})\b",
    re.IGNORECASE,
)


def is_valid_nhs_number(digits: str) -> bool:
    """Modulus 11 check of a 10-digit NHS number."""
    if len(digits) != 10 or not digits.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


@dataclass
class Redacted:
    text: str
    found: Counter[str] = field(default_factory=Counter)

    @property
    def changed(self) -> bool:
        return bool(self.found)


def redact(text: str) -> Redacted:
    """Replace personal data in ``text`` with labels; count what was found by label."""
    found: Counter[str] = Counter()

    def sub(pattern: re.Pattern[str], label: str, s: str, keep_cue: bool = False) -> str:
        def repl(m: re.Match[str]) -> str:
            found[label] += 1
            return (m.group("cue") + label) if keep_cue else label
        return pattern.sub(repl, s)

    # Order matters: dates of birth and emails first (they contain digits), then NHS
    # numbers (valid check digit only), then phones, then postcodes.
    text = sub(_DOB_RE, DATE_OF_BIRTH, text, keep_cue=True)
    text = sub(_EMAIL_RE, EMAIL, text)

    def nhs(m: re.Match[str]) -> str:
        if is_valid_nhs_number(re.sub(r"\D", "", m.group())):
            found[NHS_NUMBER] += 1
            return NHS_NUMBER
        return m.group()

    text = _TEN_DIGITS_RE.sub(nhs, text)
    text = sub(_PHONE_RE, PHONE, text)
    text = sub(_POSTCODE_RE, POSTCODE, text)
    return Redacted(text, found)
