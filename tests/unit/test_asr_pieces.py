"""The ASR pieces that need no model: speech windows, batch planning, whisper's quality rules, segment text."""

from __future__ import annotations

import numpy as np
import pytest

from callqc.asr_batch import BatchDecoder, Decoded, compression_ratio, plan_batches
from callqc.asr_text import AsrSegment, AsrWord, finish, whisper_language, window_segments
from callqc.asr_vad import SAMPLE_RATE, VadConfig, Window, fixed_regions, pack_windows, sounding_spans, speech_regions
from callqc.errors import CallErrorCode, CallProcessingError
from callqc.settings import AsrSettings

SUPPORTED = ["en", "zh", "yue", "ja"]


def test_digital_silence_is_skipped_before_the_vad() -> None:
    assert sounding_spans(np.zeros(SAMPLE_RATE * 60, np.float32)) == []
    assert speech_regions(np.zeros(SAMPLE_RATE * 60, np.float32), VadConfig()) == []
    audio = np.zeros(SAMPLE_RATE * 10, np.float32)
    audio[SAMPLE_RATE * 4 : SAMPLE_RATE * 5] = 0.1  # one loud second
    ((start, end),) = sounding_spans(audio)
    assert start <= SAMPLE_RATE * 4 and end >= SAMPLE_RATE * 5  # kept, with context
    assert end - start <= SAMPLE_RATE * 2.2


def test_noise_without_speech_has_no_speech_regions() -> None:
    noise = (np.random.default_rng(3).standard_normal(SAMPLE_RATE * 8) * 0.001).astype(np.float32)
    assert speech_regions(noise, VadConfig()) == []


def test_windows_hold_at_most_30_seconds_and_map_back_to_channel_time() -> None:
    audio = np.arange(SAMPLE_RATE * 100, dtype=np.float32)
    regions = [
        (SAMPLE_RATE * 1, SAMPLE_RATE * 11),
        (SAMPLE_RATE * 20, SAMPLE_RATE * 35),
        (SAMPLE_RATE * 50, SAMPLE_RATE * 90),
    ]
    windows = pack_windows(7, audio, regions)
    assert all(w.seconds <= 30 and w.request == 7 for w in windows)
    assert sum(w.seconds for w in windows) == pytest.approx(10 + 15 + 40)
    first = windows[0]
    assert first.regions == ((SAMPLE_RATE, 11 * SAMPLE_RATE), (20 * SAMPLE_RATE, 35 * SAMPLE_RATE))
    assert first.region_at(9.99) == 0 and first.region_at(10.01) == 1
    assert first.to_channel(12.0, 1) == pytest.approx(22.0)
    assert first.to_channel(12.0, 0) == pytest.approx(11.0)  # clamped into its region
    assert first.audio[SAMPLE_RATE * 10] == audio[SAMPLE_RATE * 20]  # the samples really are that region's


def test_windows_can_join_regions_with_silence() -> None:
    audio = np.ones(SAMPLE_RATE * 10, dtype=np.float32)
    (window,) = pack_windows(0, audio, [(0, SAMPLE_RATE), (SAMPLE_RATE * 5, SAMPLE_RATE * 6)], gap_seconds=0.5)
    assert window.seconds == pytest.approx(2.5)
    assert window.offsets == (0, int(1.5 * SAMPLE_RATE))
    assert float(window.audio[int(1.2 * SAMPLE_RATE)]) == 0.0
    assert window.region_at(1.2) == 0 and window.region_at(1.3) == 1  # a gap belongs to the nearer region


def test_fixed_regions_cover_the_channel() -> None:
    regions = fixed_regions(np.zeros(SAMPLE_RATE * 65, np.float32))
    assert regions == [
        (0, 30 * SAMPLE_RATE),
        (30 * SAMPLE_RATE, 60 * SAMPLE_RATE),
        (60 * SAMPLE_RATE, 65 * SAMPLE_RATE),
    ]


def test_batches_group_windows_of_similar_length() -> None:
    frames = [300, 2900, 500, 2800, 350, 3000, 2000]
    batches = plan_batches(frames, batch_size=2, trim=True)
    assert sorted(i for b in batches for i in b) == list(range(len(frames)))
    assert all(len(b) <= 2 for b in batches)
    for batch in batches:
        lengths = [frames[i] for i in batch]
        assert max(lengths) <= 1.5 * min(lengths) + 100
    assert plan_batches(frames, batch_size=8, trim=False) == [sorted(range(7), key=lambda i: frames[i])]


