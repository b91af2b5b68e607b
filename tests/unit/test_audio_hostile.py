"""The hostile corpus, generated here: every input gets its own error code and message, the decoder runs
under its rlimits, and the serving process keeps going (and keeps its memory).

Nothing asserts wall-clock time: "it did not decode six hours" is shown by a one-second CPU limit that a
real decode would have hit, and "memory stays bounded" by the limits the child reports as in force.
"""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from callqc.audio import AudioError, decode, decode_file, limits_for
from callqc.audio_sandbox import Limits, WorkerRun, classify
from callqc.errors import CallErrorCode
from callqc.models import ChannelLayout
from callqc.settings import AudioSettings
from tests.data.audio.factory import FORMATS, PNG, encode, make_wav, patched, silent_flac, wav_header

C = CallErrorCode
STEREO, MONO = ChannelLayout.STEREO_AGENT_LEFT, ChannelLayout.MONO
DEFAULTS = AudioSettings()


def _cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


# name → (bytes factory, layout, expected code, a phrase the message must contain)
CORPUS: dict[str, tuple[Callable[[], bytes], ChannelLayout, CallErrorCode, str]] = {
    "empty-file": (lambda: b"", STEREO, C.AUDIO_EMPTY, "0 bytes"),
    "header-only-wav": (lambda: wav_header(2, 16000, 16, 64000), STEREO, C.AUDIO_EMPTY, "no samples"),
    "wav-without-data-chunk": (lambda: wav_header(2, 16000, 16, 0)[:36], STEREO, C.AUDIO_EMPTY, "no data chunk"),
    "truncated-wav": (lambda: make_wav(2, 16000, 1.0)[:20000], STEREO, C.AUDIO_TRUNCATED, "declares 64000 bytes"),
    "truncated-mp3": (lambda: _cut(FORMATS["mp3-16k-stereo"][0](), 0.6), STEREO, C.AUDIO_TRUNCATED, "cut off"),
    "truncated-flac": (lambda: _cut(FORMATS["flac-8k-stereo"][0](), 0.6), STEREO, C.AUDIO_TRUNCATED, "cut off"),
    "truncated-opus": (lambda: _cut(FORMATS["ogg-opus-stereo"][0](), 0.6), STEREO, C.AUDIO_TRUNCATED, "Ogg stream"),
    "truncated-amr": (lambda: _cut(FORMATS["amr-nb-mono"][0](), 0.6) + b"\x3c", MONO, C.AUDIO_TRUNCATED, "cut off"),
    "data-size-0xffffffff": (
        lambda: patched(make_wav(2, 16000, 0.5), 40, "<I", 0xFFFFFFFF),
        STEREO,
        C.AUDIO_TRUNCATED,
        "0xFFFFFFFF",
    ),
    "sample-rate-0": (
        lambda: patched(make_wav(2, 16000, 0.5), 24, "<I", 0),
        STEREO,
        C.AUDIO_UNDECODABLE,
        "sample rate of 0 Hz",
    ),
    "sample-rate-1": (lambda: patched(make_wav(1, 16000, 0.5), 24, "<I", 1), MONO, C.AUDIO_UNDECODABLE, "1 Hz"),
    "zero-channels": (lambda: patched(make_wav(2, 16000, 0.5), 22, "<H", 0), STEREO, C.AUDIO_UNDECODABLE, "0 chan"),
    "64-channels": (
        lambda: wav_header(64, 8000, 16, 64 * 2 * 800) + bytes(64 * 2 * 800),
        STEREO,
        C.AUDIO_TOO_MANY_CHANNELS,
        "64 channels; the cap is 8",
    ),
    "png-named-wav": (lambda: PNG, STEREO, C.AUDIO_UNSUPPORTED_FORMAT, "a PNG image"),
    "six-hours-of-silence": (
        lambda: silent_flac(8000, 6 * 3600),
        MONO,
        C.AUDIO_TOO_LONG,
        "audio lasts 21600s; the cap is 14400s",
    ),
    "random-bytes": (
        lambda: np.random.default_rng(11).bytes(65536),
        STEREO,
        C.AUDIO_UNSUPPORTED_FORMAT,
        "unrecognised content",
    ),
    "corrupt-riff": (
        lambda: b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8,
        STEREO,
        C.AUDIO_UNDECODABLE,
        "corrupt WAV header",
    ),
    "hls-playlist": (
        lambda: b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n",
        STEREO,
        C.AUDIO_UNSUPPORTED_FORMAT,
        "HLS playlist",
    ),
    "mp4-container": (lambda: b"\x00\x00\x00\x20ftypM4A " + bytes(64), STEREO, C.AUDIO_UNSUPPORTED_FORMAT, "MP4"),
    "wav-unknown-codec": (
        lambda: wav_header(1, 8000, 16, 1600, tag=0x1234) + bytes(1600),
        MONO,
        C.AUDIO_UNSUPPORTED_FORMAT,
        "codec tag 0x1234",
    ),
    "id3-then-garbage": (
        lambda: b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10) + np.random.default_rng(5).bytes(4096),
        STEREO,
        C.AUDIO_UNDECODABLE,
        "",
    ),
    "length-unknown-flac-over-cap": (
        lambda: silent_flac(8000, 120, declare_length=False),
        MONO,
        C.AUDIO_TOO_LONG,
        "did not say so",
    ),
}
_CAPS = {"length-unknown-flac-over-cap": AudioSettings(max_duration_seconds=60)}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_hostile_input_gets_its_own_error(name: str, tmp_path: Path) -> None:
    factory, layout, code, phrase = CORPUS[name]
    settings = _CAPS.get(name, DEFAULTS).model_copy(update={"decode_cpu_seconds": 2})
    path = tmp_path / "call.wav"  # the name never matters
    path.write_bytes(factory())
    runs: list[WorkerRun] = []
    with pytest.raises(AudioError) as info:
        decode_file(path, layout, settings, tmp_path, on_run=runs.append)
    assert info.value.code == code, info.value.message
    assert phrase in info.value.message
    assert len(info.value.message) < 400
    for run in runs:  # whenever the decoder ran, it ran under the configured limits
        assert run.applied_limits == limits_for(settings).for_child() or not run.applied_limits
        assert not run.timed_out and run.returncode == 0  # refused cleanly, nothing killed


