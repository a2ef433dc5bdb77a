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
_YEAR = r"(?:\d{4}|\d{2})"
_DATE = (rf"(?:\d{{1,2}}[/.\-]\d{{1,2}}[/.\-]\d{{2,4}}"
         rf"|\d{{4}}-\d{{1,2}}-\d{{1,2}}"
         # 03-Mar-1954, 3/Mar/54 (patient administration systems)
         rf"|\d{{1,2}}[\-/ ]{_MONTHS}[\-/ ]{_YEAR}"
         rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}\.?,?\s+{_YEAR}"
         rf"|{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+{_YEAR})(?!\d)")
_DOB_RE = re.compile(
    rf"(?P<cue>\b(?:d\.?\s?o\.?\s?b\.?|date\s+of\s+birth|birth\s*date|born(?:\s+on)?(?:\s+the)?)"
    rf"\s*(?:(?:is|was)\s+)?[:\-\u2013\u2014]?\s*)(?P<date>{_DATE})",
    re.IGNORECASE,
)
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-']+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)+")
# Ten digits with up to three spaces, line breaks or hyphens between any two (a form's
# fixed-width fields, a number wrapped across lines), not inside a longer number.
_TEN_DIGITS_RE = re.compile(r"(?<![\d\w])(?:\d[\s\-]{0,3}){9}\d(?![\d\w])")
# +44 numbers: 9 or 10 national digits, optionally "(0)", grouped by spaces or hyphens. Found
# before NHS numbers: about 1 in 11 of them would pass the Modulus 11 check.
_INTERNATIONAL_PHONE_RE = re.compile(
    r"(?<![\d\w+])\+\s?44(?:[\s\-]?\(0\))?(?:[\s\-]?\d){9,10}(?![\d\w])")
# National numbers: 0 and ten more digits (0800/0808/0500 numbers may have nine), grouped by
# spaces, hyphens or an area code in brackets. A 0 and nine digits is an order number.
_PHONE_RE = re.compile(
    r"(?<![\d\w+])(?:\(0(?:[ \-)]{0,2}\d){10}|0(?:[ \-]?\d){10}"
    r"|0[ \-]?(?:800|808|500)(?:[ \-]?\d){6})(?![\d\w])")
# Postcode areas of the UK (and GIR 0AA), so that a ward called "C4" is not a postcode.
_AREAS = ("AB AL BA BB BD BF BH BL BN BR BS BT BX CA CB CF CH CM CO CR CT CV CW DA DD DE DG DH "
          "DL DN DT DY EC EH EN EX FK FY GL GU GY HA HD HG HP HR HS HU HX IG IM IP IV JE KA KT "
          "KW KY LA LD LE LL LN LS LU ME MK ML NE NG NN NP NR NW OL OX PA PE PH PL PO PR RG RH "
          "RM SA SE SG SK SL SM SN SO SP SR SS ST SW SY TA TD TF TN TQ TR TS TW UB WA WC WD WF "
          "WN WR WS WV YO ZE B E G L M N S W").split()
_POSTCODE_RE = re.compile(
    rf"\b(?:GIR\s?0AA|(?:{'|'.join(_AREAS)})\d[A-Z\d]?\s?\d[ABD-HJLNP-UW-Z]{{2}})\b",
    re.IGNORECASE,
)


def is_valid_nhs_number(digits: str) -> bool:
    """Modulus 11 check of a 10-digit NHS number (decimal digits of any script)."""
    if len(digits) != 10 or not digits.isdecimal():
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

    # Order matters: dates of birth and emails first (they contain digits), then +44 phone
    # numbers, then NHS numbers (valid check digit only), then national phone numbers, then
    # postcodes.
    text = sub(_DOB_RE, DATE_OF_BIRTH, text, keep_cue=True)
    text = sub(_EMAIL_RE, EMAIL, text)
    text = sub(_INTERNATIONAL_PHONE_RE, PHONE, text)

    def nhs(m: re.Match[str]) -> str:
        if is_valid_nhs_number(re.sub(r"\D", "", m.group())):
            found[NHS_NUMBER] += 1
            return NHS_NUMBER
        return m.group()

    text = _TEN_DIGITS_RE.sub(nhs, text)
    text = sub(_PHONE_RE, PHONE, text)
    text = sub(_POSTCODE_RE, POSTCODE, text)
    return Redacted(text, found)
