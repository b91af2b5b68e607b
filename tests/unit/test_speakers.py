"""callqc.speakers: channel → role mapping and the time-ordered merge of per-channel ASR segments."""

from __future__ import annotations

import pytest

from callqc.asr import AsrSegment, AsrWord
from callqc.models import ChannelLayout, Role
from callqc.speakers import channel_roles, merge_channels


def seg(start: float, end: float, text: str, words: list[AsrWord] | None = None) -> AsrSegment:
    return AsrSegment(start=start, end=end, text=text, words=words or [])


@pytest.mark.parametrize(
    ("layout", "roles"),
    [
        (ChannelLayout.STEREO_AGENT_LEFT, {0: Role.AGENT, 1: Role.CUSTOMER}),
        (ChannelLayout.STEREO_AGENT_RIGHT, {0: Role.CUSTOMER, 1: Role.AGENT}),
        (ChannelLayout.MONO, {0: Role.UNKNOWN}),
    ],
)
def test_channel_roles(layout: ChannelLayout, roles: dict[int, Role]) -> None:
    assert channel_roles(layout) == roles


def two_party() -> dict[int, list[AsrSegment]]:
    return {
        0: [seg(0.0, 2.0, "您好，我是催收员"), seg(5.0, 7.5, "请问什么时候还款")],
        1: [seg(2.5, 4.0, "你好"), seg(6.0, 6.8, "下周")],  # the second one overlaps the agent
    }


def test_merge_orders_by_time_and_keeps_overlaps() -> None:
    merged = merge_channels(two_party(), ChannelLayout.STEREO_AGENT_LEFT)
    assert [s.text for s in merged] == ["您好，我是催收员", "你好", "请问什么时候还款", "下周"]
    assert [s.start for s in merged] == sorted(s.start for s in merged)
    overlap = merged[2], merged[3]
    assert overlap[0].end > overlap[1].start  # both overlapping segments are kept
    assert [s.id for s in merged] == ["s0001", "s0002", "s0003", "s0004"]
    assert [s.channel for s in merged] == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (ChannelLayout.STEREO_AGENT_LEFT, [Role.AGENT, Role.CUSTOMER, Role.AGENT, Role.CUSTOMER]),
        (ChannelLayout.STEREO_AGENT_RIGHT, [Role.CUSTOMER, Role.AGENT, Role.CUSTOMER, Role.AGENT]),
    ],
)
def test_merge_maps_roles_by_layout(layout: ChannelLayout, expected: list[Role]) -> None:
    assert [s.role for s in merge_channels(two_party(), layout)] == expected


def test_mono_is_unknown_and_stray_channels_too() -> None:
    merged = merge_channels({0: [seg(0, 1, "a")], 3: [seg(0.5, 1, "b")]}, ChannelLayout.MONO)
    assert [(s.text, s.role) for s in merged] == [("a", Role.UNKNOWN), ("b", Role.UNKNOWN)]


def test_same_start_breaks_ties_by_channel() -> None:
    channels = {1: [seg(1.0, 2.0, "customer")], 0: [seg(1.0, 1.5, "agent")]}
    merged = merge_channels(channels, ChannelLayout.STEREO_AGENT_LEFT)
    assert [s.text for s in merged] == ["agent", "customer"]


def test_ids_are_zero_padded_and_words_are_kept() -> None:
    words = [AsrWord("你", 0.12345, 0.2, 0.98765), AsrWord("好", 0.2, 0.31, 0.5)]
    channels = {0: [seg(float(i), i + 0.5, f"t{i}") for i in range(11)], 1: [seg(0.1234567, 0.3, "你好", words)]}
    merged = merge_channels(channels, ChannelLayout.STEREO_AGENT_LEFT)
    assert merged[0].id == "s0001"
    assert merged[-1].id == "s0012"
    customer = merged[1]
    assert customer.text == "你好"
    assert customer.start == 0.123
    assert [(w.text, w.start, w.probability) for w in customer.words] == [("你", 0.123, 0.988), ("好", 0.2, 0.5)]


def test_empty_input() -> None:
    assert merge_channels({}, ChannelLayout.STEREO_AGENT_LEFT) == []
    assert merge_channels({0: [], 1: []}, ChannelLayout.STEREO_AGENT_LEFT) == []
