"""A rule regex reversed: it matches a text read backwards exactly when the regex matches the text.

The native recall core finds where a regex hit starts by running the reversed regex, anchored, over
the characters before the hit's end read backwards: the longest match is the leftmost start. An
anchored scan stops within a few characters, where a start-of-match (SOM) database would track
every possible start.

Only the subset rule regexes may use (regexcheck.py) is reversed: literals, classes, ``.``,
groups, alternation, repeats, ``\\b`` / ``\\B``. Anything else returns ``None`` (the caller keeps its
SOM database). The output is valid for Hyperscan and for Python ``re`` alike (the tests run both).
"""

from __future__ import annotations

from re import _constants as sre_c  # type: ignore[attr-defined]

from callqc.rules.regexcheck import REGEX_FLAGS, sre_parse

_CATEGORIES = {
    sre_c.CATEGORY_DIGIT: r"\d",
    sre_c.CATEGORY_NOT_DIGIT: r"\D",
    sre_c.CATEGORY_SPACE: r"\s",
    sre_c.CATEGORY_NOT_SPACE: r"\S",
    sre_c.CATEGORY_WORD: r"\w",
    sre_c.CATEGORY_NOT_WORD: r"\W",
}
_SPECIAL = set(".^$*+?{}[]()|\\/-#&~ \t\n\r\f\v")


class _Unsupported(Exception):
    pass


def reverse_regex(expr: str, narrow: bool = False) -> str | None:
    """``expr`` reversed (``None`` if it uses a construct this does not reverse).

    ``narrow``: the regex is for the one-byte-per-character narrow layer, so characters 0x80-0xFF are
    written as ``\\xNN`` bytes rather than as UTF-8 characters.
    """
    try:
        return _sequence(sre_parse.parse(expr, REGEX_FLAGS), narrow)
    except _Unsupported:
        return None


def _char(code: int, narrow: bool) -> str:
    if code < 0x80:
        ch = chr(code)
        return f"\\x{code:02x}" if ch in _SPECIAL or not ch.isprintable() else ch
    if narrow:
        if code > 0xFF:
            raise _Unsupported
        return f"\\x{code:02x}"
    return chr(code)


def _class_item(op: object, arg: object, narrow: bool) -> str:
    if op is sre_c.LITERAL:
        return _char(arg, narrow)  # type: ignore[arg-type]
    if op is sre_c.RANGE:
        lo, hi = arg  # type: ignore[misc]
        return f"{_char(lo, narrow)}-{_char(hi, narrow)}"
    if op is sre_c.CATEGORY and arg in _CATEGORIES:
        return _CATEGORIES[arg]
    raise _Unsupported


def _class(items: list, narrow: bool) -> str:
    negate = bool(items) and items[0][0] is sre_c.NEGATE
    body = "".join(_class_item(op, arg, narrow) for op, arg in (items[1:] if negate else items))
    return f"[{'^' if negate else ''}{body}]"


def _repeat(body: str, lo: int, hi: int) -> str:
    if hi == sre_c.MAXREPEAT:
        return f"(?:{body}){{{lo},}}"
    return f"(?:{body}){{{lo},{hi}}}"


def _node(op: object, arg: object, narrow: bool) -> str:
    if op is sre_c.LITERAL:
        return _char(arg, narrow)  # type: ignore[arg-type]
    if op is sre_c.NOT_LITERAL:
        return f"[^{_char(arg, narrow)}]"  # type: ignore[arg-type]
    if op is sre_c.ANY:
        return "."
    if op is sre_c.IN:
        return _class(list(arg), narrow)  # type: ignore[call-overload]
    if op is sre_c.CATEGORY and arg in _CATEGORIES:
        return _CATEGORIES[arg]
    if op is sre_c.AT and arg in (sre_c.AT_BOUNDARY, sre_c.AT_NON_BOUNDARY):
        return r"\b" if arg is sre_c.AT_BOUNDARY else r"\B"  # symmetric: the same backwards
    if op is sre_c.BRANCH:
        return "(?:" + "|".join(_sequence(branch, narrow) for branch in arg[1]) + ")"  # type: ignore[index]
    if op is sre_c.SUBPATTERN:
        _group, add_flags, del_flags, body = arg  # type: ignore[misc]
        if add_flags or del_flags:
            raise _Unsupported
        return f"(?:{_sequence(body, narrow)})"
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):  # greedy or lazy: the same set of matches
        lo, hi, body = arg  # type: ignore[misc]
        return _repeat(_sequence(body, narrow), lo, hi)
    raise _Unsupported


def _sequence(items: object, narrow: bool) -> str:
    return "".join(_node(op, arg, narrow) for op, arg in reversed(list(items)))  # type: ignore[call-overload]
