"""The ``callqc`` command: run the local stack, submit calls, read reports."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import grpc
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from callqc.client import CallQCClient, LocalCall, load_calls
from callqc.rules.cli import rules_app
from callqc.settings import Settings, load_settings
from callqc.stack import LocalStack, StackError, apply_state_to_environment
from callqc.v1 import callqc_pb2 as pb

app = typer.Typer(help="callqc — QC inspection of every collection call.", no_args_is_help=True)
app.add_typer(rules_app, name="rules", help="Rule packs: validate, run over transcripts (for QC managers).")
console = Console()
REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_BATCH = REPO_ROOT / "samples" / "batch.yaml"
STATE_NAMES = {v: k.removeprefix("CALL_STATE_").lower() for k, v in pb.CallState.items()}
ERROR_NAMES = {v: k.removeprefix("CALL_ERROR_") for k, v in pb.CallError.items()}
SEVERITY_STYLE = {"S0": "bold red", "S1": "yellow", "S2": "cyan"}


def _settings() -> Settings:
    settings = load_settings()
    apply_state_to_environment(settings.home)
    return load_settings()


def _target(settings: Settings) -> str:
    return f"{settings.gateway.host}:{settings.gateway.port}"


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


@app.command()
def up() -> None:
    """Start the local stack: S3 server (rclone), Ray head, the Serve app, the gRPC gateway."""
    settings = load_settings()
    stack = LocalStack(settings, log=lambda msg: console.print(f"  [dim]•[/] {msg}"))
    started = time.perf_counter()
    try:
        with console.status("bringing the stack up…"):
            state = stack.up()
    except StackError as err:
        _fail(str(err))
    console.print(
        f"[green]up[/] in {time.perf_counter() - started:.1f}s — gateway 127.0.0.1:{state.gateway_port}, "
        f"S3 {state.s3_endpoint}, Ray {state.ray_address}; logs in {stack.logs}"
    )


@app.command()
def down() -> None:
    """Stop everything `callqc up` started."""
    LocalStack(load_settings()).down()
    console.print("[green]down[/]")


def _watch_with_progress(client: CallQCClient, batch_id: str, total: int, timeout: float) -> None:
    columns = (
        TextColumn("[bold]inspecting[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("calls", total=total, detail="")
        for event in client.watch(batch_id, timeout=timeout):
            counts = event.counts
            progress.update(
                task,
                completed=counts.done + counts.failed,
                detail=f"running {counts.running} · done {counts.done} · failed {counts.failed}",
            )
            if event.complete:
                break


def _summary(client: CallQCClient, batch_id: str, out_dir: Path | None) -> Table:
    batch = client.get_batch(batch_id)
    table = Table(title=f"batch {batch_id}", show_lines=False)
    for column in ("call", "state", "verdict", "findings", "audio s", "error"):
        table.add_column(column)
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    for status in batch.calls:
        state = STATE_NAMES[status.state]
        verdict, findings, duration = "", "", ""
        if status.state == pb.CALL_STATE_DONE:
            reply = client.get_report(status.call_id, batch_id)
            report = reply.report
            verdict = report.verdict
            findings = (
                " ".join(
                    f"[{SEVERITY_STYLE.get(f.severity, '')}]{f.rule_id}@{f.start:.1f}s[/]" for f in report.findings
                )
                or "—"
            )
            duration = f"{report.duration:.1f}"
            if out_dir:
                (out_dir / f"{status.call_id}.json").write_text(
                    json.dumps(json.loads(reply.report_json), ensure_ascii=False, indent=2)
                )
        error = f"{ERROR_NAMES[status.error]}: {status.error_message}" if status.error else ""
        style = {"done": "green", "failed": "red"}.get(state, "")
        verdict_style = {"pass": "green", "fail": "bold red", "needs_review": "yellow"}.get(verdict, "")
        table.add_row(
            status.call_id, f"[{style}]{state}[/]", f"[{verdict_style}]{verdict}[/]", findings, duration, error
        )
    counts = batch.counts
    table.caption = f"{counts.total} calls · {counts.done} inspected · {counts.failed} failed"
    return table


def _submit(
    calls: list[LocalCall], request_id: str, settings: Settings, wait: bool, timeout: float, out_dir: Path | None
) -> str:
    with CallQCClient(_target(settings)) as client:
        with console.status(f"uploading {len(calls)} calls…"):
            reply = client.upload_and_submit(request_id, calls)
        note = "new batch" if reply.created else "already submitted: same batch, no new work"
        console.print(
            f"batch [bold]{reply.batch_id}[/] ({note}); {reply.counts.total} calls, "
            f"{len(reply.rejected)} rejected at intake"
        )
        if wait:
            _watch_with_progress(client, reply.batch_id, reply.counts.total, timeout)
            console.print(_summary(client, reply.batch_id, out_dir))
        return reply.batch_id


@app.command()
def submit(
    path: Path = typer.Argument(..., exists=True, help="a folder of audio files or a batch YAML"),
    request_id: str = typer.Option("", help="idempotency key; default: a new one"),
    language: str = typer.Option("zh", help="language of calls in a folder"),
    wait: bool = typer.Option(True, help="watch until every call is done, then summarise"),
    timeout: float = typer.Option(1800, help="seconds to wait"),
    out: Path | None = typer.Option(None, help="write each report JSON here"),
) -> None:
    """Upload calls and submit them as one batch over gRPC; show progress and a summary."""
    settings = _settings()
    try:
        _submit(load_calls(path, language), request_id or f"cli-{uuid.uuid4()}", settings, wait, timeout, out)
    except grpc.RpcError as err:
        _fail(f"{err.code().name}: {err.details()}")


@app.command()
def report(
    call_id: str, batch_id: str = typer.Option("", "--batch"), as_json: bool = typer.Option(False, "--json")
) -> None:
    """Show one call's report: transcript by role, findings with their audio spans."""
    settings = _settings()
    with CallQCClient(_target(settings)) as client:
        try:
            reply = client.get_report(call_id, batch_id)
        except grpc.RpcError as err:
            _fail(f"{err.code().name}: {err.details()}")
    if as_json:
        console.print_json(reply.report_json)
        return
    rep = reply.report
    console.print(
        f"[bold]{rep.call_id}[/] · batch {rep.batch_id} · {rep.language} · {rep.duration:.1f}s · "
        f"verdict [bold]{rep.verdict}[/]"
    )
    console.print(f"[dim]asr {rep.versions.asr_model} · rules {rep.versions.rule_pack} · {rep.versions.pipeline}[/]")
    flagged = {sid for f in rep.findings for sid in f.segment_ids}
    for seg in rep.transcript:
        marker = "[red]▶[/]" if seg.id in flagged else " "
        console.print(f"{marker} [dim]{seg.start:6.2f}–{seg.end:6.2f}[/] [bold]{seg.role:8s}[/] {seg.text}")
    table = Table(title="findings")
    for column in ("rule", "severity", "span", "evidence", "segments"):
        table.add_column(column)
    for f in rep.findings:
        table.add_row(
            f"{f.rule_id} {f.name}",
            f"[{SEVERITY_STYLE.get(f.severity, '')}]{f.severity}[/]",
            f"{f.start:.2f}–{f.end:.2f}s",
            f.evidence,
            ",".join(f.segment_ids),
        )
    console.print(table)


@app.command()
def demo(
    keep: bool = typer.Option(False, help="leave the stack running afterwards"),
    out: Path = typer.Option(Path("demo-reports"), help="where the reports are written"),
) -> None:
    """The whole product on this machine: stack up → sample batch over gRPC → reports → summary."""
    started = time.perf_counter()
    settings = load_settings()
    stack = LocalStack(settings, log=lambda msg: console.print(f"  [dim]•[/] {msg}"))
    we_started = False
    if not stack.running():
        try:
            with console.status("bringing the stack up…"):
                stack.up()
        except StackError as err:
            _fail(str(err))
        we_started = True
    try:
        settings = _settings()
        calls = load_calls(SAMPLE_BATCH)
        _submit(calls, f"demo-{uuid.uuid4()}", settings, True, 1800, out)
    finally:
        if we_started and not keep:
            stack.down()
    console.print(f"reports in [bold]{out}/[/] · demo wall time {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    app()
