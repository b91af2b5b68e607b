"""``callqc review …`` (the review workflow from a terminal) and ``callqc export …`` (BI exports, coverage).

Both talk to the gateway's Review service with the CLI's credentials (``callqc login`` for a person).
Actions that change a review read the current revision first unless ``--revision`` is given, so a
change made by someone else in between is refused (ABORTED) rather than overwritten.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from google.protobuf import json_format

if TYPE_CHECKING:
    from callqc.client import CallQCClient
    from callqc.v1 import review_pb2 as rpb

T = TypeVar("T")
review_app = typer.Typer(help="Review reports: show, confirm / reject / add findings, appeal, finalise.")
export_app = typer.Typer(help="Exports for BI: findings of a batch (CSV / JSONL), daily coverage.")

BatchOpt = typer.Option("", "--batch", "-b", help="batch id (default: the latest batch that inspected the call)")
RevisionOpt = typer.Option(-1, "--revision", help="the revision you saw (default: read the current one)")
JsonOpt = typer.Option(False, "--json", help="print JSON instead of a table")


def _connect() -> CallQCClient:
    from callqc.cli import _client, _settings

    return _client(_settings())


def _run(fn: Callable[[CallQCClient], T]) -> T:
    """Call ``fn(client)`` and turn gRPC errors into a one-line message and exit code 1."""
    import grpc

    from callqc.cli import _fail

    try:
        with _connect() as client:
            return fn(client)
    except grpc.RpcError as err:
        _fail(f"{err.code().name}: {err.details()}")
        raise  # unreachable: _fail exits


def _print_item(item: rpb.ReviewItem, as_json: bool) -> None:
    from rich.table import Table

    from callqc.cli import SEVERITY_STYLE, console

    if as_json:
        print(
            json_format.MessageToJson(
                item, preserving_proto_field_name=True, ensure_ascii=False, always_print_fields_with_no_presence=True
            )
        )
        return
    state = item.DESCRIPTOR.fields_by_name["state"].enum_type.values_by_number[item.state].name
    machine = f"{item.machine_score:g}" if item.HasField("machine_score") else "-"
    console.print(
        f"[bold]{item.report.call_id}[/] in {item.report.batch_id} — {state.removeprefix('REVIEW_STATE_').lower()}, "
        f"revision {item.revision}; machine {machine} {item.machine_verdict} → "
        f"[bold]{item.score:g} {item.verdict}[/]{' (human-edited)' if item.human_edited else ''}"
    )
    table = Table("id", "origin", "decision", "rule", "sev", "span", "evidence", "reason")
    for f in item.findings:
        decision = f.DESCRIPTOR.fields_by_name["decision"].enum_type.values_by_number[f.decision].name
        sev = f.finding.severity
        table.add_row(
            f.id,
            f.origin,
            decision.removeprefix("FINDING_DECISION_").lower(),
            f"{f.finding.rule_id} {f.finding.name}",
            f"[{SEVERITY_STYLE.get(sev, '')}]{sev}[/]",
            f"{f.finding.start:.1f}-{f.finding.end:.1f}s",
            f.finding.evidence[:60],
            f.reason[:60],
        )
    console.print(table)
    for reason in item.reasons:
        console.print(f"  [dim]•[/] {reason}")


def _revision(client: CallQCClient, call_id: str, batch: str, revision: int) -> tuple[str, int]:
    if revision >= 0 and batch:
        return batch, revision
    item = client.get_review_item(call_id, batch)
    return item.report.batch_id, (revision if revision >= 0 else item.revision)


@review_app.command("show")
def show(call_id: str, batch: str = BatchOpt, as_json: bool = JsonOpt) -> None:
    """The report with its review: machine and human findings side by side, both scores, state."""
    _print_item(_run(lambda c: c.get_review_item(call_id, batch)), as_json)


def _submit(call_id: str, batch: str, revision: int, kind: str, **kw: Any) -> None:
    def act(client: CallQCClient) -> rpb.ReviewItem:
        batch_id, rev = _revision(client, call_id, batch, revision)
        return client.submit_review(call_id, batch_id, kind, expected_revision=rev, **kw)

    _print_item(_run(act), False)


@review_app.command("confirm")
def confirm(call_id: str, finding_id: str, batch: str = BatchOpt, revision: int = RevisionOpt) -> None:
    """Confirm a finding (m0, m1… machine; h1… added)."""
    _submit(call_id, batch, revision, "confirm", finding_id=finding_id)


@review_app.command("reject")
def reject(
    call_id: str,
    finding_id: str,
    reason: str = typer.Option(..., "--reason", "-r"),
    batch: str = BatchOpt,
    revision: int = RevisionOpt,
) -> None:
    """Reject a finding, with a reason."""
    _submit(call_id, batch, revision, "reject", finding_id=finding_id, reason=reason)


@review_app.command("add")
def add(
    call_id: str,
    rule_id: str = typer.Option(..., "--rule"),
    name: str = typer.Option(..., "--name"),
    severity: str = typer.Option(..., "--severity", help="S0 | S1 | S2"),
    start: float = typer.Option(0.0, "--start"),
    end: float = typer.Option(0.0, "--end"),
    evidence: str = typer.Option("", "--evidence"),
    reason: str = typer.Option(..., "--reason", "-r"),
    batch: str = BatchOpt,
    revision: int = RevisionOpt,
) -> None:
    """Add a finding the machine missed, with a reason."""
    from callqc.v1 import callqc_pb2 as pb

    finding = pb.Finding(
        rule_id=rule_id, name=name, severity=severity, start=start, end=end, evidence=evidence, source="human"
    )
    _submit(call_id, batch, revision, "add", reason=reason, finding=finding)


@review_app.command("complete")
def complete(call_id: str, batch: str = BatchOpt, revision: int = RevisionOpt) -> None:
    """Mark the review done (draft / appealed → reviewed); undecided findings are accepted as found."""
    _submit(call_id, batch, revision, "complete")


@review_app.command("appeal")
def appeal(
    call_id: str, reason: str = typer.Option(..., "--reason", "-r"), batch: str = BatchOpt, revision: int = RevisionOpt
) -> None:
    """Reopen a reviewed call on appeal (QC managers)."""

    def act(client: CallQCClient) -> rpb.ReviewItem:
        batch_id, rev = _revision(client, call_id, batch, revision)
        return client.appeal_review(call_id, batch_id, expected_revision=rev, reason=reason)

    _print_item(_run(act), False)


@review_app.command("finalize")
def finalize(
    call_id: str, reason: str = typer.Option(..., "--reason", "-r"), batch: str = BatchOpt, revision: int = RevisionOpt
) -> None:
    """Close the review for good (QC managers)."""

    def act(client: CallQCClient) -> rpb.ReviewItem:
        batch_id, rev = _revision(client, call_id, batch, revision)
        return client.finalize_review(call_id, batch_id, expected_revision=rev, reason=reason)

    _print_item(_run(act), False)


@review_app.command("assign")
def assign(batch_id: str, reviewer: str, remove: bool = typer.Option(False, "--remove")) -> None:
    """Assign a reviewer to a batch, or --remove them (QC managers)."""
    from callqc.cli import console

    reply = _run(lambda c: c.assign_reviewer(batch_id, reviewer, remove))
    console.print(f"{reply.batch_id}: reviewers {', '.join(reply.reviewers) or '(none)'}")


@review_app.command("assignments")
def assignments(reviewer: str = typer.Option("", "--reviewer", help="default: yourself")) -> None:
    """Batches assigned to a reviewer."""
    reply = _run(lambda c: c.list_assignments(reviewer))
    print("\n".join(reply.batch_ids))


@review_app.command("raw")
def raw(call_id: str, batch: str = BatchOpt) -> None:
    """The unredacted transcript (QC managers; audited). Printed as JSON."""
    reply = _run(lambda c: c.get_raw_transcript(call_id, batch))
    print(
        json_format.MessageToJson(
            reply, preserving_proto_field_name=True, ensure_ascii=False, always_print_fields_with_no_presence=True
        )
    )


@export_app.command("findings")
def findings(
    batch_id: str,
    fmt: str = typer.Option("csv", "--format", "-f", help="csv | jsonl"),
    out: Path | None = typer.Option(None, "--out", "-o", help="file to write (default: stdout)"),
    machine_only: bool = typer.Option(False, "--machine-only", help="without review decisions"),
) -> None:
    """Findings of a batch for BI (masked evidence; one row per finding, calls without findings too)."""
    from callqc.cli import _fail, console

    if fmt not in ("csv", "jsonl"):
        _fail("--format must be csv or jsonl")
    data = _run(lambda c: c.export_findings(batch_id, fmt, machine_only))
    if out is None:
        sys.stdout.buffer.write(data)
        return
    out.write_bytes(data)
    console.print(f"wrote {out} ({len(data)} bytes)")


@export_app.command("coverage")
def coverage(
    day: str = typer.Option("", "--day", help="YYYY-MM-DD (default: today)"),
    utc_offset: str = typer.Option("+08:00", "--utc-offset", help="the bank's time zone"),
    as_json: bool = JsonOpt,
) -> None:
    """Calls received vs inspected on one day."""
    from callqc.cli import console

    cov = _run(lambda c: c.get_coverage(day, utc_offset))
    if as_json:
        print(
            json.dumps(
                json_format.MessageToDict(
                    cov, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )
            )
        )
        return
    console.print(
        f"{cov.day} ({cov.utc_offset}): received {cov.received}, inspected {cov.inspected}, "
        f"not inspected {cov.not_inspected} (rejected at intake {cov.rejected_at_intake}) — "
        f"[bold]coverage {cov.coverage:.2%}[/] over {cov.batches} batches"
    )
