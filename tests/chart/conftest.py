"""Fixtures for the chart tests: the helm binary, rendered manifests per values profile, KubeRay CRD validators."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.kube import CrdValidator, helm, helm_binary, load_crd_schema

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "callqc"
CRDS = Path(__file__).resolve().parent / "crds"

# profile name -> values files layered on values.yaml (and the Serve config file it mirrors, if any)
PROFILES: dict[str, list[str]] = {
    "default": [],
    "gpu-single": ["values-gpu-single.yaml"],
    "gpu-multi": ["values-gpu-multi.yaml"],
    "external-s3": ["values-external-s3.yaml"],
    "gpu-multi+external-s3": ["values-gpu-multi.yaml", "values-external-s3.yaml"],
}


def values_args(profile: str) -> list[str]:
    return [arg for name in PROFILES[profile] for arg in ("-f", str(CHART / name))]


@cache
def render(profile: str, *extra: str) -> tuple[dict[str, Any], ...]:
    out = helm("template", "rel", str(CHART), "--namespace", "callqc", *values_args(profile), *extra).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


@pytest.fixture(scope="session")
def helm_path() -> Path:
    return helm_binary()


@pytest.fixture(scope="session")
def rayservice_validator() -> CrdValidator:
    return CrdValidator(load_crd_schema(CRDS / "ray.io_rayservices.yaml"))


@pytest.fixture(scope="session")
def raycluster_validator() -> CrdValidator:
    return CrdValidator(load_crd_schema(CRDS / "ray.io_rayclusters.yaml"))
