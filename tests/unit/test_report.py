"""callqc.report: verdict rules, idempotency keys, report building, and the report ⇄ proto contract."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from pydantic import BaseModel

from callqc.models import CallSpec, ChannelLayout, Finding, Role, Segment, Severity, Word
from callqc.report import Report, Versions, build_report, idempotency_key, report_json
from callqc.scorecard import default_scorecard, score_report
from callqc.v1 import callqc_pb2 as pb

VERSIONS = Versions(pipeline="callqc/0.1.0", asr_model="whisper-base", rule_pack="pack/1", speakers="channel-split/1")
SHA = "ab" * 32


def finding(rule_id: str, severity: Severity, category: str = "", start: float = 0.0) -> Finding:
    return Finding(rule_id=rule_id, name=f"rule {rule_id}", severity=severity, category=category, start=start)


def signal(rule_id: str = "C01", severity: Severity = Severity.S1) -> Finding:
    return finding(rule_id, severity, category="customer_signal")


# ---- verdict -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("findings", "expected"),
    [
        pytest.param([], "pass", id="nothing"),
        pytest.param([signal(), signal("C02", Severity.S0)], "pass", id="customer-signals-only"),
        pytest.param([finding("F03", Severity.S2)], "needs_review", id="S2"),
        pytest.param([finding("F03", Severity.S1), finding("F04", Severity.S2), signal()], "needs_review", id="S1+S2"),
        pytest.param([finding("F01", Severity.S0)], "fail", id="S0"),
        pytest.param(
            [finding("F02", Severity.S2), finding("F01", Severity.S0), signal()], "fail", id="S0-among-others"
        ),
    ],
)
def test_verdict_of_the_packaged_scorecard(findings: list[Finding], expected: str) -> None:
    assert score_report(findings, default_scorecard())[1] == expected


# ---- idempotency key ---------------------------------------------------------------------------


def test_idempotency_key_is_stable() -> None:
    key = idempotency_key("c1", SHA, VERSIONS)
    assert key == idempotency_key("c1", SHA, VERSIONS.model_copy())
    assert len(key) == 32
    assert all(ch in "0123456789abcdef" for ch in key)


@pytest.mark.parametrize("field", ["pipeline", "asr_model", "rule_pack", "speakers"])
def test_idempotency_key_changes_with_each_version(field: str) -> None:
    changed = VERSIONS.model_copy(update={field: getattr(VERSIONS, field) + "x"})
    assert idempotency_key("c1", SHA, changed) != idempotency_key("c1", SHA, VERSIONS)


def test_idempotency_key_changes_with_call_and_sha() -> None:
    base = idempotency_key("c1", SHA, VERSIONS)
    assert idempotency_key("c2", SHA, VERSIONS) != base
    assert idempotency_key("c1", "cd" * 32, VERSIONS) != base


def test_idempotency_key_parts_do_not_run_together() -> None:
    """Moving characters between adjacent parts must not produce the same key."""
    a = Versions(pipeline="p", asr_model="ab", rule_pack="c", speakers="s")
    b = Versions(pipeline="p", asr_model="a", rule_pack="bc", speakers="s")
    assert idempotency_key("c1", SHA, a) != idempotency_key("c1", SHA, b)


# ---- build_report --------------------------------------------------------------------------------


def sample_report(findings: list[Finding] | None = None) -> Report:
    spec = CallSpec(
        call_id="call-001", audio_key="audio/uploads/" + SHA, channel_layout=ChannelLayout.STEREO_AGENT_RIGHT
    )
    transcript = [
        Segment(
            id="s0001",
            role=Role.AGENT,
            channel=1,
            start=0.0,
            end=2.0,
            text="您好",
            words=[Word(text="您", start=0.0, end=0.5, probability=0.9), Word(text="好", start=0.5, end=1.0)],
        ),
        Segment(id="s0002", role=Role.CUSTOMER, channel=0, start=2.5, end=3.0, text="喂"),
    ]
    if findings is None:
        findings = [
            finding("F07", Severity.S1, start=2.5),
            finding("F01", Severity.S0, start=0.5),
            finding("C01", Severity.S2, category="customer_signal", start=0.5),
        ]
        findings[1].segment_ids.append("s0001")
    return build_report(
        spec,
        "b123",
        audio_sha256=SHA,
        duration=12.34567,
        transcript=transcript,
        findings=findings,
        versions=VERSIONS,
        stage_seconds={"audio": 0.123456, "asr": 1.0},
    )


def test_build_report_fields() -> None:
    report = sample_report()
    assert (report.call_id, report.batch_id, report.language) == ("call-001", "b123", "zh")
    assert report.channel_layout == "stereo_agent_right"
    assert report.duration == 12.346
    assert report.stage_seconds == {"audio": 0.1235, "asr": 1.0}
    assert report.audio_sha256 == SHA
    assert report.audio_key == "audio/uploads/" + SHA
    assert report.idempotency_key == idempotency_key("call-001", SHA, VERSIONS)
    assert report.verdict == "fail"
    assert report.created_at.endswith("+00:00")


def test_build_report_sorts_findings_by_start_then_rule() -> None:
    report = sample_report()
    assert [(f.start, f.rule_id) for f in report.findings] == [(0.5, "C01"), (0.5, "F01"), (2.5, "F07")]


def test_build_report_verdicts() -> None:
    assert sample_report([]).verdict == "pass"
    assert sample_report([signal()]).verdict == "pass"
    assert sample_report([finding("F09", Severity.S2)]).verdict == "needs_review"


# ---- the proto contract --------------------------------------------------------------------------


def test_report_json_parses_into_the_proto_strictly() -> None:
    report = sample_report()
    data = report_json(report)
    message = json_format.Parse(data, pb.Report(), ignore_unknown_fields=False)
    assert message.call_id == "call-001"
    assert message.verdict == "fail"
    assert message.versions.asr_model == "whisper-base"
    assert [s.role for s in message.transcript] == ["agent", "customer"]
    assert message.transcript[0].words[1].text == "好"
    assert [f.rule_id for f in message.findings] == ["C01", "F01", "F07"]
    assert list(message.findings[1].segment_ids) == ["s0001"]
    assert message.findings[1].severity == "S0"
    assert dict(message.stage_seconds) == {"audio": 0.1235, "asr": 1.0}
    # and back: the proto's JSON mapping carries the same values as the stored JSON
    back = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert back == json.loads(data)


@pytest.mark.parametrize(
    ("model", "message"),
    [(Report, pb.Report), (Versions, pb.Versions), (Segment, pb.Segment), (Word, pb.Word), (Finding, pb.Finding)],
)
def test_model_and_proto_have_the_same_fields(model: type[BaseModel], message: type) -> None:
    """Guards both directions: a field only in the proto would silently never be filled."""
    assert set(model.model_fields) == {f.name for f in message.DESCRIPTOR.fields}
