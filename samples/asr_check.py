"""Check the sample calls against the real ASR and record what it heard.

Transcribes each channel of every call in ``batch.yaml`` with faster-whisper (the settings the
pipeline uses), writes the segments to ``asr_check.txt`` and checks that each violation phrase
comes back on the agent channel at the time of its ground-truth turn. Runs in the project
virtual environment; the whisper model directory comes from ``--model`` or ``CALLQC_WHISPER_DIR``.
Exits non-zero when a phrase is missing or misplaced.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ZH_PROMPT = "以下是普通话的句子。"
# What each violation turn must be recognisable by, per language.
PHRASES: dict[str, dict[str, str]] = {
    "zh": {"F01": "打断你的腿", "F03": "老赖", "F12": "个人微信"},
    "en": {"F01": "break your legs", "F03": "deadbeat", "F12": "personal account"},
}


@dataclass
class Word:
    text: str
    start: float
    end: float


@dataclass
class Seg:
    start: float
    end: float
    text: str
    words: list[Word]


def _norm(text: str, language: str) -> str:
    """Lower-case, simplified characters, punctuation removed (spaces kept for English)."""
    if language == "zh":
        import opencc

        text = opencc.OpenCC("t2s").convert(text)
        return re.sub(r"[^\w]", "", text)
    return " ".join(re.sub(r"[^\w']+", " ", text.lower()).split())


def transcribe(model: Any, path: Path, language: str) -> list[list[Seg]]:
    """Transcribe the left and right channel separately; returns [left, right] segments."""
    from faster_whisper import decode_audio

    channels = decode_audio(str(path), split_stereo=True)
    options: dict[str, Any] = {"language": language, "vad_filter": True, "word_timestamps": True}
    if language == "zh":
        options["initial_prompt"] = ZH_PROMPT
    out = []
    for audio in channels:
        segments, _ = model.transcribe(audio, **options)
        out.append(
            [
                Seg(s.start, s.end, s.text.strip(), [Word(w.word, w.start, w.end) for w in s.words or []])
                for s in segments
            ]
        )
    return out


def find_phrase(segs: list[Seg], phrase: str, language: str) -> tuple[float, float] | None:
    """Times of the words that spell ``phrase`` (matched on normalised text), if heard."""
    words = [w for s in segs for w in s.words]
    sep = " " if language == "en" else ""
    stream, owner = "", []
    for i, w in enumerate(words):
        piece = _norm(w.text, language)
        if not piece:
            continue
        if stream and sep:
            stream += sep
            owner.append(i)
        stream += piece
        owner += [i] * len(piece)
    target = _norm(phrase, language)
    at = stream.find(target)
    if at < 0:
        return None
    first, last = owner[at], owner[at + len(target) - 1]
    return words[first].start, words[last].end


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=os.environ.get("CALLQC_WHISPER_DIR"),
        help="faster-whisper model directory (default: $CALLQC_WHISPER_DIR)",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.model:
        parser.error("give --model or set CALLQC_WHISPER_DIR")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from faster_whisper import WhisperModel

    model = WhisperModel(args.model, device="cpu", compute_type="int8", cpu_threads=args.threads)
    calls = yaml.safe_load((HERE / "batch.yaml").read_text(encoding="utf-8"))["calls"]
    report: list[str] = []
    failures = 0
    for call in calls:
        lang = call["language"]
        channels = transcribe(model, HERE / call["file"], lang)
        report.append(f"== {call['call_id']} ({lang}, {call['expected']['duration']:.2f} s)")
        for name, segs in zip(("agent/left", "customer/right"), channels, strict=True):
            report.append(f"-- {name}")
            report += [f"  [{s.start:6.2f} - {s.end:6.2f}] {s.text}" for s in segs]
        report.append("-- ground truth vs ASR")
        for turn in call["expected"]["turns"]:
            for rule in turn["rules"]:
                phrase = PHRASES[lang][rule]
                hit = find_phrase(channels[0], phrase, lang)
                inside = hit is not None and hit[0] < turn["end"] and hit[1] > turn["start"]
                failures += not inside
                heard = f"{hit[0]:.2f}-{hit[1]:.2f}" if hit else "not heard"
                report.append(
                    f"  {rule} {phrase!r}: truth {turn['start']:.2f}-{turn['end']:.2f}, "
                    f"asr {heard} -> {'OK' if inside else 'FAIL'}"
                )
        expected = {rule for turn in call["expected"]["turns"] for rule in turn["rules"]}
        for rule, phrase in PHRASES[lang].items():
            if rule not in expected:  # a phrase that must not be heard in this call
                hit = find_phrase(channels[0], phrase, lang)
                failures += hit is not None
                report.append(
                    f"  {rule} {phrase!r}: not in script, asr {'heard it -> FAIL' if hit else 'did not hear it -> OK'}"
                )
        report.append("")
    text = "\n".join(report)
    (HERE / "asr_check.txt").write_text(text, encoding="utf-8")
    print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
