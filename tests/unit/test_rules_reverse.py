"""Reversed rule regexes: a reversed regex matches a reversed text exactly when the regex matches the text."""

from __future__ import annotations

import random
import re

import pytest

from callqc.rules import RuleEngine, default_pack_path, load_rule_pack
from callqc.rules.regexcheck import REGEX_FLAGS
from callqc.rules.reverse import reverse_regex

CASES = [
    "(请问|请问您|您|你)是.{1,8}(先生|女士|小姐|本人)(吗|么|嘛)",
    "[0-9一二两三四五六七八九十百千万]+(元|块)",
    r"(call|phone) ?me\b",
    r"\bsb\b",
    "a.{0,2}b",
    "[^说想问]{0,3}律师",
    r"x\d+[a-c]?y",
    "(ab|cd)*?e",
]
ALPHABET = "ab cdexy123元块是您先生吗律师说想问phonecallme\n"


def _fullmatch_both(expr: str, text: str) -> tuple[bool, bool]:
    backward = reverse_regex(expr)
    assert backward is not None
    forward = re.fullmatch(expr, text, REGEX_FLAGS) is not None
    return forward, re.fullmatch(backward, text[::-1], REGEX_FLAGS) is not None


@pytest.mark.parametrize("expr", CASES)
def test_reversed_regex_matches_reversed_text(expr: str) -> None:
    rng = random.Random(expr)
    samples = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    samples += ["请问您是张先生吗", "三万五千元", "call me", "sb", "axxb", "问律师", "好律师", "x12by", "ababcde"]
    agreed = [_fullmatch_both(expr, s) for s in samples]
    assert all(f == b for f, b in agreed)
    assert any(f for f, _ in agreed)  # the samples do exercise matches


def test_every_regex_of_the_default_pack_reverses() -> None:
    engine = RuleEngine(load_rule_pack(default_pack_path()), backend="aho-corasick")
    regexes = [i.pattern.expr for i in engine._compiled.infos if not i.pattern.literal]
    assert regexes and all(reverse_regex(r) is not None for r in regexes)


def test_narrow_and_unsupported_regexes() -> None:
    assert reverse_regex("\\x80.{0,3}\\x81", narrow=True) == "\\x81(?:.){0,3}\\x80"
    assert reverse_regex("(?i:ab)c") is None  # inline flags are not reversed: the caller keeps SOM
