"""callqc.review: states and transitions, roles, history, optimistic concurrency, machine vs human side by side."""

from __future__ import annotations

import threading

import pytest

from callqc.models import CallSpec, Finding, JudgeSummary, Role, Segment, Severity
from callqc.report import Report, Versions, build_report
from callqc.review import (
    ActionKind,
    Decision,
    ReviewAction,
    ReviewConflict,
    ReviewError,
    ReviewForbidden,
    ReviewState,
    apply_action,
    apply_to_record,
    assign_reviewer,
    assignments_of,
    human_view,
    load_review,
    new_record,
    review_history,
    reviewers_of,
)

from .test_security_helpers import FakeObjectStore

REVIEWER = ("reviewer",)
MANAGER = ("qc_manager",)


def make_report(findings: list[Finding] | None = None, judge_status: str = "ok") -> Report:
    if findings is None:
        findings = [
            Finding(rule_id="F17", name="骚扰", severity=Severity.S1, start=1.0, confidence=0.9),
            Finding(rule_id="R05", name="录音告知", severity=Severity.S2, start=5.0),
            Finding(rule_id="C06", name="困难客户", severity=Severity.S2, category="customer_signal", start=6.0),
        ]
    return build_report(
        CallSpec(call_id="c1", audio_key="audio/x"),
        "b1",
        audio_sha256="ab" * 32,
        duration=10.0,
        transcript=[Segment(id="s0001", role=Role.AGENT, start=0.0, end=2.0, text="您好")],
        findings=findings,
        versions=Versions(pipeline="p", asr_model="m", rule_pack="r", speakers="s"),
        stage_seconds={},
        judge=JudgeSummary(status=judge_status),
    )


def act(kind: ActionKind, finding_id: str = "", reason: str = "", finding: Finding | None = None) -> ReviewAction:
    return ReviewAction(kind=kind, finding_id=finding_id, reason=reason, finding=finding)


@pytest.fixture()
def store() -> FakeObjectStore:
    return FakeObjectStore()


def test_untouched_review_is_the_machine_result() -> None:
    report = make_report()
    view = human_view(report, new_record("b1", "c1", report))
    assert report.verdict == "needs_review" and report.score == 82.0  # 100 - 15 (F17) - 3 (R05)
    assert (view.state, view.revision, view.human_edited) == (ReviewState.DRAFT, 0, False)
    assert (view.score, view.verdict) == (report.score, report.verdict)
    assert [(f.id, f.origin, f.decision) for f in view.findings] == [
        ("m0", "machine", Decision.PENDING),
        ("m1", "machine", Decision.PENDING),
        ("m2", "machine", Decision.PENDING),
    ]