def test_the_whole_corpus_leaves_the_serving_process_healthy(tmp_path: Path) -> None:
    """All of it in one process: no exception escapes, memory does not grow, valid audio still decodes."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    codes = []
    for name, (factory, layout, code, _phrase) in CORPUS.items():
        try:
            decode(factory(), layout, _CAPS.get(name, DEFAULTS))
        except AudioError as err:
            codes.append(err.code == code)
    assert all(codes) and len(codes) == len(CORPUS)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 64  # decoding happens elsewhere; the serving process only reads headers
    assert decode(make_wav(2, 8000, 0.5), STEREO, DEFAULTS).duration == pytest.approx(0.5, abs=1e-3)


def test_every_decoder_process_reports_its_limits(tmp_path: Path) -> None:
    settings = AudioSettings(decode_cpu_seconds=7, decode_memory_bytes=512 << 20)
    path = tmp_path / "in"
    path.write_bytes(FORMATS["ogg-opus-stereo"][0]())
    runs: list[WorkerRun] = []
    out = decode_file(path, STEREO, settings, tmp_path, on_run=runs.append)
    assert out.duration == pytest.approx(1.5, abs=0.05)
    (run,) = runs
    assert run.applied_limits == {
        "cpu_seconds": 7,
        "memory_bytes": 512 << 20,
        "output_bytes": limits_for(settings).output_bytes,
    }
    assert run.reply["limits"] == run.applied_limits
    assert 0 < run.max_rss_bytes < 512 << 20


def test_six_hours_are_refused_from_the_header_without_decoding(tmp_path: Path) -> None:
    """One CPU-second for the decoder: decoding six hours would hit it (see the next test); the cap does not."""
    path = tmp_path / "in"
    path.write_bytes(silent_flac(192000, 6 * 3600))  # 0.9 MB; 4 billion samples if decoded
    with pytest.raises(AudioError) as info:
        decode_file(path, MONO, DEFAULTS.model_copy(update={"decode_cpu_seconds": 1}), tmp_path)
    assert info.value.code == C.AUDIO_TOO_LONG


def test_the_cpu_limit_stops_a_long_decode(tmp_path: Path) -> None:
    path = tmp_path / "in"
    path.write_bytes(silent_flac(192000, 6 * 3600))
    settings = DEFAULTS.model_copy(update={"decode_cpu_seconds": 1, "max_duration_seconds": 7 * 3600})
    runs: list[WorkerRun] = []
    with pytest.raises(AudioError) as info:
        decode_file(path, MONO, settings, tmp_path, on_run=runs.append)
    assert info.value.code == C.AUDIO_DECODE_LIMIT
    assert "CPU-time limit of 1s" in info.value.message
    assert runs[0].returncode in (-signal.SIGXCPU, -signal.SIGKILL)
    assert runs[0].applied_limits["cpu_seconds"] == 1  # reported before it was stopped


def test_a_sparse_six_hour_wav_is_refused_before_any_decoder_starts(tmp_path: Path) -> None:
    """A 6 h A-law WAV (170 MB, sparse on disk): the header and the file size say it all."""
    data_bytes = 6 * 3600 * 8000
    path = tmp_path / "long.wav"
    with path.open("wb") as fh:
        fh.write(wav_header(1, 8000, 8, data_bytes, tag=6))
        fh.truncate(44 + data_bytes)
    runs: list[WorkerRun] = []
    with pytest.raises(AudioError) as info:
        decode_file(path, MONO, DEFAULTS, tmp_path, on_run=runs.append)
    assert info.value.code == C.AUDIO_TOO_LONG
    assert runs == []


def test_a_memory_limit_below_the_decoders_footprint_is_a_clean_error(tmp_path: Path) -> None:
    settings = DEFAULTS.model_copy(update={"decode_memory_bytes": 64 << 20})
    with pytest.raises(AudioError) as info:
        decode(make_wav(2, 8000, 0.5), STEREO, settings)
    assert info.value.code == C.AUDIO_DECODE_LIMIT
    assert "memory limit 64 MiB" in info.value.message


def test_a_hung_decoder_is_killed_at_the_timeout(tmp_path: Path) -> None:
    settings = DEFAULTS.model_copy(update={"decode_timeout_seconds": 0.001})
    with pytest.raises(AudioError) as info:
        decode(make_wav(2, 8000, 0.5), STEREO, settings)
    assert info.value.code == C.AUDIO_DECODE_LIMIT
    assert "timed out" in info.value.message


def test_damaged_audio_can_be_accepted_by_configuration() -> None:
    lenient = DEFAULTS.model_copy(update={"accept_damaged": True})
    for name in ("truncated-wav", "truncated-mp3", "truncated-flac", "truncated-amr", "data-size-0xffffffff"):
        factory, layout, _code, _phrase = CORPUS[name]
        assert decode(factory(), layout, lenient).duration > 0.1, name
    opus = FORMATS["ogg-opus-stereo"][0]()  # cut inside its last page (the test file has only two)
    assert decode(_cut(opus, 0.8), STEREO, lenient).duration > 0.5


def test_valid_audio_with_trailing_chunks_is_not_called_truncated() -> None:
    data = make_wav(2, 16000, 0.5)
    data = patched(data, 4, "<I", len(data) - 8 + 12) + b"LIST" + (4).to_bytes(4, "little") + b"INFO"
    assert decode(data, STEREO, DEFAULTS).duration == pytest.approx(0.5, abs=1e-3)


# ---- how an exit becomes an error -----------------------------------------------------------------------

LIMITS = Limits(cpu_seconds=5, memory_bytes=1 << 30, output_bytes=1 << 20, timeout_seconds=60)


@pytest.mark.parametrize(
    ("run", "code", "phrase"),
    [
        (WorkerRun(-signal.SIGSEGV, 0.1, 0, False), C.AUDIO_UNDECODABLE, "crashed with SIGSEGV"),
        (WorkerRun(-signal.SIGABRT, 0.1, 0, False), C.AUDIO_UNDECODABLE, "crashed with SIGABRT"),
        (WorkerRun(-signal.SIGXCPU, 5.0, 0, False), C.AUDIO_DECODE_LIMIT, "CPU-time limit of 5s"),
        (WorkerRun(-signal.SIGKILL, 6.0, 0, False), C.AUDIO_DECODE_LIMIT, "CPU-time limit of 5s"),
        (WorkerRun(-signal.SIGKILL, 0.5, 0, False), C.AUDIO_DECODE_LIMIT, "out of memory"),
        (WorkerRun(-signal.SIGXFSZ, 0.5, 0, False), C.AUDIO_DECODE_LIMIT, "size limit"),
        (WorkerRun(-signal.SIGKILL, 0.5, 0, True), C.AUDIO_DECODE_LIMIT, "timed out after 60s"),
        (WorkerRun(1, 0.5, 0, False, stderr_tail="Traceback ...\nMemoryError\n"), C.AUDIO_DECODE_LIMIT, "memory"),
        (WorkerRun(1, 0.5, 0, False, stderr_tail="boom\nValueError: odd\n"), C.AUDIO_UNDECODABLE, "ValueError: odd"),
        (WorkerRun(0, 0.5, 0, False), C.AUDIO_UNDECODABLE, "no output"),
        (WorkerRun(0, 0.5, 0, False, {"ok": False, "code": "NOT_A_CODE", "message": "x"}), C.AUDIO_UNDECODABLE, "x"),
        (WorkerRun(0, 0.5, 0, False, {"ok": False, "code": "AUDIO_TOO_LONG", "message": "long"}), C.AUDIO_TOO_LONG, ""),
    ],
)
def test_exit_status_becomes_a_precise_error(run: WorkerRun, code: CallErrorCode, phrase: str) -> None:
    error = classify(run, LIMITS)
    assert error is not None and error.code == code
    assert phrase in error.message


def test_a_successful_reply_is_no_error() -> None:
    assert classify(WorkerRun(0, 0.1, 0, False, {"ok": True, "samples": 10}), LIMITS) is None


def test_the_decoder_inherits_no_secrets() -> None:
    from callqc.audio_sandbox import _CHILD_ENV

    assert not any(key.startswith(("CALLQC", "AWS", "MINIO")) for key in _CHILD_ENV)
    assert set(os.environ) - set(_CHILD_ENV)  # the parent's environment is not passed through


def test_mp3_with_a_huge_declared_id3_tag_decodes_within_the_limits(tmp_path: Path) -> None:
    """An ID3v2 tag declaring ~256 MB in a 10 KB file: nothing near that is ever read or held."""
    mp3 = encode("mp3", "libmp3lame", 16000, 2, 1.0)
    tag = b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f"  # synchsafe size: 268 MB
    path = tmp_path / "in"
    path.write_bytes(tag + b"APIC" + b"\x7f\x7f\x7f\x7f\x00\x00" + bytes(32) + mp3)
    runs: list[WorkerRun] = []
    with pytest.raises(AudioError) as info:
        decode_file(path, STEREO, DEFAULTS, tmp_path, on_run=runs.append)
    assert info.value.code in (C.AUDIO_UNDECODABLE, C.AUDIO_TRUNCATED)
    assert runs and runs[0].max_rss_bytes < 200 << 20
