"""Shared fixtures: a real S3 API server (rclone) per session, settings pointing at it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from callqc.s3server import LocalS3Server, S3Credentials
from callqc.settings import Settings, load_settings
from callqc.storage import ObjectStore, open_store

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


@pytest.fixture(scope="session")
def security_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Keys generated for this test session (never committed): master keyring, token key, audit key."""
    from callqc.security.envelope import Keyring
    from callqc.security.keyfiles import write_private
    from callqc.security.tokens import generate_signing_key, write_signing_key

    root = tmp_path_factory.mktemp("keys")
    files = {"keyring": root / "keyring.json", "signing": root / "signing.pem", "audit": root / "audit.key"}
    write_private(files["keyring"], Keyring.generate("k1").to_json().encode())
    write_signing_key(generate_signing_key(), files["signing"])
    write_private(files["audit"], os.urandom(32))
    return files


def issue_token(settings: Settings, subject: str, *roles: str, batches: tuple[str, ...] = ()) -> str:
    """A short-lived bearer token signed with the session's test key."""
    from callqc.security.tokens import TokenIssuer

    issuer = TokenIssuer.from_settings(settings.security.tokens)
    return issuer.issue(subject, list(roles), kind="service" if "call_system" in roles else "person", batches=batches)


@pytest.fixture()
def settings(
    s3_server: LocalS3Server, tmp_path: Path, request: pytest.FixtureRequest, security_files: dict[str, Path]
) -> Settings:
    """Settings on the session's S3 server, with a bucket of this test's own, encrypted at rest;
    the gateway on loopback-only local credentials with bearer tokens."""
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
        gateway={"tls_mode": "local"},
        security={
            "envelope": {"keyring_file": security_files["keyring"]},
            "tokens": {"signing_key_file": security_files["signing"]},
            "audit": {"hmac_key_file": security_files["audit"]},
            "argon2": {"memory_cost_kib": 1024, "time_cost": 1, "parallelism": 1},  # fast hashing in tests
        },
    )


@pytest.fixture()
def store(settings: Settings) -> ObjectStore:
    """The bucket as the product uses it: client-side encrypted (see callqc.storage.open_store)."""
    return open_store(settings)


@pytest.fixture()
def raw_store(settings: Settings) -> ObjectStore:
    """The same bucket without encryption: what the S3 server really holds."""
    return ObjectStore(settings.s3)