def test_full_workflow_side_by_side(store: FakeObjectStore) -> None:
    report = make_report()
    new = Finding(rule_id="R01", name="自我介绍", severity=Severity.S1, start=7.0, end=8.0, evidence="喂")
    rec = apply_action(
        store,
        "b1",
        "c1",
        act(ActionKind.REJECT, "m0", "客户确认无此承诺"),
        actor="rita",
        roles=REVIEWER,
        expected_revision=0,
        report=report,
    )
    rec = apply_action(
        store,
        "b1",
        "c1",
        act(ActionKind.CONFIRM, "m1"),
        actor="rita",
        roles=REVIEWER,
        expected_revision=1,
        report=report,
    )
    rec = apply_action(
        store,
        "b1",
        "c1",
        act(ActionKind.ADD, reason="漏检", finding=new),
        actor="rita",
        roles=REVIEWER,
        expected_revision=2,
        report=report,
    )
    view = human_view(report, rec)
    assert view.human_edited and view.revision == 3
    assert view.machine_score == 82.0 and view.machine_verdict == "needs_review"
    assert view.score == 87.0  # 100 - 3 (R05 confirmed) - 10 (R01 added); F17 rejected
    assert view.verdict == "pass"  # all agent findings decided by a human
    by_id = {f.id: f for f in view.findings}
    assert by_id["m0"].decision == Decision.REJECTED and by_id["m0"].reason == "客户确认无此承诺"
    assert by_id["h1"].origin == "human" and by_id["h1"].finding.source == "human"
    # the machine findings are untouched in the report
    assert report.findings[0].rule_id == "F17" and len(report.findings) == 3

    rec = apply_action(store, "b1", "c1", act(ActionKind.COMPLETE), actor="rita", roles=REVIEWER, expected_revision=3)
    assert rec.state == ReviewState.REVIEWED
    rec = apply_action(store, "b1", "c1", act(ActionKind.APPEAL, reason="坐席申诉"), actor="maria", roles=MANAGER)
    assert rec.state == ReviewState.APPEALED
    rec = apply_action(store, "b1", "c1", act(ActionKind.REJECT, "h1", "申诉成立"), actor="maria", roles=MANAGER)
    rec = apply_action(store, "b1", "c1", act(ActionKind.FINALIZE, reason="结案"), actor="maria", roles=MANAGER)
    assert rec.state == ReviewState.FINAL and rec.revision == 7
    assert human_view(report, rec).score == 97.0
    assert [e.kind for e in rec.history] == ["reject", "confirm", "add", "complete", "appeal", "reject", "finalize"]
    assert [e.revision for e in rec.history] == list(range(1, 8))
    assert rec.history[3].from_state == ReviewState.DRAFT and rec.history[3].to_state == ReviewState.REVIEWED
    assert all(e.at.endswith("+00:00") for e in rec.history)
    assert rec.reviewers == ["rita", "maria"]
    # every revision is kept
    assert [r.revision for r in review_history(store, "b1", "c1")] == list(range(1, 8))
    assert load_review(store, "b1", "c1") == rec
    # final is final
    with pytest.raises(ReviewError, match="final"):
        apply_action(store, "b1", "c1", act(ActionKind.CONFIRM, "m1"), actor="maria", roles=MANAGER)


@pytest.mark.parametrize(
    ("state", "kind", "ok"),
    [
        (ReviewState.DRAFT, ActionKind.COMPLETE, True),
        (ReviewState.DRAFT, ActionKind.APPEAL, False),
        (ReviewState.DRAFT, ActionKind.FINALIZE, False),
        (ReviewState.REVIEWED, ActionKind.APPEAL, True),
        (ReviewState.REVIEWED, ActionKind.FINALIZE, True),
        (ReviewState.REVIEWED, ActionKind.COMPLETE, False),
        (ReviewState.REVIEWED, ActionKind.CONFIRM, False),
        (ReviewState.APPEALED, ActionKind.CONFIRM, True),
        (ReviewState.APPEALED, ActionKind.COMPLETE, True),
        (ReviewState.APPEALED, ActionKind.FINALIZE, True),
        (ReviewState.FINAL, ActionKind.APPEAL, False),
        (ReviewState.FINAL, ActionKind.COMPLETE, False),
    ],
)
def test_transitions(state: ReviewState, kind: ActionKind, ok: bool) -> None:
    record = new_record("b1", "c1").model_copy(update={"state": state})
    action = act(kind, "m0" if kind == ActionKind.CONFIRM else "", reason="why")
    if ok:
        assert apply_to_record(record, action, actor="maria", roles=MANAGER).revision == 1
    else:
        with pytest.raises(ReviewError):
            apply_to_record(record, action, actor="maria", roles=MANAGER)


@pytest.mark.parametrize("kind", [ActionKind.APPEAL, ActionKind.FINALIZE])
def test_only_managers_appeal_and_finalise(kind: ActionKind) -> None:
    record = new_record("b1", "c1").model_copy(update={"state": ReviewState.REVIEWED})
    with pytest.raises(ReviewForbidden):
        apply_to_record(record, act(kind, reason="x"), actor="rita", roles=REVIEWER)
    with pytest.raises(ReviewForbidden):
        apply_to_record(new_record("b1", "c1"), act(ActionKind.CONFIRM, "m0"), actor="ops", roles="operator,auditor")


def test_reasons_and_finding_ids_are_checked() -> None:
    report = make_report()
    record = new_record("b1", "c1", report)
    with pytest.raises(ReviewError, match="reason"):
        apply_to_record(record, act(ActionKind.REJECT, "m0"), actor="rita", roles=REVIEWER)
    with pytest.raises(ReviewError, match="no finding"):
        apply_to_record(record, act(ActionKind.CONFIRM, "m9"), actor="rita", roles=REVIEWER, report=report)
    with pytest.raises(ReviewError, match="no finding"):
        apply_to_record(record, act(ActionKind.CONFIRM, "h1"), actor="rita", roles=REVIEWER, report=report)
    with pytest.raises(ReviewError, match="needs a finding"):
        apply_to_record(record, act(ActionKind.ADD, reason="x"), actor="rita", roles=REVIEWER)


