"""Rule regexes: what both matcher back-ends accept, and folding them like the text.

Regexes run on normalised text (no punctuation or whitespace except one space between English words),
under Hyperscan or Python ``re``; only the common subset is allowed so both back-ends agree.
"""

from __future__ import annotations

import re
from re import _constants as sre_c  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]

from callqc.textnorm import normalize_text

REGEX_FLAGS = re.IGNORECASE | re.ASCII  # \w, \d, \b are ASCII, as in Hyperscan without UCP

_UNSUPPORTED = {
    sre_c.ASSERT: "uses a look-ahead/look-behind, which the matcher does not support",
    sre_c.ASSERT_NOT: "uses a look-ahead/look-behind, which the matcher does not support",
    sre_c.GROUPREF: "uses a back-reference, which the matcher does not support",
    sre_c.GROUPREF_EXISTS: "uses a conditional group, which the matcher does not support",
}
_ALLOWED_AT = {sre_c.AT_BOUNDARY, sre_c.AT_NON_BOUNDARY}


def _walk(items: object) -> str | None:
    for op, arg in items:  # type: ignore[attr-defined]
        if op in _UNSUPPORTED:
            return _UNSUPPORTED[op]
        if op is sre_c.AT and arg not in _ALLOWED_AT:
            return "uses ^, $, \\A or \\Z anchors; a call is matched as a whole, use \\b or phrases"
        if op is sre_c.ATOMIC_GROUP or op is sre_c.POSSESSIVE_REPEAT:
            return "uses atomic groups or possessive repeats, which the matcher does not support"
        for sub in arg if isinstance(arg, tuple | list) else ():
            if isinstance(sub, sre_parse.SubPattern):
                problem = _walk(sub)
                if problem:
                    return problem
            elif isinstance(sub, list | tuple):
                for inner in sub:
                    if isinstance(inner, sre_parse.SubPattern):
                        problem = _walk(inner)
                        if problem:
                            return problem
    return None


def fold_regex(regex: str) -> str:
    """Fold non-ASCII characters like the text (traditional→simplified, full-width→ASCII)."""
    return "".join(ch if ch.isascii() else (normalize_text(ch) or ch) for ch in regex)


def check_regex(regex: str) -> str | None:
    """Why ``regex`` cannot be used as a rule pattern (``None`` when it can)."""
    dropped = sorted({ch for ch in regex if not ch.isascii() and not normalize_text(ch)})
    if dropped:
        return f"contains characters removed by normalisation: {''.join(dropped)!r}"
    folded = fold_regex(regex)
    try:
        compiled = re.compile(folded, REGEX_FLAGS)
    except re.error as exc:
        return f"is not a valid regex: {exc}"
    problem = _walk(sre_parse.parse(folded, REGEX_FLAGS))
    if problem:
        return problem
    if compiled.search("") is not None:
        return "can match empty text"
    return None
