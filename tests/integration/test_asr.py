"""The real ASR (bundled whisper base, int8 CPU) on the sample calls: words, script, silence, timestamps.

Correctness only: nothing here measures time (perf/bench_asr.py does). One model for the module;
the four sample calls (eight channels) are transcribed once, in one batch, as the ASR deployment would.
"""

from __future__ import annotations

import re
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from callqc.asr import AsrSegment, Transcriber, resolve_model_dir
from callqc.errors import CallErrorCode, CallProcessingError
from callqc.settings import AsrSettings

from ..conftest import SAMPLES

pytestmark = pytest.mark.integration
RATE = 16000
PHRASES = {
    "zh": {"F01": "打断你的腿", "F03": "老赖", "F12": "个人微信"},
    "en": {"F01": "break your legs", "F03": "deadbeat", "F12": "personal account"},
}


def _calls() -> dict[str, dict]:
    return {c["call_id"]: c for c in yaml.safe_load((SAMPLES / "batch.yaml").read_text(encoding="utf-8"))["calls"]}


def _channels(path: Path) -> list[np.ndarray]:
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels())
    return [pcm[:, i].astype(np.float32) / 32768.0 for i in range(pcm.shape[1])]


@pytest.fixture(scope="module")
def transcriber() -> Iterator[Transcriber]:
    settings = AsrSettings()
    yield Transcriber(settings, resolve_model_dir(settings))


@pytest.fixture(scope="module")
def heard(transcriber: Transcriber) -> dict[str, tuple[list[AsrSegment], list[AsrSegment]]]:
    """call id → (agent segments, customer segments), all eight channels in one batch."""
    calls = _calls()
    requests, owners = [], []
    for call_id, call in calls.items():
        for channel in _channels(SAMPLES / call["file"]):
            requests.append((channel, call["language"]))
        owners.append(call_id)
    results = transcriber.transcribe_many(requests)
    return {call_id: (results[2 * i], results[2 * i + 1]) for i, call_id in enumerate(owners)}


def _text(segments: list[AsrSegment]) -> str:
    return " ".join(s.text for s in segments)


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w' ]+", " ", text.lower()).split()


def test_english_agent_is_heard_word_for_word_loosely(heard) -> None:
    for call_id in ("en_violation", "en_compliant"):
        call = _calls()[call_id]
        truth = " ".join(t["text"] for t in call["expected"]["turns"] if t["speaker"] == "agent")
        expected = {w for w in _words(truth) if not re.search(r"thirty|forty|seventy|ninety|hundred|five|two|six", w)}
        got = set(_words(_text(heard[call_id][0])))
        assert len(expected & got) >= 0.85 * len(expected), (call_id, sorted(expected - got))
    agent = _text(heard["en_violation"][0]).lower()
    for phrase in PHRASES["en"].values():
        assert phrase in agent
    assert "friday" in _text(heard["en_compliant"][1]).lower()  # the customer channel on its own


def test_mandarin_is_simplified_chinese(heard) -> None:
    import opencc

    t2s = opencc.OpenCC("t2s")
    for call_id in ("zh_violation", "zh_compliant"):
        for segments in heard[call_id]:
            assert segments
            for seg in segments:
                assert t2s.convert(seg.text) == seg.text, seg.text  # nothing traditional left
                assert all(t2s.convert(w.text) == w.text for w in seg.words)
            text = re.sub(r"[\W\d_]", "", _text(segments))
            cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
            assert cjk >= 0.9 * len(text)  # Chinese (language forced to zh), not another script
    agent = re.sub(r"\W", "", _text(heard["zh_violation"][0]))
    for phrase in PHRASES["zh"].values():
        assert phrase in agent


def test_violation_phrases_are_timed_inside_their_turns(heard) -> None:
    """Word timestamps point at the audio of the spoken phrase (evidence spans)."""
    for call_id in ("zh_violation", "en_violation"):
        call = _calls()[call_id]
        words = [w for seg in heard[call_id][0] for w in seg.words]
        for turn in call["expected"]["turns"]:
            for rule in turn["rules"]:
                target = re.sub(r"\W", "", PHRASES[call["language"]][rule]).lower()
                stream, owner = "", []
                for index, word in enumerate(words):
                    piece = re.sub(r"\W", "", word.text).lower()
                    stream += piece
                    owner += [index] * len(piece)
                at = stream.find(target)
                assert at >= 0, (call_id, rule)
                start, end = words[owner[at]].start, words[owner[at + len(target) - 1]].end
                assert turn["start"] - 0.75 <= start <= end <= turn["end"] + 0.75, (call_id, rule, start, end, turn)


def test_timestamps_are_monotonic_and_inside_the_audio(heard) -> None:
    calls = _calls()
    for call_id, channels in heard.items():
        duration = calls[call_id]["expected"]["duration"]
        for speaker, segments in zip(("agent", "customer"), channels, strict=True):
            turns = [t for t in calls[call_id]["expected"]["turns"] if t["speaker"] == speaker]
            starts = [s.start for s in segments]
            assert starts == sorted(starts)
            for seg in segments:
                assert 0.0 <= seg.start <= seg.end <= duration + 0.05
                assert seg.words and all(seg.start <= w.start <= w.end <= seg.end for w in seg.words)
                assert any(t["start"] - 0.6 < seg.end and seg.start < t["end"] + 0.6 for t in turns), (call_id, seg)
            word_starts = [w.start for seg in segments for w in seg.words]
            assert word_starts == sorted(word_starts)


def test_silence_yields_no_segments(transcriber: Transcriber) -> None:
    rng = np.random.default_rng(1)
    hiss = (rng.standard_normal(RATE * 10) * 10**-3).astype(np.float32)  # -60 dBFS line noise
    speech = _channels(SAMPLES / "calls" / "en_compliant.wav")[1]
    quiet, noisy, spoken = transcriber.transcribe_many(
        [(np.zeros(RATE * 30, np.float32), "zh"), (hiss, "en"), (speech, "en")]
    )
    assert quiet == [] and noisy == []
    assert "friday" in _text(spoken).lower()
    assert transcriber.transcribe(np.zeros(0, np.float32), "en") == []


def test_silence_between_turns_is_never_decoded(transcriber: Transcriber) -> None:
    """Only speech reaches the decoder: far fewer frames than the channel's length."""
    _agent, customer = _channels(SAMPLES / "calls" / "zh_compliant.wav")
    before = transcriber.stats.encoded_frames
    transcriber.transcribe(customer, "zh")  # ~3 s of speech in a 23 s channel
    assert transcriber.stats.encoded_frames - before < 0.5 * len(customer) / RATE * 100


def test_an_unsupported_language_is_a_per_call_error(transcriber: Transcriber) -> None:
    with pytest.raises(CallProcessingError) as info:
        transcriber.transcribe(np.zeros(RATE, np.float32), "tlh")
    assert info.value.code == CallErrorCode.INVALID_CALL


def test_one_channel_alone_matches_the_batch(transcriber: Transcriber, heard) -> None:
    agent = _channels(SAMPLES / "calls" / "en_violation.wav")[0]
    alone = _text(transcriber.transcribe(agent, "en-US")).lower()
    for phrase in PHRASES["en"].values():
        assert phrase in alone
    batched = _words(_text(heard["en_violation"][0]))
    assert len(set(_words(alone)) & set(batched)) >= 0.9 * len(set(batched))  # padding may differ, not the words
