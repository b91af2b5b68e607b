"""The Review service of the real gateway over a socket, on a real S3 server: assignment, the review
workflow (confirm / reject / add → human-edited score → appeal → final), role and assignment checks,
the raw transcript kept encrypted and shown to QC managers only, audit records, BI exports, coverage."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import datetime, timedelta, timezone

import grpc
import pytest

from callqc.client import CallQCClient, ClientAuth
from callqc.jobs import BatchManifest, CallStatus, JobStore
from callqc.models import CallSpec, CallState, Finding, Role, Segment, Severity
from callqc.report import Versions, build_report, raw_transcript_key, save_report
from callqc.security.audit import AuditLog
from callqc.settings import Settings
from callqc.storage import ObjectStore
from callqc.v1 import callqc_pb2 as pb
from callqc.v1 import review_pb2 as rpb

from ..conftest import issue_token
from .conftest import GUARD_SECONDS, GatewayFactory, code_of

pytestmark = pytest.mark.integration

ID_NUMBER = "11010519491231002X"
MOBILE = "13812345678"
BATCH = "brev1"


def _store_batch(jobs: JobStore) -> None:
    """Batch brev1 of system-a: c1 (findings, PII), c2 (clean), c3 (not inspected), x (rejected at intake)."""
    specs = [CallSpec(call_id=c, audio_key="audio/uploads/" + "ab" * 32) for c in ("c1", "c2", "c3")]
    rejected = [CallStatus(call_id="x", state=CallState.FAILED, error_message="bad")]
    manifest = BatchManifest(
        batch_id=BATCH, request_id="r", client="system-a", request_digest="d", calls=specs, rejected=rejected
    )
    jobs.create_batch(manifest)
    versions = Versions(pipeline="callqc/0.1.0", asr_model="m", rule_pack="p", speakers="s")
    transcript = [
        Segment(id="s0001", role=Role.AGENT, start=0.0, end=3.0, text=f"请核对身份证{ID_NUMBER}"),
        Segment(id="s0002", role=Role.CUSTOMER, start=3.0, end=6.0, text=f"我手机{MOBILE}"),
    ]
    findings = [
        Finding(
            rule_id="F17",
            name="骚扰",
            severity=Severity.S1,
            start=0.0,
            end=3.0,
            confidence=0.9,
            evidence=f"身份证{ID_NUMBER}",
            segment_ids=["s0001"],
        ),
        Finding(rule_id="R05", name="录音告知", severity=Severity.S2, start=3.0, end=6.0),
        Finding(rule_id="C06", name="困难客户", severity=Severity.S2, category="customer_signal", start=4.0),
    ]
    for call_id, found in (("c1", findings), ("c2", [])):
        report = build_report(
            specs[0].model_copy(update={"call_id": call_id}),
            BATCH,
            audio_sha256="ab" * 32,
            duration=6.0,
            transcript=transcript,
            findings=found,
            versions=versions,
            stage_seconds={"asr": 1.0},
        )
        save_report(jobs, report)


def _client(target: str, settings: Settings, subject: str, *roles: str, batches: tuple[str, ...] = ()) -> CallQCClient:
    token = issue_token(settings, subject, *roles, batches=batches)
    return CallQCClient(target, ClientAuth(local=True, token=token), timeout=GUARD_SECONDS)


@pytest.fixture()
def people(make_gateway: GatewayFactory, jobs: JobStore, settings: Settings):
    _store_batch(jobs)
    maria = make_gateway(subject="maria", roles=("qc_manager",))
    clients = {
        "maria": maria,
        "rita": _client(maria.target, settings, "rita", "reviewer"),
        "tom": _client(maria.target, settings, "tom", "reviewer"),
        "ops": _client(maria.target, settings, "ops", "operator"),
        "system-a": _client(maria.target, settings, "system-a", "call_system"),
    }
    yield clients
    for name, client in clients.items():
        if name != "maria":
            client.close()


def _ids(item: rpb.ReviewItem) -> dict[str, tuple[str, int]]:
    return {f.id: (f.finding.rule_id, f.decision) for f in item.findings}


def test_review_workflow_end_to_end(people, store: ObjectStore, raw_store: ObjectStore, settings: Settings) -> None:
    maria, rita, tom = people["maria"], people["rita"], people["tom"]

    # unassigned reviewers see nothing
    assert code_of(lambda: rita.get_review_item("c1", BATCH)) == grpc.StatusCode.PERMISSION_DENIED
    assert maria.assign_reviewer(BATCH, "rita").reviewers == ["rita"]
    assert list(rita.list_assignments().batch_ids) == [BATCH]
    assert code_of(lambda: tom.list_assignments("rita")) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: tom.get_review_item("c1", BATCH)) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: rita.assign_reviewer(BATCH, "rita")) == grpc.StatusCode.PERMISSION_DENIED

    item = rita.get_review_item("c1", BATCH)
    assert item.state == rpb.REVIEW_STATE_DRAFT and item.revision == 0 and not item.human_edited
    assert (item.machine_score, item.machine_verdict, item.verdict) == (82.0, "needs_review", "needs_review")
    # what reviewers see is masked
    shown = item.report.transcript[0].text + item.report.findings[0].evidence + item.report.transcript[1].text
    assert ID_NUMBER not in shown and MOBILE not in shown and "138****5678" in shown and shown.count("002X") == 2
    assert _ids(item)["m0"] == ("F17", rpb.FINDING_DECISION_PENDING)

    item = rita.submit_review("c1", BATCH, "reject", expected_revision=0, finding_id="m0", reason="录音中无此内容")
    item = rita.submit_review("c1", BATCH, "confirm", expected_revision=1, finding_id="m1")
    added = pb.Finding(rule_id="R01", name="自我介绍", severity="S1", start=0.0, end=1.0, evidence="喂")
    item = rita.submit_review("c1", BATCH, "add", expected_revision=2, reason="漏检", finding=added)
    assert item.human_edited and item.revision == 3
    assert (item.machine_score, item.score, item.verdict) == (82.0, 87.0, "pass")
    assert _ids(item)["m0"] == ("F17", rpb.FINDING_DECISION_REJECTED)
    assert _ids(item)["h1"] == ("R01", rpb.FINDING_DECISION_CONFIRMED)
    assert item.report.findings[0].rule_id == "F17"  # the machine result is kept unchanged beside the edits

    # a stale revision is refused, not overwritten
    assert code_of(lambda: rita.submit_review("c1", BATCH, "confirm", expected_revision=1, finding_id="m2")) == (
        grpc.StatusCode.ABORTED
    )
    assert code_of(lambda: rita.submit_review("c1", BATCH, "reject", expected_revision=3, finding_id="m1")) == (
        grpc.StatusCode.FAILED_PRECONDITION  # no reason
    )
    item = rita.submit_review("c1", BATCH, "complete", expected_revision=3)
    assert item.state == rpb.REVIEW_STATE_REVIEWED

    # appeal and finalisation are for QC managers
    assert code_of(lambda: rita.appeal_review("c1", BATCH, expected_revision=4, reason="x")) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    item = maria.appeal_review("c1", BATCH, expected_revision=4, reason="坐席申诉")
    assert item.state == rpb.REVIEW_STATE_APPEALED
    item = rita.submit_review("c1", BATCH, "reject", expected_revision=5, finding_id="h1", reason="申诉成立")
    item = maria.finalize_review("c1", BATCH, expected_revision=6, reason="结案")
    assert item.state == rpb.REVIEW_STATE_FINAL and item.score == 97.0 and item.human_edited
    assert [e.kind for e in item.history] == [
        rpb.REVIEW_ACTION_KIND_REJECT,
        rpb.REVIEW_ACTION_KIND_CONFIRM,
        rpb.REVIEW_ACTION_KIND_ADD,
        rpb.REVIEW_ACTION_KIND_COMPLETE,
        rpb.REVIEW_ACTION_KIND_APPEAL,
        rpb.REVIEW_ACTION_KIND_REJECT,
        rpb.REVIEW_ACTION_KIND_FINALIZE,
    ]
    assert [e.actor for e in item.history] == ["rita"] * 4 + ["maria", "rita", "maria"]
    assert item.history[0].reason == "录音中无此内容" and item.history[0].at
    assert code_of(lambda: maria.submit_review("c1", BATCH, "confirm", expected_revision=7, finding_id="m1")) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )

    # the raw transcript: kept only encrypted, shown to QC managers only
    raw_key = f"{settings.s3.reports_prefix}{BATCH}/raw/c1.json"
    sealed = raw_store.get_bytes(raw_key)
    assert sealed.startswith(b"CQEN") and ID_NUMBER.encode() not in sealed
    stored_report = raw_store.get_bytes(f"{settings.s3.reports_prefix}{BATCH}/c1.json")
    assert ID_NUMBER.encode() not in stored_report
    raw = maria.get_raw_transcript("c1", BATCH)
    assert ID_NUMBER in raw.transcript[0].text and ID_NUMBER in raw.findings[0].evidence
    assert code_of(lambda: rita.get_raw_transcript("c1", BATCH)) == grpc.StatusCode.PERMISSION_DENIED

    # every change and read is audited, in an intact chain
    time.sleep(0.2)  # interceptor denials are appended from a background thread
    log = AuditLog.from_settings(store, settings.security.audit)
    records = [(r.actor, r.action, r.resource, r.outcome.value) for r in log.records()]
    resource = f"review/{BATCH}/c1"
    for expected in [
        ("maria", "review.assign", f"batch/{BATCH}", "success"),
        ("rita", "batch.read", f"batch/{BATCH}", "denied"),
        ("tom", "batch.read", f"batch/{BATCH}", "denied"),
        ("rita", "review.read", resource, "success"),
        ("rita", "review.reject", resource, "success"),
        ("rita", "review.confirm", resource, "failure"),
        ("rita", "review.add", resource, "success"),
        ("rita", "review.complete", resource, "success"),
        ("rita", "rpc.denied", "/callqc.v1.Review/AppealReview", "denied"),
        ("maria", "review.appeal", resource, "success"),
        ("maria", "review.finalize", resource, "success"),
        ("maria", "transcript.raw.read", f"transcript/{BATCH}/c1", "success"),
        ("rita", "rpc.denied", "/callqc.v1.Review/GetRawTranscript", "denied"),
    ]:
        assert expected in records, expected
    assert not any("录音中无此内容" in json.dumps(r.details, ensure_ascii=False) for r in log.records())
    assert log.verify().ok


def test_reviewer_with_batch_in_token_and_other_roles(people, settings: Settings) -> None:
    maria = people["maria"]
    with _client(maria.target, settings, "lena", "reviewer", batches=(BATCH,)) as lena:
        assert lena.get_review_item("c1", BATCH).revision == 0
        assert list(lena.list_assignments().batch_ids) == [BATCH]
    for name in ("ops", "system-a"):
        client = people[name]
        assert code_of(lambda c=client: c.get_review_item("c1", BATCH)) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda c=client: c.export_findings(BATCH)) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: maria.get_review_item("c3", BATCH)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: maria.assign_reviewer(BATCH, "../x")) == grpc.StatusCode.INVALID_ARGUMENT


def test_exports_csv_and_jsonl(people) -> None:
    maria, rita = people["maria"], people["rita"]
    maria.assign_reviewer(BATCH, "rita")
    rita.submit_review("c1", BATCH, "reject", expected_revision=0, finding_id="m0", reason="误报")

    data = maria.export_findings(BATCH, "csv")
    assert data.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert [(r["call_id"], r["finding_id"], r["rule_id"]) for r in rows] == [
        ("c1", "m0", "F17"),
        ("c1", "m1", "R05"),
        ("c1", "m2", "C06"),
        ("c2", "", ""),
    ]
    assert rows[0]["decision"] == "rejected" and rows[0]["decision_reason"] == "误报"
    assert rows[0]["machine_score"] == "82.0" and rows[0]["score"] == "97.0" and rows[0]["human_edited"] == "True"
    assert rows[0]["evidence"].endswith("002X") and ID_NUMBER not in data.decode("utf-8-sig")
    assert rows[3]["machine_verdict"] == "pass"

    lines = [json.loads(line) for line in maria.export_findings(BATCH, "jsonl").decode().splitlines()]
    assert len(lines) == 4 and lines[0]["segment_ids"] == ["s0001"] and lines[0]["confidence"] == 0.9
    machine = [json.loads(line) for line in maria.export_findings(BATCH, "jsonl", machine_only=True).splitlines()]
    assert machine[0]["decision"] == "" and machine[0]["score"] == 82.0


def test_daily_coverage(people) -> None:
    maria, ops = people["maria"], people["ops"]
    today = datetime.now(timezone(timedelta(hours=8))).date()
    cov = maria.get_coverage()
    assert (cov.day, cov.received, cov.inspected, cov.not_inspected) == (today.isoformat(), 4, 2, 2)
    assert (cov.rejected_at_intake, cov.batches, cov.coverage) == (1, 1, 0.5)
    assert ops.get_coverage(today.isoformat(), "+08:00").received == 4
    yesterday = maria.get_coverage((today - timedelta(days=1)).isoformat())
    assert (yesterday.received, yesterday.coverage) == (0, 1.0)
    assert code_of(lambda: maria.get_coverage("2026-13-01")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: people["rita"].get_coverage()) == grpc.StatusCode.PERMISSION_DENIED


def test_no_raw_transcript_on_an_unencrypted_store(jobs: JobStore, raw_store: ObjectStore, settings: Settings) -> None:
    plain = JobStore(raw_store, settings.s3, io_threads=2)
    report = build_report(
        CallSpec(call_id="p1", audio_key="audio/x"),
        "bplain",
        audio_sha256="ab" * 32,
        duration=1.0,
        transcript=[Segment(id="s1", role=Role.CUSTOMER, start=0, end=1, text=f"手机{MOBILE}")],
        findings=[],
        versions=Versions(pipeline="p", asr_model="m", rule_pack="r", speakers="s"),
        stage_seconds={},
    )
    save_report(plain, report)
    assert not raw_store.exists(raw_transcript_key(plain, "bplain", "p1"))
    assert MOBILE.encode() not in raw_store.get_bytes(plain.report_key("bplain", "p1"))


def test_cli_review_and_export(people, settings: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from callqc import cli_review
    from callqc.cli import app

    target = people["maria"].target
    monkeypatch.setattr(cli_review, "_connect", lambda: _client(target, settings, "maria", "qc_manager"))
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    assert "rita" in run("review", "assign", BATCH, "rita")
    shown = json.loads(run("review", "show", "c1", "--batch", BATCH, "--json"))
    assert shown["revision"] == 0 and shown["findings"][0]["id"] == "m0"
    assert "human-edited" in run("review", "reject", "c1", "m0", "--reason", "误报", "--batch", BATCH)
    assert "reviewed" in run("review", "complete", "c1", "--batch", BATCH)
    out = tmp_path / "f.jsonl"
    run("export", "findings", BATCH, "--format", "jsonl", "--out", str(out))
    assert json.loads(out.read_text().splitlines()[0])["decision"] == "rejected"
    assert json.loads(run("export", "coverage", "--json"))["received"] == "4"  # int64 → string in proto JSON
    result = runner.invoke(app, ["review", "confirm", "c1", "m1", "--batch", BATCH])
    assert result.exit_code == 1 and "FAILED_PRECONDITION" in result.output