def _decoded(avg_logprob: float = -0.2, no_speech: float = 0.1, text: str = "hello there") -> Decoded:
    return Decoded(text, avg_logprob, no_speech, compression_ratio(text), 0.0)


def test_whisper_quality_rules() -> None:
    decoder = BatchDecoder(model=None, settings=AsrSettings())
    assert decoder._verdict(_decoded(), last=False) == "keep"
    assert decoder._verdict(_decoded(avg_logprob=-1.5, no_speech=0.9), last=False) == "silent"
    assert decoder._verdict(_decoded(avg_logprob=-1.5, no_speech=0.1), last=False) == "retry"
    assert decoder._verdict(_decoded(avg_logprob=-1.5, no_speech=0.1), last=True) == "drop"
    loop = "I can pay Friday. " * 20
    assert compression_ratio(loop) > 2.4
    assert decoder._verdict(_decoded(text=loop), last=False) == "retry"
    assert decoder._verdict(_decoded(avg_logprob=-0.5, no_speech=0.9), last=False) == "keep"  # confident speech


@pytest.mark.parametrize(
    ("hint", "code"), [("zh", "zh"), ("zh-CN", "zh"), ("cmn", "zh"), ("EN_us", "en"), ("ja", "ja")]
)
def test_language_hint_is_forced_as_a_whisper_code(hint: str, code: str) -> None:
    assert whisper_language(hint, SUPPORTED) == code


def test_unsupported_language_is_a_per_call_error() -> None:
    with pytest.raises(CallProcessingError) as info:
        whisper_language("klingon", SUPPORTED)
    assert info.value.code == CallErrorCode.INVALID_CALL


def _window(regions: list[tuple[float, float]]) -> Window:
    samples = [(int(a * SAMPLE_RATE), int(b * SAMPLE_RATE)) for a, b in regions]
    offsets, at = [], 0
    for a, b in samples:
        offsets.append(at)
        at += b - a
    return Window(0, tuple(samples), tuple(offsets), np.zeros(at, np.float32))


def _word(text: str, start: float, end: float) -> dict:
    return {"word": text, "start": start, "end": end, "probability": 0.9}


def test_window_words_go_back_to_their_region_and_split_into_utterances() -> None:
    window = _window([(2.0, 5.0), (10.0, 12.0)])  # 3 s then 2 s of speech
    words = [_word(" Hi,", 0.0, 0.4), _word(" I", 0.5, 0.7), _word(" owe.", 0.7, 1.2), _word(" What?", 3.2, 3.8)]
    segments = window_segments(window, Decoded(" Hi, I owe. What?", -0.2, 0.1, 1.0, 0.0, words))
    assert [s.text for s in segments] == ["Hi, I owe.", "What?"]
    assert segments[0].start == pytest.approx(2.0) and segments[0].end == pytest.approx(3.2)
    assert segments[1].start == pytest.approx(10.2) and segments[1].end == pytest.approx(10.8)
    assert segments[0].avg_logprob == -0.2


def test_window_without_word_timings_spans_its_speech() -> None:
    (segment,) = window_segments(_window([(1.0, 2.0), (4.0, 6.0)]), Decoded("你好", -0.3, 0.1, 1.0, 0.0, []))
    assert (segment.start, segment.end, segment.text) == (1.0, 6.0, "你好")


def test_finish_makes_times_monotonic_inside_the_audio_and_converts_the_script() -> None:
    words = [AsrWord("說", 9.5, 9.0, 0.9), AsrWord("話", 8.0, 12.0, 0.9)]  # backwards and past the end
    segments = [
        AsrSegment(9.0, 12.0, "說話", words),
        AsrSegment(1.0, 2.0, "，。", [AsrWord("，。", 1.0, 2.0, 0.5)]),  # punctuation only: dropped
        AsrSegment(-1.0, 0.5, "好", [AsrWord("好", -1.0, 0.5, 0.9)]),
    ]
    out = finish(segments, duration=10.0, convert=lambda t: t.replace("說", "说").replace("話", "话"))
    assert [s.text for s in out] == ["好", "说话"]
    starts = [w.start for s in out for w in s.words]
    assert starts == sorted(starts)
    for seg in out:
        assert 0.0 <= seg.start <= seg.end <= 10.0
        assert all(seg.start <= w.start <= w.end <= seg.end for w in seg.words)
