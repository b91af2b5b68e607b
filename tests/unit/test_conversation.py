"""callqc.conversation: talk time, silence, overlaps, interruptions, speech rate, loudness, raised voice."""

from __future__ import annotations

import numpy as np
import pytest

from callqc.conversation import conversation_metrics, speech_units
from callqc.diarization import DiarizationSettings
from callqc.models import Role, Segment

RATE = 16000


def s(role: Role, start: float, end: float, text: str = "") -> Segment:
    return Segment(id=f"{role}{start}", role=role, start=start, end=end, text=text)


def test_speech_units_count_chars_and_words() -> None:
    assert speech_units("您好，我是专员") == 6
    assert speech_units("I can't pay now.") == 4
    assert speech_units("请用APP还款") == 5


def test_talk_silence_overlap_and_interruptions() -> None:
    segments = [
        s(Role.AGENT, 1.0, 4.0, "您好我是催收专员"),
        s(Role.CUSTOMER, 3.0, 5.0, "你好"),  # starts 1 s before the agent stops: an interruption
        s(Role.AGENT, 8.0, 9.0, "喂"),
    ]
    m = conversation_metrics(segments, 10.0, None)
    by_role = {r.role: r for r in m.roles}
    assert by_role[Role.AGENT].talk_seconds == 4.0 and by_role[Role.CUSTOMER].talk_seconds == 2.0
    assert by_role[Role.AGENT].speech_rate_cpm == 135.0  # 9 chars in 4 s
    assert m.overlap_seconds == 1.0
    assert by_role[Role.CUSTOMER].interruptions == 1 and by_role[Role.AGENT].interruptions == 0
    assert m.silence_seconds == 3.0 and m.longest_silence_seconds == 3.0  # 5 → 8; edges not counted
    assert m.agent_customer_talk_ratio == 2.0
    assert m.loudness == [] and m.raised_voice == []


def test_a_short_overlap_is_not_an_interruption() -> None:
    segments = [s(Role.AGENT, 0, 3), s(Role.CUSTOMER, 2.9, 4)]
    m = conversation_metrics(segments, 4.0, None, settings=DiarizationSettings(interruption_min_overlap_seconds=0.3))
    assert all(r.interruptions == 0 for r in m.roles)


def tone(seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_loudness_windows_and_a_raised_voice_episode() -> None:
    agent = np.concatenate([tone(6, 0.05), tone(3, 0.5), tone(6, 0.05)])  # 20 dB louder from 6 s to 9 s
    customer = tone(15, 0.05)
    segments = [s(Role.AGENT, 0, 15), s(Role.CUSTOMER, 0, 2)]
    m = conversation_metrics(segments, 15.0, {Role.AGENT: agent, Role.CUSTOMER: customer})
    points = [p for p in m.loudness if p.role == Role.AGENT]
    assert len(points) == 15 and [p.time for p in points[:3]] == [0.0, 1.0, 2.0]
    sine_dbfs = 20 * np.log10(0.05 / np.sqrt(2))
    assert points[0].db == pytest.approx(sine_dbfs, abs=0.1)
    assert len([p for p in m.loudness if p.role == Role.CUSTOMER]) == 2  # only where the customer speaks
    (episode,) = m.raised_voice
    assert episode.role == Role.AGENT and (episode.start, episode.end) == (6.0, 9.0)
    assert episode.above_median_db == pytest.approx(20.0, abs=0.2)


def test_short_loud_bursts_are_not_raised_voice() -> None:
    agent = np.concatenate([tone(6, 0.05), tone(1, 0.5), tone(6, 0.05)])
    m = conversation_metrics([s(Role.AGENT, 0, 13)], 13.0, {Role.AGENT: agent})
    assert m.raised_voice == []


def test_empty_call() -> None:
    m = conversation_metrics([], 5.0, None)
    assert m.roles == [] and m.silence_seconds == 0.0 and m.agent_customer_talk_ratio is None
