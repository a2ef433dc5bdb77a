"""Linear-time probes for redaction's patterns: where in a text a pattern could match.

A probe is a pattern for RE2 (``google-re2``: a finite automaton, so its time is linear in
the text whatever the text) derived from a Python pattern by dropping what RE2 lacks: each
lookaround, word boundary and anchor becomes nothing, an atomic group or a possessive
repetition a plain one, a conditional either of its branches, and a repetition of more than
``_MOST`` a repetition of any number. Dropping a condition or a bound only makes a pattern
match more, so a probe matches wherever its Python pattern does (the word boundaries that
make a Python pattern selective are put back by hand, as the characters ``before`` and
``after`` a match that a probe consumes). :func:`live` scans a text with a probe and
returns the stretches where its pattern may start a match; :func:`finditer` runs the Python
pattern on those alone, so that text where nothing could match (a megabyte of near misses)
costs one pass of RE2, and the matches are exactly those of ``pattern.finditer(text)``.
"""

from __future__ import annotations

import re
import re._constants as c  # (the parser's node types: a probe is built from the parse tree)
import re._parser as parser
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import re2

# Python's \s (every Unicode space: RE2's \s is ASCII only), and the characters that are
# not ASCII but that Python matches against an ASCII letter when ignoring case (ı, İ, ſ, K:
# RE2 folds the last two only).
_SPACES = re.findall(r"\s", "".join(map(chr, range(0x3001))))
_CASE_EXTRAS = re.findall(r"(?i)[a-z]", "".join(map(chr, range(0x80, 0x10000))))
# A repetition bounded above this is unbounded in a probe: a smaller automaton (an e-mail
# address's labels, up to 63 characters each, made the e-mail probe's outgrow RE2's memory).
_MOST = 16
# After a probe's hit, the characters its pattern is run on before the next probe scan: a
# scan costs a Python call, so hits closer than this are one stretch.
_STRETCH = 1000
# How far before its pattern's match a probe's may start (the characters it consumes before
# it: a word boundary and a postcode's area).
_BEFORE = 8


def _char(code: int) -> str:
    return f"\\x{{{code:x}}}"


def _set(items: list[tuple[Any, Any]], ignorecase: bool) -> str:
    """An RE2 character class for a parsed Python one (``[...]``, or a literal)."""
    re2_items, python_items, negate = [], [], False
    for op, av in items:
        if op is c.NEGATE:
            negate = True
        elif op is c.LITERAL:
            re2_items.append(_char(av))
            python_items.append(f"\\U{av:08x}")
        elif op is c.RANGE:
            re2_items.append(f"{_char(av[0])}-{_char(av[1])}")
            python_items.append(f"\\U{av[0]:08x}-\\U{av[1]:08x}")
        elif op is c.CATEGORY and av is c.CATEGORY_SPACE:
            re2_items += map(_char, map(ord, _SPACES))
            python_items.append(r"\s")
        else:
            raise ValueError(f"no probe for {op} {av}")
    if not ignorecase:
        return f"[{'^' if negate else ''}{''.join(re2_items)}]"
    if negate:
        raise ValueError("no probe for a negated class ignoring case")
    python = re.compile(f"[{''.join(python_items)}]", re.IGNORECASE)
    re2_items += [_char(ord(x)) for x in _CASE_EXTRAS if python.fullmatch(x)]
    return f"(?i:[{''.join(re2_items)}])"


def _source(pattern: parser.SubPattern, ignorecase: bool) -> str:
    """RE2's form of a parsed Python pattern, less what RE2 lacks (module docstring)."""
    out = []
    for op, av in pattern:
        if op is c.LITERAL:
            out.append(_set([(op, av)], ignorecase))
        elif op is c.NOT_LITERAL and not ignorecase:
            out.append(f"[^{_char(av)}]")
        elif op is c.ANY:
            out.append("(?s:.)")
        elif op is c.IN:
            out.append(_set(av, ignorecase))
        elif op is c.BRANCH:
            out.append(f"(?:{'|'.join(_source(branch, ignorecase) for branch in av[1])})")
        elif op is c.SUBPATTERN:
            _, add, remove, sub = av
            out.append(f"(?:{_source(sub, bool((ignorecase or add & re.I) and not remove & re.I))})")
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            least, most, sub = av
            most = "" if most is c.MAXREPEAT or most > _MOST else most
            out.append(f"(?:{_source(sub, ignorecase)}){{{least},{most}}}")
        elif op is c.ATOMIC_GROUP:
            out.append(f"(?:{_source(av, ignorecase)})")
        elif op is c.GROUPREF_EXISTS:
            _, yes, no = av
            out.append(f"(?:{_source(yes, ignorecase)}|{_source(no, ignorecase) if no else ''})")
        elif op in (c.ASSERT, c.ASSERT_NOT, c.AT):
            continue
        else:
            raise ValueError(f"no probe for {op} {av}")
    return "".join(out)


