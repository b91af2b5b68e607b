"""Diarization evaluation: mono mixes of the two-channel samples (ground truth known) and DER.

The samples carry the agent on the left channel and the customer on the right, each silent while the
other speaks; their sum is the mono recording a single-channel recorder would have made, and the turn
times in ``samples/batch.yaml`` are the reference. DER comes from ``pyannote.metrics`` with a collar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from callqc.models import Role, SpeakerTurn

COLLAR = 0.5  # pyannote's collar is the total width: ±0.25 s around every reference boundary (NIST practice)


@dataclass(frozen=True)
class MonoSample:
    call_id: str
    language: str
    audio: np.ndarray  # float32 mono 16 kHz
    reference: list[SpeakerTurn]  # speaker = "agent" | "customer"
    stereo_roles: dict[int, Role]

    @property
    def duration(self) -> float:
        return len(self.audio) / 16000


@dataclass(frozen=True)
class DerResult:
    der: float
    false_alarm: float
    missed: float
    confusion: float
    total: float
    mapping: dict[str, str]  # hypothesis label → reference label (optimal)


def mono_mix(stereo: np.ndarray) -> np.ndarray:
    """Sum of the channels (frames × channels), clipped to [-1, 1]: the call as one mono track."""
    if stereo.ndim == 1:
        return stereo.astype(np.float32)
    return np.clip(stereo.sum(axis=1), -1.0, 1.0).astype(np.float32)


def load_samples(samples_dir: Path, call_ids: list[str] | None = None) -> list[MonoSample]:
    """The sample calls of ``batch.yaml`` as mono mixes with their reference turns."""
    import soundfile as sf

    from callqc.speakers import channel_roles

    batch = yaml.safe_load((samples_dir / "batch.yaml").read_text())
    out = []
    for call in batch["calls"]:
        if call_ids is not None and call["call_id"] not in call_ids:
            continue
        stereo, rate = sf.read(samples_dir / call["file"], dtype="float32", always_2d=True)
        if rate != 16000:
            raise ValueError(f"{call['file']} is {rate} Hz; the samples are 16 kHz")
        turns = call["expected"]["turns"]
        reference = [SpeakerTurn(speaker=t["speaker"], start=t["start"], end=t["end"]) for t in turns]
        roles = channel_roles(call.get("channel_layout", "stereo_agent_left"))
        out.append(MonoSample(call["call_id"], call["language"], mono_mix(stereo), reference, roles))
    return out


def _annotation(turns: list[SpeakerTurn]) -> Any:
    from pyannote.core import Annotation, Segment

    annotation = Annotation()
    for index, turn in enumerate(turns):
        annotation[Segment(turn.start, turn.end), index] = turn.speaker
    return annotation


def diarization_error(reference: list[SpeakerTurn], hypothesis: list[SpeakerTurn], collar: float = COLLAR) -> DerResult:
    """DER (false alarm + missed + confusion over reference speech) with pyannote.metrics."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    from pyannote.core import Segment, Timeline

    ref, hyp = _annotation(reference), _annotation(hypothesis)
    turns = [*reference, *hypothesis]
    uem = Timeline([Segment(min((t.start for t in turns), default=0.0), max((t.end for t in turns), default=0.0))])
    parts = metric(ref, hyp, uem=uem, detailed=True)
    mapping = {str(k): str(v) for k, v in metric.optimal_mapping(ref, hyp).items()}
    total = parts["total"]
    return DerResult(
        der=float(parts["diarization error rate"]),
        false_alarm=float(parts["false alarm"]) / total if total else 0.0,
        missed=float(parts["missed detection"]) / total if total else 0.0,
        confusion=float(parts["confusion"]) / total if total else 0.0,
        total=float(total),
        mapping=mapping,
    )