def test_stale_revision_is_a_conflict(store: FakeObjectStore) -> None:
    apply_action(store, "b1", "c1", act(ActionKind.CONFIRM, "m0"), actor="a", roles=REVIEWER, expected_revision=0)
    with pytest.raises(ReviewConflict):
        apply_action(store, "b1", "c1", act(ActionKind.CONFIRM, "m1"), actor="b", roles=REVIEWER, expected_revision=0)
    assert load_review(store, "b1", "c1").revision == 1


def test_concurrent_writers_never_lose_an_action(store: FakeObjectStore) -> None:
    errors: list[Exception] = []

    def worker(n: int) -> None:
        try:
            apply_action(store, "b1", "c1", act(ActionKind.CONFIRM, f"m{n}"), actor=f"r{n}", roles=REVIEWER)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = load_review(store, "b1", "c1")
    assert final.revision == 8 and len(final.decisions) == 8 and len(final.history) == 8


def test_confirmed_s0_fails_and_review_completion_accepts_undecided_findings() -> None:
    report = make_report([Finding(rule_id="F05", name="虚假法律后果", severity=Severity.S0, confidence=0.6)])
    assert report.verdict == "needs_review"
    rec = apply_to_record(new_record("b1", "c1"), act(ActionKind.CONFIRM, "m0"), actor="r", roles=REVIEWER)
    assert human_view(report, rec).verdict == "fail" and human_view(report, rec).score == 0.0
    # completing without a decision accepts the machine findings as found
    report2 = make_report([Finding(rule_id="R04", name="委托方", severity=Severity.S2)])
    rec2 = apply_to_record(new_record("b1", "c1"), act(ActionKind.COMPLETE), actor="r", roles=REVIEWER)
    view = human_view(report2, rec2)
    assert (view.verdict, view.score, view.human_edited) == ("pass", 95.0, False)


def test_judge_needing_review_is_resolved_by_the_reviewer() -> None:
    report = make_report([], judge_status="needs_review")
    assert report.verdict == "needs_review"
    rec = apply_to_record(new_record("b1", "c1"), act(ActionKind.COMPLETE), actor="r", roles=REVIEWER)
    assert human_view(report, rec).verdict == "pass"


def test_report_regenerated_after_review_is_flagged() -> None:
    report = make_report()
    rec = apply_to_record(new_record("b1", "c1", report), act(ActionKind.CONFIRM, "m0"), actor="r", roles=REVIEWER)
    other = report.model_copy(update={"idempotency_key": "different"})
    assert not human_view(report, rec).report_changed and human_view(other, rec).report_changed


def test_assignments(store: FakeObjectStore) -> None:
    assign_reviewer(store, "b1", "Rita", by="maria")
    assign_reviewer(store, "b2", "rita", by="maria")
    assign_reviewer(store, "b1", "tom", by="maria")
    assert reviewers_of(store, "b1").reviewers == ["rita", "tom"]
    assert assignments_of(store, "rita") == ["b1", "b2"]
    assign_reviewer(store, "b1", "rita", by="maria", remove=True)
    assert reviewers_of(store, "b1").reviewers == ["tom"]
    assert assignments_of(store, "rita") == ["b2"]
    assert [h["change"] for h in reviewers_of(store, "b1").history] == ["assign", "assign", "remove"]
    with pytest.raises(ValueError):
        assign_reviewer(store, "b1", "../etc", by="maria")


def test_reasons_and_added_evidence_are_masked() -> None:
    added = Finding(rule_id="F08", name="爆通讯录", severity=Severity.S0, evidence="打给13812345678")
    rec = apply_to_record(
        new_record("b1", "c1"),
        act(ActionKind.ADD, reason="客户号码13812345678", finding=added),
        actor="r",
        roles=REVIEWER,
    )
    assert rec.reasons["h1"] == "客户号码138****5678" and rec.history[0].reason == "客户号码138****5678"
    assert rec.added["h1"].evidence == "打给138****5678"
