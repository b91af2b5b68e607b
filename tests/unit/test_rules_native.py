"""The native recall core (callqc/rules/_recall.c): the same hits as the Python back-ends, and bad input refused."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from callqc.rules import RuleEngine, default_pack_path, load_rule_pack, transcript_from_turns
from callqc.rules.batch import Recall
from callqc.rules.context import CallText
from tests.unit.rule_backends import NATIVE, needs_hyperscan, needs_native

pytestmark = needs_native
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "perf"))


@cache
def engine(backend: str) -> RuleEngine:
    return RuleEngine(load_rule_pack(default_pack_path()), backend=backend)


@cache
def corpus() -> list[CallText]:
    import bench_rules

    calls = bench_rules.make_corpus(0.15, seed=11)
    return [engine(NATIVE).prepare(c.transcript) for c in calls]


def rows(recall: Recall) -> set[tuple[int, ...]]:
    """Every hit as (call, pattern, segment, start, end, phonetic)."""
    found: set[tuple[int, ...]] = set()
    for k in range(len(recall.bounds) - 1):
        found.update((k, *row) for row in zip(*recall.rows_of(k), strict=True))
    return found


@needs_hyperscan
@pytest.mark.parametrize("batch", [1, 7, 256])
def test_native_recall_equals_the_python_binding(batch: int) -> None:
    calls = corpus()
    native, python = engine(NATIVE), engine("hyperscan")
    for i in range(0, len(calls), batch):
        part = calls[i : i + batch]
        got, want = native.recall(part), python.recall(part)
        assert rows(got) == rows(want)
        assert got.bounds.tolist() == want.bounds.tolist()
    assert sum(len(native.recall(calls[i : i + 256])) for i in range(0, len(calls), 256)) > 1000


def test_whole_layer_patterns_agree_with_aho_corasick() -> None:
    """Aho-Corasick + Python re report every hit; the native core the same, except repeats of first-use patterns."""
    calls = corpus()[:60]
    native, ac = rows(engine(NATIVE).recall(calls)), rows(engine("aho-corasick").recall(calls))
    first = {i.pattern.id for i in engine(NATIVE)._compiled.infos if i.pattern.first_only}
    assert {r for r in native if r[1] not in first} == {r for r in ac if r[1] not in first}
    assert {r for r in native if r[1] in first} <= ac


def test_offsets_count_characters_of_every_width() -> None:
    """Latin-1, CJK and astral characters before a hit: offsets are characters of the normalised text."""
    turns = [
        ("agent", "café 😀😀 你这个老赖"),  # 2-byte, 4-byte and 3-byte characters before the phrase
        ("agent", "naïve usb sb 滚"),  # an English phrase needs word boundaries
        ("customer", "𠀀𠀁 我不想活了"),
    ]
    calls = [engine(NATIVE).prepare(transcript_from_turns(turns))] * 3
    got = rows(engine(NATIVE).recall(calls))
    assert got == rows(engine("aho-corasick").recall(calls))
    texts = {(k, start, end): calls[k].text[start:end] for k, _, _, start, end, _ in got}
    assert "老赖" in texts.values() and "不想活" in "".join(texts.values())


def test_an_empty_batch_and_calls_without_text() -> None:
    native = engine(NATIVE)
    empty = native.recall([])
    assert len(empty) == 0 and empty.bounds.tolist() == [0]
    calls = [native.prepare(transcript_from_turns([])), native.prepare(transcript_from_turns([("agent", "老赖")]))]
    recall = native.recall(calls)
    assert recall.bounds[1] == 0 and recall.bounds[2] >= 1


@pytest.mark.parametrize("refused", ["reversed", "reversed+som"])
def test_regex_starts_by_every_route_give_the_same_hits(monkeypatch: pytest.MonkeyPatch, refused: str) -> None:
    """A regex's start comes from its reversed regex; where Hyperscan refuses that, from a start-of-match
    database; where it refuses both, from Python ``re``. All three give the same hits."""
    from callqc.rules import _recall, native

    compile_database = native._database

    def refusing(exprs: tuple[bytes, ...], ids: tuple[int, ...], flags: tuple[int, ...], som: bool = False, **kw):
        if exprs[0].startswith(b"^(?:") or (som and refused == "reversed+som"):
            raise _recall.CompileError(0, "Pattern is too large.")
        return compile_database(exprs, ids, flags, som, **kw)

    monkeypatch.setattr(native, "_database", refusing)
    fallback = RuleEngine(load_rule_pack(default_pack_path()), backend=NATIVE)
    if refused == "reversed+som":
        assert fallback._matcher._python_start
    assert not engine(NATIVE)._matcher._python_start  # by default every start comes from a reversed regex
    calls = corpus()[:80]
    assert rows(fallback.recall(calls)) == rows(engine(NATIVE).recall(calls))


def test_bad_input_is_refused_with_a_clear_error() -> None:
    core = engine(NATIVE)._matcher._core
    agent, order = np.zeros(1, dtype=np.int64).tobytes(), [np.zeros(1, dtype=np.int64)]
    with pytest.raises(TypeError, match="call texts must be str"):
        core.recall([b"bytes"], ["x"], agent, order)
    with pytest.raises(ValueError, match="phonetic text must keep"):
        core.recall(["逾期"], ["逾"], agent, order)
    with pytest.raises(ValueError, match="phonetic text must keep"):
        core.recall(["逾期"], ["逾a"], agent, order)  # same length, another UTF-8 width
    with pytest.raises(ValueError, match="agent_chars"):
        core.recall(["逾期"], ["逾期"], b"", order)
    with pytest.raises(ValueError, match="phons are required"):
        core.recall(["逾期"], None, agent, order)
    with pytest.raises(ValueError, match="as long as texts"):
        core.recall(["逾期"], ["逾期"], agent, [])
    assert len(core.recall(["逾期"], ["逾期"], agent, order)) == 6  # still usable afterwards


def test_compile_error_names_the_expression() -> None:
    from callqc.rules import _recall

    with pytest.raises(_recall.CompileError) as caught:
        _recall.Database([b"ok", b"a{0,100000}b"], [0, 1], [0, 0])
    index, reason = caught.value.args
    assert index == 1 and "Bounded repeat" in reason


RANDOM_PACK = """
version: "0.1.0"
rules:
  - id: N01
    name: 随机
    type: keyword
    severity: S1
    category: prohibited
    scope: any
    negation: false
    phrases: [老赖, sb, café, 𠀀好, 逾期]
    regexes: ['欠.{0,3}钱', 'x\\d+y']
"""


def test_random_text_of_every_width_gives_the_aho_corasick_hits() -> None:
    """Segments mixing ASCII, 2-, 3- and 4-byte characters around the phrases: the native core's layout
    (its SSE encoder, slots, offsets) gives Aho-Corasick's hits, batch after batch."""
    import random

    pack = load_rule_pack(RANDOM_PACK)
    native, ac = RuleEngine(pack, NATIVE), RuleEngine(pack, "aho-corasick")
    rng = random.Random(5)
    pieces = ["老赖", "sb", "café", "𠀀好", "逾期", "欠我钱", "x12y", "a", "é", "中", "😀", "1", " ", "ü文"]
    found = 0
    for _ in range(20):
        calls = []
        for _ in range(rng.randint(1, 9)):
            turns = [
                (rng.choice(["agent", "customer"]), "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))))
                for _ in range(rng.randint(0, 6))
            ]
            calls.append(native.prepare(transcript_from_turns(turns)))
        got, want = native.recall(calls), ac.recall(calls)
        assert rows(got) == rows(want)
        assert got.bounds.tolist() == want.bounds.tolist()
        found += len(got)
    assert found > 100
