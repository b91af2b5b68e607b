"""Security of the real gateway over a socket: authentication, roles and batch ownership, person login
with TOTP, audit of every report read, and encryption at rest of what the gateway stores."""

from __future__ import annotations

import grpc
import pyotp
import pytest

from callqc.client import CallQCClient, ClientAuth
from callqc.jobs import JobStore
from callqc.models import CallSpec
from callqc.security.audit import AuditLog
from callqc.security.login import UserDirectory, create_user
from callqc.security.passwords import Passwords
from callqc.settings import Settings
from callqc.storage import ObjectStore

from .conftest import GUARD_SECONDS, GatewayFactory, code_of
from .test_gateway import audio_bytes, store_report

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery staple 42"


@pytest.fixture()
def batch(make_gateway: GatewayFactory) -> tuple[CallQCClient, str]:
    """system-a submits a batch of one call; returns its client and the batch id."""
    client = make_gateway(subject="system-a")
    key = client.upload_bytes(audio_bytes(1), "a.wav").audio_key
    reply = client.submit("sec-1", [CallSpec(call_id="c1", audio_key=key)])
    return client, reply.batch_id


def _raw_client(client: CallQCClient, auth: ClientAuth) -> CallQCClient:
    """Another connection to the same gateway, with other credentials."""
    return CallQCClient(client.target, auth, timeout=GUARD_SECONDS)


def test_no_credentials_is_unauthenticated(batch) -> None:
    client, batch_id = batch
    with _raw_client(client, ClientAuth(local=True)) as anonymous:
        assert code_of(lambda: anonymous.get_batch(batch_id)) == grpc.StatusCode.UNAUTHENTICATED


def test_forged_and_garbage_tokens_are_unauthenticated(batch, settings: Settings) -> None:
    from callqc.security.tokens import TokenIssuer, generate_signing_key

    client, batch_id = batch
    forged = TokenIssuer(generate_signing_key(), settings.security.tokens.issuer).issue("system-a", ["qc_manager"])
    for token in (forged, "not-a-token"):
        with _raw_client(client, ClientAuth(local=True, token=token)) as intruder:
            assert code_of(lambda c=intruder: c.get_batch(batch_id)) == grpc.StatusCode.UNAUTHENTICATED


def test_another_call_system_cannot_read_the_batch(batch, make_gateway: GatewayFactory) -> None:
    _client, batch_id = batch
    other = make_gateway(subject="system-b")
    assert code_of(lambda: other.get_batch(batch_id)) == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("role", ["operator", "auditor"])
def test_roles_without_report_access_are_denied(make_gateway: GatewayFactory, jobs: JobStore, role: str) -> None:
    store_report(jobs, "bsec", "c9", owner="system-a")
    client = make_gateway(subject=f"a-{role}", roles=(role,))
    assert code_of(lambda: client.get_report("c9", "bsec")) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: client.get_batch("bsec")) == grpc.StatusCode.PERMISSION_DENIED


def test_reviewer_reads_only_assigned_batches(make_gateway: GatewayFactory, jobs: JobStore, settings: Settings) -> None:
    from ..conftest import issue_token

    store_report(jobs, "bassigned", "c1")
    store_report(jobs, "bother", "c2")
    client = make_gateway(subject="rita", roles=("reviewer",))
    token = issue_token(settings, "rita", "reviewer", batches=("bassigned",))
    with _raw_client(client, ClientAuth(local=True, token=token)) as reviewer:
        assert reviewer.get_report("c1", "bassigned").report.call_id == "c1"
        assert code_of(lambda: reviewer.get_report("c2", "bother")) == grpc.StatusCode.PERMISSION_DENIED


def test_report_reads_and_denials_are_audited_in_an_intact_chain(
    make_gateway: GatewayFactory, jobs: JobStore, store: ObjectStore, settings: Settings
) -> None:
    store_report(jobs, "baudit", "c1", owner="system-a")
    owner = make_gateway(subject="system-a")
    owner.get_report("c1", "baudit")
    stranger = make_gateway(subject="system-b")
    code_of(lambda: stranger.get_report("c1", "baudit"))
    log = AuditLog.from_settings(store, settings.security.audit)
    records = [(r.actor, r.action, r.resource, r.outcome.value) for r in log.records()]
    assert ("system-a", "report.read", "report/baudit/c1", "success") in records
    assert ("system-b", "batch.read", "batch/baudit", "denied") in records
    assert log.verify().ok


def test_login_with_password_and_totp(make_gateway: GatewayFactory, store: ObjectStore, settings: Settings) -> None:
    new = create_user(
        UserDirectory(store, settings.security.login.users_prefix),
        Passwords(settings.security.argon2),
        "maria",
        PASSWORD,
        ["qc_manager"],
    )
    client = make_gateway()
    with _raw_client(client, ClientAuth(local=True)) as anonymous:
        assert code_of(lambda: anonymous.login("maria", PASSWORD, "000000")) == grpc.StatusCode.UNAUTHENTICATED
        reply = anonymous.login("maria", PASSWORD, pyotp.TOTP(new.totp_secret).now())
    assert reply.token and list(reply.roles) == ["qc_manager"] and 0 < reply.expires_in_seconds <= 900
    log = AuditLog.from_settings(store, settings.security.audit)
    outcomes = [r.outcome.value for r in log.records() if r.action == "auth.login"]
    assert outcomes == ["failure", "success"]


def test_what_the_gateway_stores_is_ciphertext(batch, raw_store: ObjectStore, settings: Settings) -> None:
    client, batch_id = batch
    manifest_key = f"{settings.s3.jobs_prefix}batches/{batch_id}/manifest.json"
    raw = raw_store.get_bytes(manifest_key)
    assert raw.startswith(b"CQEN") and b"system-a" not in raw and b"c1" not in raw
    audio_key = client.upload_bytes(audio_bytes(7), "b.wav").audio_key
    assert audio_bytes(7) not in raw_store.get_bytes(audio_key)


def test_audio_is_streamed_only_to_roles_allowed_to_listen_and_audited(
    batch, make_gateway: GatewayFactory, store: ObjectStore, settings: Settings, jobs: JobStore
) -> None:
    owner, batch_id = batch
    assert owner.get_audio("c1", batch_id) == audio_bytes(1)
    manager = make_gateway(subject="maria", roles=("qc_manager",))
    assert manager.get_audio("c1", batch_id) == audio_bytes(1)
    for subject, roles in (("ops", ("operator",)), ("aud", ("auditor",)), ("system-b", ("call_system",))):
        other = make_gateway(subject=subject, roles=roles)
        assert code_of(lambda c=other: c.get_audio("c1", batch_id)) == grpc.StatusCode.PERMISSION_DENIED
    reads = [
        (r.actor, r.resource)
        for r in AuditLog.from_settings(store, settings.security.audit).records()
        if r.action == "audio.read"
    ]
    assert reads == [("system-a", f"audio/{batch_id}/c1"), ("maria", f"audio/{batch_id}/c1")]
