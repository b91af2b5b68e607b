"""Model locations and their sha256 manifests (no S3 here; fetching is in tests/integration/test_asr_models.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from callqc.asr_models import (
    ModelIntegrityError,
    build_manifest,
    model_version,
    parse_manifest,
    parse_s3_uri,
    resolve_model_dir,
    verify_dir,
)
from callqc.settings import AsrSettings


def _model_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.bin").write_bytes(b"\x01" * 1000)
    (root / "config.json").write_text("{}")
    return root


def test_manifest_round_trip_and_verification(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    manifest = build_manifest(model)
    files = parse_manifest(json.dumps(manifest).encode())
    assert {f.name for f in files} == {"model.bin", "config.json"}
    verify_dir(model, files, full=True)
    (model / "model.bin").write_bytes(b"\x02" * 1000)  # same size, other bytes
    verify_dir(model, files, full=False)
    with pytest.raises(ModelIntegrityError):
        verify_dir(model, files, full=True)
    (model / "config.json").unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        verify_dir(model, files, full=False)


@pytest.mark.parametrize(
    "manifest",
    [
        {"files": {"../../etc/passwd": {"sha256": "a" * 64, "size": 1}, "model.bin": {"sha256": "a" * 64, "size": 1}}},
        {"files": {"sub/model.bin": {"sha256": "a" * 64, "size": 1}}},
        {"files": {"model.bin": {"sha256": "not-hex", "size": 1}}},
        {"files": {"config.json": {"sha256": "a" * 64, "size": 1}}},  # no model.bin
        {"nothing": 1},
        [],
    ],
)
def test_malformed_or_unsafe_manifests_are_refused(manifest: object) -> None:
    with pytest.raises(ModelIntegrityError):
        parse_manifest(json.dumps(manifest).encode())


def test_s3_uris() -> None:
    assert parse_s3_uri("s3://models-bucket/whisper/large-v3/") == ("models-bucket", "whisper/large-v3/")
    assert parse_s3_uri("s3://models-bucket") == ("models-bucket", "")
    with pytest.raises(ValueError):
        parse_s3_uri("https://example.com/model")


def test_a_local_model_dir_is_checked_against_its_manifest(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "vol")
    (model / "manifest.json").write_text(json.dumps(build_manifest(model)))
    settings = AsrSettings(model_dir=str(model), model_cache=tmp_path / "cache")
    assert resolve_model_dir(settings) == model
    digest = json.loads((model / "manifest.json").read_text())["files"]["model.bin"]["sha256"]
    assert model_version(model, "whisper-x") == f"whisper-x@{digest[:12]}"
    (model / "model.bin").write_bytes(b"\x03" * 1000)
    with pytest.raises(ModelIntegrityError):
        resolve_model_dir(settings)
    assert resolve_model_dir(settings.model_copy(update={"verify_model": False})) == model  # sizes only


def test_the_bundled_model_is_assembled_once_and_versioned(tmp_path: Path) -> None:
    settings = AsrSettings(model_cache=Path.home() / ".cache" / "callqc" / "models")
    model = resolve_model_dir(settings)
    assert (model / "model.bin").stat().st_size == 145_217_532
    assert model_version(model, "whisper-base").startswith("whisper-base@")
