"""callqc.speakers.assign_roles: which diarized speaker is the agent, from cues, with a confidence."""

from __future__ import annotations

import pytest

from callqc.models import Role, Segment, SpeakerTurn
from callqc.speakers import assign_roles


def said(start: float, end: float, text: str) -> Segment:
    return Segment(id="x", role=Role.UNKNOWN, start=start, end=end, text=text)


def turns(*spans: tuple[str, float, float]) -> list[SpeakerTurn]:
    return [SpeakerTurn(speaker=s, start=a, end=b) for s, a, b in spans]


ZH = [
    said(0, 5, "喂？"),
    said(5.5, 9, "您好，我是安信金融客服，本次通话将被录音，请问是张三本人吗？"),
    said(9.5, 10, "是我。"),
]
ZH_TURNS = turns(("spk0", 0, 5), ("spk1", 5.5, 9), ("spk0", 9.5, 10))


def test_zh_self_introduction_beats_speaking_first() -> None:
    roles = assign_roles(ZH, ZH_TURNS, "zh")
    assert roles.speaker_roles == {"spk1": Role.AGENT, "spk0": Role.CUSTOMER}
    assert roles.confidence >= 0.6 and not roles.needs_review


@pytest.mark.parametrize(
    "text",
    [
        "Hi, this is Dana from Summit Finance, calling about your loan.",
        "This call is recorded. Am I speaking with John?",
    ],
)
def test_en_script_phrases(text: str) -> None:
    segments = [said(0, 1, "Hello?"), said(1.2, 4, text), said(4.2, 5, "Yes.")]
    roles = assign_roles(segments, turns(("a", 0, 1), ("b", 1.2, 4), ("a", 4.2, 5)), "en-US")
    assert roles.speaker_roles["b"] == Role.AGENT
    assert roles.speaker_roles["a"] == Role.CUSTOMER


def test_no_cues_means_low_confidence_and_review() -> None:
    segments = [said(0, 2, "嗯嗯"), said(2.5, 4, "好的")]
    roles = assign_roles(segments, turns(("spk0", 0, 2), ("spk1", 2.5, 4)), "zh")
    assert roles.confidence < 0.6 and roles.needs_review
    assert set(roles.speaker_roles.values()) == {Role.AGENT, Role.CUSTOMER}


def test_threshold_is_configurable_and_third_speakers_are_third_party() -> None:
    spans = turns(("a", 0, 4), ("b", 4.5, 6), ("c", 6.5, 7))
    segments = [said(0, 4, "我是贷后专员，工号2048"), said(4.5, 6, "他不在"), said(6.5, 7, "谁啊")]
    roles = assign_roles(segments, spans, "zh", min_confidence=0.99)
    assert roles.speaker_roles == {"a": Role.AGENT, "b": Role.CUSTOMER, "c": Role.THIRD_PARTY}
    assert roles.needs_review


def test_no_speech() -> None:
    roles = assign_roles([], [], "zh")
    assert roles.method == "none" and roles.needs_review and roles.speaker_roles == {}