@dataclass(frozen=True)
class Probe:
    pattern: re.Pattern[str]
    probe: Any  # (re2's compiled pattern: the package has no type hints)
    # The most characters the pattern looks at from where a match attempt starts (its
    # longest match and what its lookaheads read past it): a stretch's last attempt is made
    # on the text up to this far past the stretch.
    reach: int


def probe(pattern: re.Pattern[str], *, reach: int, before: str = "", start: str = "",
          after: str = "") -> Probe:
    """The probe of ``pattern``, which looks at most ``reach`` characters on from where a
    match attempt starts: the characters ``before`` its match start (one of them, or the
    start of the text) and ``after`` its end (one of them, or the end) are RE2 classes, to
    say what its lookarounds say about a word boundary; ``start`` is consumed before the
    pattern itself (a postcode's area, which its pattern looks behind for)."""
    body = _source(parser.parse(pattern.pattern, pattern.flags),
                   bool(pattern.flags & re.IGNORECASE))
    source = (f"(?:^|{before})" if before else "") + start + body + (
        f"(?:{after}|$)" if after else "")
    options = re2.Options()
    # (Were its automaton ever to outgrow RE2's memory for it, RE2 would go on more slowly,
    # still in linear time, and not write to the log each time.)
    options.log_errors = False
    return Probe(pattern, re2.compile(source, options), reach)


def live(probe: Probe, text: str) -> Iterator[tuple[int, int]]:
    """The stretches of ``text`` (start, end) outside which the probe's pattern starts no
    match, in order and apart: one RE2 scan, with a Python step per stretch only."""
    # (A lone surrogate, which JSON may carry, is one "?": a character none of the probes'
    # classes is missing where its pattern's may match one.)
    data = text.encode(errors="replace")
    ascii = len(data) == len(text)
    at = start = 0  # (the byte the next scan starts at, and the character it is)
    stretch: tuple[int, int] | None = None
    while start < len(text) and (hit := probe.probe.search(data, at)) is not None:
        # No probe's match starts between ``start`` and ``first``, so no pattern's match
        # starts between ``start + _BEFORE`` and ``first``.
        first = hit.start() if ascii else start + len(data[at:hit.start()].decode())
        end = first + _STRETCH + _BEFORE
        if stretch is not None and first <= stretch[1] + probe.reach:  # (the pattern reads on
            # past a stretch's end anyway: as far again joins them)
            stretch = (stretch[0], end)
        else:
            if stretch is not None:
                yield stretch
            stretch = (first, end)
        start = first + _STRETCH
        at = start if ascii else hit.start() + len(text[first:start].encode(errors="replace"))
    if stretch is not None:
        yield stretch


def finditer(probe: Probe, text: str,
             get: Callable[[re.Match[str]], tuple[Any, ...]] = re.Match.span,
             ) -> list[tuple[Any, ...]]:
    """``get`` of each match of ``probe.pattern.finditer(text)`` (what a caller keeps of a
    match: a tuple whose first item is where it starts, its span by default), the pattern
    run only where its probe finds it may match. (No match starts outside the stretches,
    and none is longer than the gap between two: the matches in each are those of a scan of
    the whole text. A stretch's matches are listed by C code, with no Python step for each
    but ``get``, and are not kept: a list of many match objects would have the garbage
    collector walk it again and again.)"""
    found: list[tuple[Any, ...]] = []
    for start, end in live(probe, text):
        found += map(get, probe.pattern.finditer(text, start, min(len(text), end + probe.reach)))
        # (Any from the stretch's end on is not a match: the text was cut short for it, and
        # a lookahead at the cut may have passed where the text goes on.)
        while found and found[-1][0] >= end:
            found.pop()
    return found
