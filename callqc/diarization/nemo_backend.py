"""GPU diarization with NeMo Sortformer (``SortformerEncLabelModel``) from a ``.nemo`` checkpoint.

``diarization.nemo_checkpoint`` is a local ``.nemo`` file (a volume) or ``s3://bucket/prefix``: a prefix
published with ``python -m callqc.diarization.nemo_backend publish model.nemo s3://bucket/prefix``. S3
checkpoints go through the same machinery as the ASR models (:mod:`callqc.asr_models`: the project's
store, a sha256 manifest, one download per node into the model cache under a file lock).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from callqc.asr_models import (
    MANIFEST,
    ModelIntegrityError,
    _download,
    _locked,
    parse_s3_uri,
    publish_model,
    sha256_file,
    store_factory,
    verify_dir,
)
from callqc.asr_models import ModelFile as _File
from callqc.diarization.base import DiarizationSettings, normalise_turns
from callqc.models import SpeakerTurn

CHECKPOINT = "model.nemo"
SAMPLE_RATE = 16000


def _parse_manifest(data: bytes) -> list[_File]:
    try:
        files = [_File(n, str(e["sha256"]).lower(), int(e["size"])) for n, e in json.loads(data)["files"].items()]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ModelIntegrityError(f"checkpoint manifest is malformed: {err}") from err
    if [f.name for f in files] != [CHECKPOINT]:
        raise ModelIntegrityError(f"a diarization checkpoint prefix holds exactly {CHECKPOINT}")
    return files


def fetch_checkpoint(uri: str, cache: Path, store_for: Any, verify: bool = True) -> Path:
    """``s3://bucket/prefix`` → the local ``model.nemo``, fetched once per node and checked by sha256."""
    from callqc.storage import read_maybe_plaintext

    bucket, prefix = parse_s3_uri(uri)
    store = store_for(bucket)
    raw = read_maybe_plaintext(store, prefix + MANIFEST)
    files = _parse_manifest(raw)
    digest = hashlib.sha256(raw).hexdigest()[:16]
    target = cache / "s3" / digest
    with _locked(cache / "s3" / f".{digest}.lock"):
        if (target / ".complete").is_file():
            try:
                verify_dir(target, files, full=verify)
                return target / CHECKPOINT
            except ModelIntegrityError:
                pass
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        _download(store, prefix + CHECKPOINT, partial / CHECKPOINT, files[0])
        (partial / MANIFEST).write_bytes(raw)
        (partial / ".complete").write_text(digest)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
    return target / CHECKPOINT


def publish_checkpoint(checkpoint: Path, uri: str, store_for: Any) -> dict[str, Any]:
    """Upload a ``.nemo`` file as ``<prefix>/model.nemo`` with its manifest (via asr_models.publish_model)."""
    with tempfile.TemporaryDirectory(prefix="callqc-nemo-") as tmp:
        staged = Path(tmp) / CHECKPOINT
        try:
            os.link(checkpoint, staged)
        except OSError:  # another file system
            shutil.copyfile(checkpoint, staged)
        return publish_model(Path(tmp), uri, store_for)


def resolve_checkpoint(settings: DiarizationSettings, store_settings: Any | None = None) -> Path:
    """The local ``.nemo`` file of ``nemo_checkpoint`` (fetched from S3 when it is an ``s3://`` prefix)."""
    where = settings.nemo_checkpoint.strip()
    if not where:
        raise ValueError("diarization.backend is nemo but diarization.nemo_checkpoint is empty")
    if where.startswith("s3://"):
        if store_settings is None:
            from callqc.settings import load_settings

            store_settings = load_settings()
        return fetch_checkpoint(where, Path(settings.model_cache).expanduser(), store_factory(store_settings))
    path = Path(where).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"diarization.nemo_checkpoint {path} is not a file")
    return path


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("diarization.device is cuda but no CUDA device is visible (give the replica num_gpus)")
    return name


