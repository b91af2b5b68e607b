"""Normalisation before matching, the offset map back to the original text, and spoken numbers."""

from __future__ import annotations

import pytest

from callqc.textnorm import (
    SEGMENT_BREAK,
    SEPARATOR,
    find_amounts,
    find_days,
    normalize,
    normalize_text,
    parse_number,
    phonetic,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("打斷你的腿", "打断你的腿"),  # traditional → simplified
        ("徵信記錄", "征信记录"),
        ("ＡＢＣ１２３", "abc123"),  # full-width → half-width, lower-case
        ("你好，  我是。小李！", "你好我是小李"),  # punctuation and spaces dropped
        ("Break  your legs, OK?", "break your legs ok"),  # one space kept between English words
        ("don't", "dont"),
        ("3.5万，35,000元", "3.5万35000元"),  # decimal point kept between digits, thousands comma dropped
        ("第一。2", "第一2"),  # a full stop is not a decimal point
        ("\u3000全角\u3000空格", "全角空格"),
        ("", ""),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_offsets_map_back_to_the_original() -> None:
    original = "您好，我們不會上門。 Break  your LEGS!"
    norm = normalize(original)
    assert norm.text == "您好我们不会上门break your legs"
    assert len(norm.offsets) == len(norm.text)
    start = norm.text.index("不会上门")
    s, e = norm.to_original(start, start + 4)
    assert original[s:e] == "不會上門"
    start = norm.text.index("your legs")
    s, e = norm.to_original(start, start + len("your legs"))
    assert original[s:e] == "your LEGS"
    assert norm.from_original(original.index("我")) == norm.text.index("我")


def test_segment_break_survives_as_the_separator() -> None:
    norm = normalize(f"第一段\n还有{SEGMENT_BREAK}第二段")
    assert norm.text == f"第一段还有{SEPARATOR}第二段"  # a newline inside a segment is just whitespace


def test_phonetic_folds_homophones_to_one_form() -> None:
    assert phonetic("逾期") == phonetic("于七")
    assert phonetic("征信") == phonetic("证信")
    assert phonetic("工号") == phonetic("公号")
    assert phonetic("逾期") != phonetic("录音")
    assert len(phonetic("还款abc")) == 5
    assert phonetic("abc 12") == "abc 12"


@pytest.mark.parametrize(
    ("spoken", "value"),
    [
        ("三万五千", 35000),
        ("3.5万", 35000),
        ("35,000元", 35000),
        ("三万五千元", 35000),
        ("三点五万", 35000),
        ("一万二", 12000),
        ("三千五", 3500),
        ("3万5", 35000),
        ("两千块", 2000),
        ("一万零二", 10002),
        ("二十万零五百", 200500),
        ("十万", 100000),
        ("十五", 15),
        ("一亿二千万", 120_000_000),
        ("一千二百三十四点五", 1234.5),
        ("12378", 12378),
        ("零", 0),
    ],
)
def test_parse_number(spoken: str, value: float) -> None:
    assert parse_number(spoken) == value


@pytest.mark.parametrize("junk", ["万", "元", "", "abc"])
def test_parse_number_rejects_non_numbers(junk: str) -> None:
    assert parse_number(junk) is None


def test_find_amounts_needs_a_unit_magnitude_or_three_digits() -> None:
    found = find_amounts("您欠款三万五千元，应还3.5万，共计35,000元，先还500，逾期一次")
    assert [a.value for a in found] == [35000, 35000, 35000, 500]
    assert found[0].text == "三万五千元"
    assert find_amounts("欠款50") == []
    assert [a.value for a in find_amounts("you owe 35000 yuan")] == [35000]


def test_find_days() -> None:
    assert [d.value for d in find_days("您已逾期三十天，也就是30日")] == [30, 30]
    assert [d.value for d in find_days("overdue for 45 days")] == [45]
    assert find_days("三个月") == []
