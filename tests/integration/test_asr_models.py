"""Models under an S3 prefix: published with a sha256 manifest, fetched once per node, checked, loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from callqc.asr_models import (
    ModelIntegrityError,
    fetch_model,
    model_version,
    publish_model,
    resolve_model_dir,
    store_factory,
)
from callqc.settings import AsrSettings, Settings
from callqc.storage import ObjectStore

pytestmark = pytest.mark.integration


class CountingStore:
    """An ObjectStore wrapper that counts reads (to prove the second fetch downloads nothing)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner_store = inner
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner_store, name)

    def get_bytes(self, key: str) -> bytes:
        self.reads += 1
        return self.inner_store.get_bytes(key)


def _fake_model(root: Path) -> Path:
    root.mkdir()
    (root / "model.bin").write_bytes(hashlib.sha256(b"seed").digest() * 40000)  # 1.28 MB
    (root / "config.json").write_text('{"alignment_heads": []}')
    (root / "tokenizer.json").write_text("{}")
    return root


def test_publish_then_fetch_once_and_check(raw_store: ObjectStore, tmp_path: Path) -> None:
    """An operator uploads a model in plaintext (e.g. with mc); replicas stream it down."""
    store = raw_store
    model = _fake_model(tmp_path / "src")
    uri = f"s3://{store.bucket}/models/fake/v1"
    publish_model(model, uri, lambda _bucket: store)
    assert store.exists("models/fake/v1/manifest.json")
    counting = CountingStore(store)
    cache = tmp_path / "cache"
    local = fetch_model(uri, cache, lambda _bucket: counting)
    assert (local / "model.bin").read_bytes() == (model / "model.bin").read_bytes()
    assert (
        json.loads((local / "assembly.json").read_text())["sha256"]
        == hashlib.sha256((model / "model.bin").read_bytes()).hexdigest()
    )
    reads = counting.reads
    assert fetch_model(uri, cache, lambda _bucket: counting) == local
    assert counting.reads == reads + 1  # only the manifest: the files are already here and check out
    (local / "model.bin").write_bytes(b"\x00" * (local / "model.bin").stat().st_size)  # damaged on disk
    assert fetch_model(uri, cache, lambda _bucket: counting) == local
    assert (local / "model.bin").read_bytes() == (model / "model.bin").read_bytes()


def test_a_tampered_object_is_refused(raw_store: ObjectStore, tmp_path: Path) -> None:
    store = raw_store
    uri = f"s3://{store.bucket}/models/fake/v2"
    publish_model(_fake_model(tmp_path / "src"), uri, lambda _bucket: store)
    store.put_bytes("models/fake/v2/config.json", b'{"alignment_heads": [[0, 0]]}')
    with pytest.raises(ModelIntegrityError, match=r"config\.json"):
        fetch_model(uri, tmp_path / "cache", lambda _bucket: store)
    assert not any((tmp_path / "cache" / "s3").glob("*/.complete"))


def test_models_go_through_the_products_store(settings: Settings, raw_store: ObjectStore, tmp_path: Path) -> None:
    """``store_factory``: open_store for the bucket named in the URI (client-side encrypted here)."""
    stores = store_factory(settings)
    uri = f"s3://{settings.s3.bucket}/models/fake/enc"
    publish_model(_fake_model(tmp_path / "src"), uri, stores)
    assert raw_store.get_bytes("models/fake/enc/tokenizer.json") != b"{}"  # encrypted at rest
    local = resolve_model_dir(AsrSettings(model_dir=uri, model_cache=tmp_path / "cache"), settings)
    assert (local / "tokenizer.json").read_text() == "{}"


def test_whisper_base_from_s3_loads_and_transcribes(raw_store: ObjectStore, tmp_path: Path) -> None:
    """The production path (model under an S3 prefix) with the real bundled weights."""
    import numpy as np

    from callqc.asr import Transcriber

    bundled = resolve_model_dir(AsrSettings())
    source = tmp_path / "whisper-base"
    source.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        (source / name).symlink_to(bundled / name)
    uri = f"s3://{raw_store.bucket}/models/whisper-base"
    publish_model(source, uri, lambda _bucket: raw_store)
    settings = AsrSettings(model_dir=uri, model_cache=tmp_path / "cache")
    local = fetch_model(uri, settings.model_cache, lambda _bucket: raw_store)
    transcriber = Transcriber(settings, local)
    assert transcriber.version == model_version(bundled, "whisper-base")
    assert transcriber.transcribe(np.zeros(16000 * 3, np.float32), "en") == []