class NemoDiarizer:
    """A restored Sortformer model; ``diarize`` runs its offline inference on one call at a time."""

    def __init__(self, checkpoint: Path, settings: DiarizationSettings) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from nemo.collections.asr.models import SortformerEncLabelModel

        self.settings = settings
        self.device = _device(settings.device)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        self.model = SortformerEncLabelModel.restore_from(str(checkpoint), map_location=self.device)
        self.model.eval()
        self.max_speakers = int(self.model.cfg.max_num_of_spks)
        self._version = f"nemo-sortformer@{sha256_file(checkpoint)[:12]}"
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return self._version

    def diarize(self, audio: np.ndarray, num_speakers: int | None = None) -> list[SpeakerTurn]:
        """Turns from the model's speaker-activity outputs. Sortformer has fixed output slots
        (``max_num_of_spks``); ``num_speakers`` keeps the most active ones."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        with self._lock:
            lines = self.model.diarize(
                audio=[audio], sample_rate=SAMPLE_RATE, batch_size=self.settings.nemo_batch_size, verbose=False
            )[0]
        raw = []
        for line in lines:
            start, end, speaker = str(line).split()
            raw.append((speaker, float(start), float(end)))
        speakers = num_speakers or self.settings.num_speakers
        if speakers:
            talk: dict[str, float] = {}
            for speaker, start, end in raw:
                talk[speaker] = talk.get(speaker, 0.0) + end - start
            keep = set(sorted(talk, key=lambda s: talk[s], reverse=True)[:speakers])
            raw = [item for item in raw if item[0] in keep]
        return normalise_turns(raw, len(audio) / SAMPLE_RATE)


def tiny_sortformer_config(max_speakers: int = 4) -> dict[str, Any]:
    """A Sortformer config with tiny dimensions (random weights): exercises NeMo's build, save_to,
    restore and inference path where no real weights are available (tests, GPU smoke checks)."""
    return {
        "sample_rate": SAMPLE_RATE,
        "max_num_of_spks": max_speakers,
        "pil_weight": 0.5,
        "ats_weight": 0.5,
        "model_defaults": {"fc_d_model": 32, "tf_d_model": 16},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "normalize": "per_feature",
            "window_size": 0.025,
            "sample_rate": SAMPLE_RATE,
            "window_stride": 0.01,
            "window": "hann",
            "features": 80,
            "n_fft": 512,
            "frame_splicing": 1,
            "dither": 0.0,
        },
        "sortformer_modules": {
            "_target_": "nemo.collections.asr.modules.sortformer_modules.SortformerModules",
            "num_spks": max_speakers,
            "dropout_rate": 0.0,
            "fc_d_model": 32,
            "tf_d_model": 16,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": 80,
            "feat_out": -1,
            "n_layers": 1,
            "d_model": 32,
            "subsampling": "dw_striding",
            "subsampling_factor": 8,
            "subsampling_conv_channels": 16,
            "causal_downsampling": False,
            "ff_expansion_factor": 2,
            "self_attention_model": "rel_pos",
            "n_heads": 2,
            "att_context_size": [-1, -1],
            "xscaling": True,
            "untie_biases": True,
            "pos_emb_max_len": 5000,
            "conv_kernel_size": 9,
            "conv_norm_type": "batch_norm",
            "dropout": 0.0,
            "dropout_pre_encoder": 0.0,
            "dropout_emb": 0.0,
            "dropout_att": 0.0,
        },
        "transformer_encoder": {
            "_target_": "nemo.collections.asr.modules.transformer.transformer_encoders.TransformerEncoder",
            "num_layers": 1,
            "hidden_size": 16,
            "inner_size": 32,
            "num_attention_heads": 2,
            "attn_score_dropout": 0.0,
            "attn_layer_dropout": 0.0,
            "ffn_dropout": 0.0,
            "hidden_act": "relu",
            "pre_ln": False,
            "pre_ln_final_layer_norm": True,
        },
        "loss": {"_target_": "nemo.collections.asr.losses.bce_loss.BCELoss", "weight": None, "reduction": "mean"},
    }


def build_tiny_checkpoint(path: Path, max_speakers: int = 4, seed: int = 0) -> Path:
    """Build a tiny Sortformer from :func:`tiny_sortformer_config` and ``save_to`` a ``.nemo`` file.

    Its (untrained) weights come from ``seed``, so the same file always gives the same turns: with weights
    from whatever the global generator held, some draws find no speech at all.
    """
    import torch
    from nemo.collections.asr.models import SortformerEncLabelModel
    from omegaconf import OmegaConf

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SortformerEncLabelModel(cfg=OmegaConf.create(tiny_sortformer_config(max_speakers)))
    model.save_to(str(path))
    return path


def main(argv: list[str]) -> int:
    """``publish model.nemo s3://bucket/prefix`` | ``fetch s3://bucket/prefix`` | ``tiny out.nemo``."""
    from callqc.settings import load_settings

    if len(argv) == 2 and argv[0] == "tiny":
        print(build_tiny_checkpoint(Path(argv[1])))
        return 0
    settings = load_settings()
    if len(argv) == 3 and argv[0] == "publish":
        print(json.dumps(publish_checkpoint(Path(argv[1]), argv[2], store_factory(settings)), indent=1))
        return 0
    if len(argv) == 2 and argv[0] == "fetch":
        cache = Path(settings.diarization.model_cache).expanduser()
        print(fetch_checkpoint(argv[1], cache, store_factory(settings)))
        return 0
    print("usage: python -m callqc.diarization.nemo_backend publish FILE.nemo s3://bucket/prefix|fetch URI|tiny OUT")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
