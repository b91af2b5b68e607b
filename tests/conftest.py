"""Shared fixtures: a real S3 API server (rclone) per session, settings pointing at it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from callqc.s3server import LocalS3Server, S3Credentials
from callqc.settings import Settings, load_settings
from callqc.storage import ObjectStore

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES = REPO_ROOT / "samples"

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3Server]:
    """A real `rclone serve s3` process on 127.0.0.1 with generated keys."""
    root = tmp_path_factory.mktemp("s3")
    server = LocalS3Server(root / "data", S3Credentials.generate(), log_path=root / "rclone.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def settings(s3_server: LocalS3Server, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings on the session's S3 server, with a bucket of this test's own."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]
    bucket = "t-" + "".join(ch for ch in request.node.name.lower() if ch.isalnum())[:40] + "-" + digest
    return load_settings(
        home=tmp_path / "home",
        s3={
            "endpoint": s3_server.endpoint,
            "access_key": s3_server.credentials.access_key,
            "secret_key": s3_server.credentials.secret_key,
            "bucket": bucket,
        },
    )


@pytest.fixture()
def store(settings: Settings) -> ObjectStore:
    return ObjectStore(settings.s3)
