"""Redaction of personal data from free text, before anything leaves intake.

Finds NHS numbers (only those whose Modulus 11 check digit is valid, in any spacing), UK
phone numbers, email addresses, UK postcodes and dates of birth (a date introduced as a date
of birth, or followed by an age), and replaces each with a bracketed label. Pure functions,
no I/O.

Evasions are normalised away before matching: the text is matched in its Unicode NFKC form
(full-width digits and letters, ``＠``, no-break and thin spaces), with invisible characters
(zero-width spaces and joiners, soft hyphens, bidirectional controls: Unicode's default
ignorable code points) removed, dashes folded to ``-`` and every script's decimal digits
read as ASCII ones; separators inside numbers may be spaces (up to a wide gap), dots,
slashes or hyphens; ``0044`` is ``+44``; e-mail addresses may be written ``[at]``,
``(at)``, or ``at`` and ``dot`` spelled out. A text in which nothing is found is returned
exactly as it came; one in which something is found is returned in its normalised form,
redacted.

Redaction runs in linear time. Each pattern is found first by its probe (``probe.py``): a
form of it for RE2, an engine whose time is linear in the text whatever the text, that
matches wherever the pattern could; the Python pattern (which RE2 could not run: it looks
behind and ahead) is then run on the stretches around the probe's hits alone, so a text of
near misses costs one RE2 scan a pattern. Where data is dense, each pattern is bounded (each
repetition is, and a pattern that could start inside a run it has already scanned, an
e-mail's local part, only starts at the beginning of the run), and no step runs Python code
per character (folding replaces each distinct character at once; a match's Python step is
what is kept of it, and NHS numbers' check digits are summed by C code). The walks over
digits are atomic (each step is a digit, or one separator then a digit: there is only ever
one way to take it, so giving steps back could not make a match, and the engine is not
left to try). ``tools/bench.py`` (``python -m tools.bench --redaction-only``) measures it on
normal and adversarial text, ``tests/unit/test_intake_redaction.py`` checks that its time
grows linearly on each shape, and ``tests/unit/test_intake_redaction_adversarial.py`` checks
its output on large adversarial text.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from itertools import compress
from operator import add, itemgetter

from services.intake.probe import Probe, finditer, probe

NHS_NUMBER = "[NHS NUMBER]"
PHONE = "[PHONE]"
EMAIL = "[EMAIL]"
POSTCODE = "[POSTCODE]"
DATE_OF_BIRTH = "[DATE OF BIRTH]"

# -- normalisation -------------------------------------------------------------------------------
# Unicode's Default_Ignorable_Code_Point characters (invisible when rendered), and the Hangul
# fillers and combining grapheme joiner, which render as nothing too.
_INVISIBLE_RE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]")
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"


@cache
def _fold_table() -> dict[int, str]:
    """Dashes to ``-``, and the decimal digits of every script to ASCII (built once, on the
    first text that is not ASCII)."""
    table = {ord(c): "-" for c in _DASHES}
    every = "".join(map(chr, range(0x80, 0x110000)))
    for digit in re.findall(r"\d", every):
        table[ord(digit)] = str(unicodedata.decimal(digit))
    return table


def normalise(text: str) -> str:
    """The form of ``text`` that redaction matches: NFKC, invisible characters removed,
    dashes and digits folded to ASCII. ASCII text is returned as it is."""
    if text.isascii():
        return text
    text = _each(unicodedata.normalize("NFKC", text), _INVISIBLE_RE, lambda _: "",
                 lambda t: _INVISIBLE_RE.sub("", t))
    return _each(text, _FOLDABLE_RE, lambda c: _fold_table()[ord(c)],
                 lambda t: t.translate(_fold_table())) if not text.isascii() else text


# Removing and folding replace each distinct character to replace all at once (str.replace
# is C); past this many distinct ones, one pass over the whole text is cheaper. Never a
# Python step per character or per run.
_ONE_BY_ONE = 16
# A character that :func:`_fold_table` folds: a dash, or a decimal digit that is not ASCII.
_FOLDABLE_RE = re.compile(rf"[^\x00-\x7f](?<=[{_DASHES}\d])")


def _each(text: str, found: re.Pattern[str], by: Callable[[str], str],
          whole: Callable[[str], str]) -> str:
    """``text`` with each character ``found`` replaced ``by`` its replacement, or ``whole``
    once many distinct ones are found. (Each replacement is one character or none, so the
    text before the last one found is the same.)"""
    at = 0
    for _ in range(_ONE_BY_ONE):
        m = found.search(text, at)
        if m is None:
            return text
        text, at = text.replace(m.group(), by(m.group())), m.start()
    return whole(text)


# -- patterns ------------------------------------------------------------------------------------
_MONTHS = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
           r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_YEAR = r"(?:[0-9]{4}|[0-9]{2})"
# Dates with a day, month and year (the year may be 2 digits).
_FULL_DATE = (rf"(?:[0-9]{{1,2}}[/.\-][0-9]{{1,2}}[/.\-][0-9]{{2,4}}"
              rf"|[0-9]{{4}}-[0-9]{{1,2}}-[0-9]{{1,2}}"
              # 03-Mar-1954, 3/Mar/54 (patient administration systems)
              rf"|[0-9]{{1,2}}[\-/ ]{_MONTHS}[\-/ ]{_YEAR}"
              rf"|[0-9]{{1,2}}(?:st|nd|rd|th)?\s{{1,3}}(?:of\s{{1,3}})?{_MONTHS}\.?,?\s{{1,3}}"
              rf"{_YEAR}"
              rf"|{_MONTHS}\.?\s{{1,3}}[0-9]{{1,2}}(?:st|nd|rd|th)?,?\s{{1,3}}{_YEAR})(?![0-9])")
# After a cue, a month and a four-digit year is a date of birth too ("born in March 1938").
_DATE = rf"(?:{_FULL_DATE}|{_MONTHS}\.?,?\s{{1,3}}(?:1[89]|20)[0-9]{{2}}(?![0-9]))"
# Matched on the lower-cased text (a pattern that starts with a character set, rather than
# with \b and case-insensitive, is scanned for about ten times as fast).
_DOB_RE = re.compile(
    rf"(?P<cue>[bd](?<!\w[bd])(?:\.?\s?o\.?\s?b\.?|ate\s{{1,3}}of\s{{1,3}}birth|irth\s{{0,3}}date"
    rf"|orn(?:\s{{1,3}}(?:on|in))?+(?:\s{{1,3}}the)?+)"
    rf"\s{{0,3}}+(?:(?:is|was)\s{{1,3}}+)?[:\-]?\s{{0,3}}+)(?P<date>{_DATE})",
)
# A date followed by an age, with no cue word ("Mrs K 14/02/1938 (86)", "03/04/1941, 83
# yrs", "12.03.1938 aged 86"). Found from its four-digit year followed by an age (rare, and
# a pattern that starts with a digit is scanned for fast), then the date that ends with that
# year is looked for just before it; the date is a date of birth when year + age is a
# plausible present (``_dob_by_age``).
_YEAR_THEN_AGE_RE = re.compile(
    r"[12](?<![0-9][12])(?:[89]|0)(?<![2][89])(?<![1]0)[0-9]{2}(?P<iso>-[0-9]{1,2}-[0-9]{1,2})?"
    # A year that ends a date follows a separator (12/03/1938, 3 June 1938, 03-Mar-1938);
    # one that starts it is ISO (1938-03-12). Any other year is no date's.
    r"(?![0-9])(?(iso)|(?<=[/.\-\s][0-9]{4}))"
    r"[ \t]{0,2}[,;(\-]?[ \t]{0,2}"
    r"(?:aged?[ \t]{0,2}(?P<aged>[0-9]{1,3})(?![0-9])"
    r"|(?P<age>[0-9]{1,3})[ \t]{0,2}(?:\)|,|y(?:ea)?rs?\b|y/?o\b|years?[ \t]old))",
    re.IGNORECASE,
)
_DOB_CI_RE = re.compile(_DOB_RE.pattern, re.IGNORECASE)
_DATE_AT_END_RE = re.compile(rf"(?:{_FULL_DATE})\Z", re.IGNORECASE)
_LOCAL = r"[A-Za-z0-9._%+\-'_]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_AT_BRACKETED = r"\s{0,2}[\[({<]\s?at\s?[\])}>]\s{0,2}"
_DOT_SPELLED = r"(?:\s{0,2}[\[({<]\s?dot\s?[\])}>]\s{0,2}|\s{1,2}dot\s{1,2})"
_DOT_ANY = rf"(?:{_DOT_SPELLED}|\.)"
# The local part starts only where a run of local-part characters starts (the lookbehind),
# so a long run with no @ is scanned once, not once per character.
# The local part is possessive: what may follow it (``@``, a blank, a bracket) is never a
# local-part character, so giving some back could not help, and the engine does not try.
_EMAIL_RE = re.compile(
    rf"{_LOCAL}(?<!{_LOCAL}{_LOCAL}){_LOCAL}{{0,63}}+"
    rf"(?:(?:@|[ \t]@[ \t]){_LABEL}(?:\.{_LABEL}){{1,8}}"
    rf"|{_AT_BRACKETED}{_LABEL}(?:{_DOT_ANY}{_LABEL}){{1,8}}"
    # "john at example dot com": a plain " at " only with the first dot spelled out.
    rf"|\s{{1,2}}at\s{{1,2}}{_LABEL}{_DOT_SPELLED}{_LABEL}(?:{_DOT_ANY}{_LABEL}){{0,7}})"
    rf"(?![A-Za-z0-9\-])",
)
_EMAIL_CI_RE = re.compile(_EMAIL_RE.pattern, re.IGNORECASE)
# Between the digits of a number: a space or a wide gap (up to 12 blanks or line breaks),
# or one dot, slash or hyphen with a space either side at most.
_NUMBER_SEP = r"(?:\s{1,12}|[ \t]?[\-./][ \t]?)"
_PHONE_SEP = r"(?:[ \t]{1,3}|[ \t]?[\-./][ \t]?)"
# (A digit after a digit is tried before any separator, ``(?:[0-9]|SEP[0-9])``: the same
# match as ``(?:SEP?[0-9])``, and faster on long runs of grouped digits: BENCHMARKS.md.)
# Ten digits, not inside a longer number.
# (The walks are atomic, ``(?>...)``: a digit and a separator never start alike, and a
# separator is either blanks or one mark, so a walk can be taken one way only, and a
# candidate that fails at its end fails at once rather than giving back each step.)
_TEN_DIGITS_RE = re.compile(
    rf"[0-9](?<![\w][0-9])(?>(?:[0-9]|{_NUMBER_SEP}[0-9]){{9}})(?![\w])")
# +44 (or 0044) numbers: 9 or 10 national digits, optionally "(0)". Found before NHS
# numbers: about 1 in 11 of them would pass the Modulus 11 check. (Nine digits, then a
# tenth tried before none: the greedy ``{9,10}``, with the walk atomic.)
_INTERNATIONAL_PHONE_RE = re.compile(
    rf"(?:\+(?<![\w+]\+)[ \t]?|0(?<![\w+]0)0[ \t]?)44(?:{_PHONE_SEP}?\(0\))?"
    rf"(?>(?:[0-9]|{_PHONE_SEP}[0-9]){{9}})(?:(?:[0-9]|{_PHONE_SEP}[0-9])(?![\w])|(?![\w]))")
# National numbers: 0 and ten more digits (0800/0808/0500 numbers may have nine), grouped by
# spaces, dots, slashes, hyphens or an area code in brackets. A 0 and nine digits is an order
# number.
_PHONE_RE = re.compile(
    rf"(?:\((?<![\w+]\()0(?:(?:[ \-]{{0,2}}\)?[ \-]{{0,2}}|{_PHONE_SEP})?[0-9]){{10}}"
    rf"|0(?<![\w+]0)(?>(?:[0-9]|{_PHONE_SEP}[0-9]){{10}})"
    rf"|0(?<![\w+]0){_PHONE_SEP}?(?:800|808|500)(?>(?:[0-9]|{_PHONE_SEP}[0-9]){{6}}))(?![\w])")
# Postcode areas of the UK (and GIR 0AA), so that a ward called "C4" is not a postcode.
_AREAS = frozenset((
    "AB AL BA BB BD BF BH BL BN BR BS BT BX CA CB CF CH CM CO CR CT CV CW DA DD DE DG DH "
    "DL DN DT DY EC EH EN EX FK FY GL GU GY HA HD HG HP HR HS HU HX IG IM IP IV JE KA KT "
    "KW KY LA LD LE LL LN LS LU ME MK ML NE NG NN NP NR NW OL OX PA PE PH PL PO PR RG RH "
    "RM SA SE SG SK SL SM SN SO SP SR SS ST SW SY TA TD TF TN TQ TR TS TW UB WA WC WD WF "
    "WN WR WS WV YO ZE B E G L M N S W").split())


def _letters(letters: set[str]) -> str:
    return "".join(sorted(letters | {c.lower() for c in letters}))


# From the outward code's district digit, with the area's one or two letters (starting a
# word) looked behind it, so only plausible areas reach the exact check in Python.
_POSTCODE_RE = re.compile(
    rf"[0-9](?<=[A-Za-z][0-9])(?:(?<=(?<!\w)(?P<two>[{_letters({a[0] for a in _AREAS if len(a) == 2})}]"
    rf"[{_letters({a[1] for a in _AREAS if len(a) == 2})}])[0-9])"
    rf"|(?<=(?<!\w)(?P<one>[{_letters({a for a in _AREAS if len(a) == 1})}])[0-9]))"
    r"[A-Za-z0-9]?\s{0,3}[0-9][ABD-HJLNP-UW-Zabd-hjlnp-uw-z]{2}(?![\w])")
_GIR_RE = re.compile(r"[Gg](?<!\w[Gg])[Ii][Rr]\s{0,3}0[Aa][Aa]\b")
# Their probes (``probe.py``): where each could match, found in linear time by RE2 with what
# its lookarounds say of the characters around a match (not a letter, digit or underscore),
# and how far each looks on from where it starts: at most 120 characters for a number or a
# date (ten digits with 12-blank gaps is 118, a cue and a date about 60), and 750 for an
# e-mail address (64 + 9 x 63 characters, and the separators between them).
_NEAR, _FAR = 200, 1000
_WORD_EDGE = r"[^\w]"
_DOB = probe(_DOB_RE, reach=_NEAR, before=_WORD_EDGE, after="[^0-9]")
_DOB_CI = probe(_DOB_CI_RE, reach=_NEAR, before=_WORD_EDGE, after="[^0-9]")
_YEAR_THEN_AGE = probe(_YEAR_THEN_AGE_RE, reach=_NEAR, before="[^0-9]")
_EMAIL = probe(_EMAIL_RE, reach=_FAR, before=r"[^A-Za-z0-9._%+\-'_]",
               after=r"[^A-Za-z0-9\-]")
_EMAIL_CI = probe(_EMAIL_CI_RE, reach=_FAR, before=r"[^A-Za-z0-9._%+\-'_]",
                  after=r"[^A-Za-z0-9\-]")
_TEN_DIGITS = probe(_TEN_DIGITS_RE, reach=_NEAR, before=_WORD_EDGE, after=_WORD_EDGE)
_INTERNATIONAL_PHONE = probe(_INTERNATIONAL_PHONE_RE, reach=_NEAR, before=r"[^\w+]",
                             after=_WORD_EDGE)
_PHONE = probe(_PHONE_RE, reach=_NEAR, before=r"[^\w+]", after=_WORD_EDGE)
_POSTCODE = probe(_POSTCODE_RE, reach=_NEAR, before=_WORD_EDGE, after=_WORD_EDGE, start=(
    rf"(?:[{_letters({a[0] for a in _AREAS if len(a) == 2})}]"
    rf"[{_letters({a[1] for a in _AREAS if len(a) == 2})}]"
    rf"|[{_letters({a for a in _AREAS if len(a) == 1})}])"))
_GIR = probe(_GIR_RE, reach=_NEAR, before=_WORD_EDGE, after=_WORD_EDGE)
_NOT_DIGITS = str.maketrans("", "", " \t\r\n\f\v-./()")
_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)


def is_valid_nhs_number(digits: str) -> bool:
    """Modulus 11 check of a 10-digit NHS number (decimal digits of any script)."""
    if len(digits) != 10 or not digits.isdecimal():
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], _WEIGHTS, strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


_DIGIT_RUN_RE = re.compile(r"[0-9]+")
_NHS_GROUP_SEPARATORS = frozenset(" -./")
_UUID_RE = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}(-?)[0-9a-fA-F]{4}\1[0-9a-fA-F]{4}\1"
                      r"[0-9a-fA-F]{4}\1[0-9a-fA-F]{12}(?![0-9A-Za-z])")


def code_holds_personal_data(code: str) -> bool:
    """Whether a code (a record id, an ODS code: letters, digits and punctuation, no spaces)
    holds an NHS number (ten digits, or 3-3-4 groups, with a valid check digit), a phone
    number (0 and ten digits) or an e-mail address. Stricter than ``redact`` on what makes
    a number (its digits must stand alone), since ids often join groups of digits with
    hyphens: ``FFT-RKE-2026-11-004417-12345678`` is a reference, not a phone number."""
    code = normalise(code)
    if "@" in code:
        return True
    # A UUID (a system's own id: 32 hex digits, hyphens optional) is no one's number: one
    # in two hundred random UUIDs holds ten or eleven digits in a row between its letters.
    code = _UUID_RE.sub(lambda m: m.group() if m.group().isdigit() else "-", code)
    found = list(_DIGIT_RUN_RE.finditer(code))
    runs = [m.group() for m in found]
    for n, run in enumerate(runs):
        if len(run) == 10 and is_valid_nhs_number(run):
            return True
        if len(run) == 11 and run[0] == "0":
            return True
        # 3-3-4 groups are an NHS number only as people write one, each group parted from
        # the next by one space, hyphen, dot or slash: in ``3f0a123b456c7890`` (a UUID's hex)
        # letters part them, and one such id in eleven would pass the check digit.
        if [len(r) for r in runs[n:n + 3]] == [3, 3, 4] and all(
                code[found[k].end():found[k + 1].start()] in _NHS_GROUP_SEPARATORS
                for k in (n, n + 1)) and is_valid_nhs_number("".join(runs[n:n + 3])):
            return True
    return False


@dataclass
class Redacted:
    text: str
    found: Counter[str] = field(default_factory=Counter)

    @property
    def changed(self) -> bool:
        return bool(self.found)


def redact(text: str) -> Redacted:
    """Replace personal data in ``text`` with labels; count what was found by label."""
    normal = normalise(text)
    found: Counter[str] = Counter()
    out = _redact(normal, found)
    # Nothing found: the text as it came (normalisation is for matching, not for storing).
    return Redacted(out if found else text, found)


def _redact(text: str, found: Counter[str]) -> str:
    # Order matters: dates of birth and emails first (they contain digits), then +44 phone
    # numbers, then NHS numbers (valid check digit only), then national phone numbers, then
    # postcodes.
    text = _dates_of_birth_by_age(_dates_of_birth_by_cue(text, found), found)
    text = _emails(text, found)
    text = _replace(text, _spans(_INTERNATIONAL_PHONE, text), PHONE, found)
    text = _nhs_numbers(text, found)
    text = _replace(text, _spans(_PHONE, text), PHONE, found)
    return _postcodes(text, found)


def _spans(probe: Probe, text: str) -> list[tuple[int, int]]:
    return finditer(probe, text)  # (each match's span)


# The weighted sum of an NHS number's digits by groups (the first three, the next three and
# the last four, the check digit weighing 1): a dictionary lookup each rather than nine
# multiplications (dense runs of digits are a redaction's worst case). The check digit is
# valid when the whole sum is a multiple of 11: it is then ``11 - sum % 11`` of the first
# nine (0 for 11), and never 10, which no digit is.
_GROUP_SUMS = [{f"{n:0{len(w)}d}": sum(int(d) * w for d, w in zip(f"{n:0{len(w)}d}", w,
                                                                   strict=True))
                for n in range(10 ** len(w))}
               for w in (_WEIGHTS[:3], _WEIGHTS[3:6], (*_WEIGHTS[6:], 1))]
_GROUPS = (itemgetter(slice(0, 3)), itemgetter(slice(3, 6)), itemgetter(slice(6, 10)))
_MULTIPLE_OF_11 = tuple(total % 11 == 0 for total in range(9 * 55 + 1))


def _nhs_numbers(text: str, found: Counter[str]) -> str:
    """Ten digits with a valid check digit. The candidates are checked all at once by C code
    (``map``: dense runs of digits make one every few characters), a Python step only for
    each found."""
    spans = _spans(_TEN_DIGITS, text)
    if not spans:
        return text
    # Ten digits once the ASCII separators are gone: any other separator (a Unicode space)
    # is still there and makes it longer. (One translate of all the candidates, joined by a
    # character none holds: a translate each would cost a Python call per candidate.)
    digits = "|".join([text[start:end] for start, end in spans]).translate(
        _NOT_DIGITS).split("|")
    ten = list(map((10).__eq__, map(len, digits)))
    digits = list(compress(digits, ten))
    first, second, last = (list(map(sums.__getitem__, map(group, digits)))
                           for sums, group in zip(_GROUP_SUMS, _GROUPS, strict=True))
    valid = map(_MULTIPLE_OF_11.__getitem__, map(add, map(add, first, second), last))
    return _replace(text, list(compress(compress(spans, ten), valid)), NHS_NUMBER, found)


def _lower(text: str) -> str | None:
    """``text`` lower-cased, when that keeps every character where it was."""
    lower = text.lower()
    return lower if len(lower) == len(text) else None


def _replace(text: str, spans: list[tuple[int, int]], label: str, found: Counter[str]) -> str:
    if not spans:
        return text
    found[label] += len(spans)
    parts, done = [], 0
    for start, end in spans:
        parts += [text[done:start], label]
        done = end
    return "".join([*parts, text[done:]])


def _dates_of_birth_by_cue(text: str, found: Counter[str]) -> str:
    lower = _lower(text)
    # (A character whose lower case is longer: match case-insensitively.)
    spans = (finditer(_DOB, lower, _date_span) if lower is not None
             else finditer(_DOB_CI, text, _date_span))
    return _replace(text, [(start, end) for _, start, end in spans], DATE_OF_BIRTH, found)


def _date_span(m: re.Match[str]) -> tuple[int, int, int]:
    return m.start(), m.start("date"), m.end()


def _emails(text: str, found: Counter[str]) -> str:
    lower = _lower(text)
    spans = _spans(_EMAIL, lower) if lower is not None else _spans(_EMAIL_CI, text)
    return _replace(text, spans, EMAIL, found)


def _postcodes(text: str, found: Counter[str]) -> str:
    """Postcodes, found from their digits (the outward code's district and the inward
    code), with the area's one or two letters checked before them."""
    spans = []
    for start, end, area in finditer(_POSTCODE, text, _span_and_area):
        if area.upper() in _AREAS:
            spans.append((start - len(area), end))
    spans += _spans(_GIR, text)
    return _replace(text, sorted(spans), POSTCODE, found)


def _span_and_area(m: re.Match[str]) -> tuple[int, int, str]:
    return m.start(), m.end(), m["two"] or m["one"]


def _dates_of_birth_by_age(text: str, found: Counter[str]) -> str:
    parts: list[str] = []
    done = 0
    for year_start, iso_end, aged in finditer(_YEAR_THEN_AGE, text, _year_and_age):
        year = int(text[year_start:year_start + 4])
        if iso_end >= 0:  # 1938-03-12: the date starts with its year
            start, end = year_start, iso_end
        else:
            date = _DATE_AT_END_RE.search(text, max(done, year_start - 30), year_start + 4)
            start, end = (date.start(), date.end()) if date else (-1, -1)
        age = int(aged)
        if start >= done and age <= 120 and 1990 <= year + age <= 2100:
            found[DATE_OF_BIRTH] += 1
            parts += [text[done:start], DATE_OF_BIRTH]
            done = end
    return "".join([*parts, text[done:]]) if parts else text


def _year_and_age(m: re.Match[str]) -> tuple[int, int, str]:
    """Where the year starts, where an ISO date it starts ends (-1: none), and the age."""
    return m.start(), m.end("iso"), m["aged"] or m["age"]
