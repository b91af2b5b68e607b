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


# ---- mono: diarization turns, word-level splits, roles ----------------------------------------------

from callqc.models import SpeakerTurn  # noqa: E402
from callqc.speakers import label_speakers, speaker_at, split_by_speaker  # noqa: E402


def turn(speaker: str, start: float, end: float) -> SpeakerTurn:
    return SpeakerTurn(speaker=speaker, start=start, end=end)


def test_speaker_at_prefers_overlap_then_nearest() -> None:
    turns = [turn("spk0", 0, 2), turn("spk1", 2.5, 4)]
    assert speaker_at(1.5, 2.6, turns) == "spk0"
    assert speaker_at(2.2, 3.5, turns) == "spk1"
    assert speaker_at(4.5, 5.0, turns) == "spk1"  # no overlap: the nearest turn
    assert speaker_at(0, 1, []) is None


def test_a_segment_is_split_at_words_where_the_speaker_changes() -> None:
    words = [AsrWord("您好", 0.0, 0.5, 0.9), AsrWord("我是", 0.5, 1.0, 0.9), AsrWord("是我", 1.6, 2.0, 0.8)]
    segments = [seg(0.0, 2.0, "您好我是是我", words)]
    pieces = split_by_speaker(segments, [turn("spk0", 0, 1.2), turn("spk1", 1.4, 2.2)])
    assert [(spk, p.text, p.start, p.end) for spk, p in pieces] == [
        ("spk0", "您好我是", 0.0, 1.0),
        ("spk1", "是我", 1.6, 2.0),
    ]


def test_mono_call_gets_roles_from_cues() -> None:
    asr = {
        0: [
            seg(0.3, 5.6, "您好，我是安信金融贷后专员，工号一零二四，请问是张三本人吗？"),
            seg(6.0, 6.4, "是我。"),
            seg(6.9, 10.4, "您欠款三万五千元，已经逾期四十二天了。"),
            seg(10.8, 11.7, "过几天吧。"),
        ]
    }
    turns = [turn("A", 0.3, 5.6), turn("B", 6.0, 6.4), turn("A", 6.9, 10.4), turn("B", 10.8, 11.7)]
    segments, roles = label_speakers(asr, ChannelLayout.MONO, "zh", turns)
    assert [s.role for s in segments] == [Role.AGENT, Role.CUSTOMER, Role.AGENT, Role.CUSTOMER]
    assert roles.method == "cues" and roles.speaker_roles == {"A": Role.AGENT, "B": Role.CUSTOMER}
    assert roles.confidence > 0.9 and not roles.needs_review
    assert any("工号" in cue for cue in roles.cues)
    assert [s.id for s in segments] == ["s0001", "s0002", "s0003", "s0004"]


def test_stereo_roles_are_exact_and_mono_without_turns_needs_review() -> None:
    _segs, stereo = label_speakers(two_party(), ChannelLayout.STEREO_AGENT_LEFT, "zh")
    assert stereo.method == "channel" and stereo.confidence == 1.0 and not stereo.needs_review
    segs, mono = label_speakers({0: [seg(0, 1, "喂")]}, ChannelLayout.MONO, "zh", None)
    assert mono.method == "none" and mono.needs_review and [s.role for s in segs] == [Role.UNKNOWN]


# ---- diarization building blocks (no model needed) ---------------------------------------------------

import numpy as np  # noqa: E402

from callqc.diarization.evaluation import diarization_error, mono_mix  # noqa: E402
from callqc.diarization.senko_backend import GroupClustering, contained_windows  # noqa: E402


def test_windows_stay_inside_their_speech_region() -> None:
    windows = contained_windows([(0.0, 0.4), (1.0, 3.2), (4.0, 4.1)], 1.5, 0.5, 0.25, 3.0)
    assert windows.spans[0] == (0.0, 0.4)  # short region: one window of its own, not stretched backwards
    assert all(1.0 <= a < b <= 3.2 for a, b in windows.spans[1:])
    assert windows.spans[-1] == pytest.approx((1.7, 3.2))  # the last window ends with the region
    assert (4.0, 4.1) not in windows.spans  # too short to embed
    assert windows.groups[0] == 0 and set(windows.groups[1:]) == {1}


def test_group_clustering_pools_windows_and_gives_short_groups_to_the_nearest_speaker() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=16), rng.normal(size=16)
    grouping = GroupClustering(fallback=None, reliable_seconds=0.6)
    grouping.windows = contained_windows([(0, 3), (3.5, 4.5), (5, 5.4), (6, 9)], 1.5, 0.5, 0.25, 3.0)
    centre = {0: a, 1: b, 2: b, 3: a}  # region 2 is short (0.4 s): not clustered, joins the nearest
    emb = np.stack([centre[g] + 0.05 * rng.normal(size=16) for g in grouping.windows.groups])
    labels = grouping(emb)
    by_group = {g: int(label) for g, label in zip(grouping.windows.groups, labels, strict=True)}
    assert by_group[0] == by_group[3] != by_group[1] == by_group[2]


def test_der_with_collar_and_mono_mix() -> None:
    reference = [turn("agent", 0, 4), turn("customer", 4.5, 6)]
    perfect = [turn("spk1", 0.1, 4.1), turn("spk0", 4.6, 6)]  # inside the ±0.25 s collar
    result = diarization_error(reference, perfect)
    assert result.der == 0.0 and result.mapping == {"spk1": "agent", "spk0": "customer"}
    wrong = diarization_error(reference, [turn("spk0", 0, 6)])
    assert wrong.confusion > 0.2
    stereo = np.array([[0.5, 0.0], [0.0, -0.25], [0.9, 0.9]], dtype=np.float32)
    assert mono_mix(stereo).tolist() == [0.5, -0.25, 1.0]
