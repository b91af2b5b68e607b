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

from callqc.cli_eval import eval_command
from callqc.cli_review import export_app, review_app
from callqc.client import CallQCClient, ClientAuth, LocalCall, load_calls
from callqc.rules.cli import rules_app
from callqc.settings import Settings, load_settings
from callqc.stack import LocalSecrets, LocalStack, StackError, apply_state_to_environment
from callqc.v1 import callqc_pb2 as pb
from callqc.web.cli import web as web_command
from operators.cli import ops_app

app = typer.Typer(help="callqc — QC inspection of every collection call.", no_args_is_help=True)
app.add_typer(rules_app, name="rules", help="Rule packs: validate, run over transcripts (for QC managers).")
app.add_typer(ops_app, name="ops", help="Operate the cluster: status, scale, plan, retry, drain.")
app.add_typer(review_app, name="review", help="Review reports: confirm / reject / add findings, appeal, finalise.")
app.add_typer(export_app, name="export", help="Exports for BI: findings of a batch (CSV / JSONL), daily coverage.")
app.command("web")(web_command)
app.command("eval")(eval_command)
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


def _session_token_path(settings: Settings) -> Path:
    return settings.home / "session.token"


def _client_auth(settings: Settings) -> ClientAuth:
    """TLS to the gateway with the CLI's client certificate (service identity), or — after
    `callqc login` — the person's bearer token."""
    secrets = LocalSecrets(settings.home)
    cert, key = secrets.client_pair()
    token_path = _session_token_path(settings)
    token = token_path.read_text().strip() if token_path.exists() else ""
    return ClientAuth(ca_file=secrets.ca, cert_file=cert, key_file=key, token=token)


def _client(settings: Settings) -> CallQCClient:
    return CallQCClient(_target(settings), _client_auth(settings))


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
    with _client(settings) as client:
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
    with _client(settings) as client:
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


@app.command()
def login(username: str) -> None:
    """Log in as a person (password + TOTP); later commands act as that user until `callqc logout`."""
    from callqc.security.keyfiles import write_private

    settings = _settings()
    password = typer.prompt("password", hide_input=True)
    code = typer.prompt("TOTP code")
    with _client(settings) as client:
        try:
            reply = client.login(username, password, code)
        except grpc.RpcError as err:
            _fail(f"{err.code().name}: {err.details()}")
    write_private(_session_token_path(settings), reply.token.encode())
    console.print(f"logged in as [bold]{username}[/] ({', '.join(reply.roles)}) for {reply.expires_in_seconds}s")


@app.command()
def logout() -> None:
    """Forget the person's token; the CLI acts as its service identity again."""
    _session_token_path(load_settings()).unlink(missing_ok=True)
    console.print("logged out")


users_app = typer.Typer(help="People who log in: reviewers, QC managers, auditors, operators.")
app.add_typer(users_app, name="user")


@users_app.command("add")
def user_add(
    name: str,
    role: list[str] = typer.Option(..., "--role", help="call_system | reviewer | qc_manager | operator | auditor"),
    batch: list[str] = typer.Option([], "--batch", help="batch assigned to a reviewer (repeatable)"),
) -> None:
    """Create a user (argon2 password + TOTP); prints the authenticator provisioning URI once."""
    from callqc.security.login import UserDirectory, UserExists, create_user
    from callqc.security.passwords import Passwords
    from callqc.storage import open_store

    settings = _settings()
    password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    directory = UserDirectory(open_store(settings), settings.security.login.users_prefix)
    try:
        new = create_user(
            directory, Passwords(settings.security.argon2), name, password, role, batch, settings.security.login
        )
    except (UserExists, ValueError) as err:
        _fail(str(err))
    console.print(f"user [bold]{new.name}[/] created; add to the authenticator app:\n{new.provisioning_uri}")


audit_app = typer.Typer(help="The append-only, hash-chained audit trail.")
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the whole audit chain; exit 1 naming the first broken record."""
    from callqc.security.audit import AuditLog
    from callqc.storage import open_store

    settings = _settings()
    result = AuditLog.from_settings(open_store(settings), settings.security.audit).verify()
    if result.ok:
        console.print(f"[green]audit chain intact[/]: {result.records_checked} records, last seq {result.last_seq}")
        return
    _fail(f"audit chain broken at seq {result.first_broken_seq} ({result.first_broken_key}): {result.reason}")


keys_app = typer.Typer(help="Master keys of the client-side encryption at rest.")
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def keys_rotate(retire_old: bool = typer.Option(False, help="drop the previous master key after re-wrapping")) -> None:
    """Add a new master key, make it active and re-wrap every object's data key (payloads are not re-uploaded).

    Components keep the keyring in memory: run it with the local stack down (in production: update the
    keyring Secret, run this as a job, then restart the gateway and the Serve app).
    """
    from callqc.security.envelope import EncryptedObjectStore, Keyring, generate_master_key
    from callqc.security.keyfiles import write_private
    from callqc.storage import ObjectStore

    settings = load_settings()
    stack = LocalStack(settings)
    if stack.running():
        _fail("stop the stack first (`callqc down`): running components hold the old keyring in memory")
    secrets = LocalSecrets(settings.home)
    secrets.ensure()
    path = settings.security.envelope.keyring_file or secrets.keyring
    ring = Keyring.from_json(path.read_text())
    old = ring.active_key_id
    new_id = f"k{max(int(k[1:]) for k in ring.key_ids if k[1:].isdigit()) + 1}"
    rotated = ring.with_key(new_id, generate_master_key())
    write_private(path, rotated.to_json().encode())  # both keys: readable whatever happens next
    changed = 0
    if (settings.home / "s3data").exists():  # re-wrap what is stored, through a temporary S3 server
        from callqc.s3server import LocalS3Server, S3Credentials

        creds = S3Credentials.generate()
        server = LocalS3Server(
            settings.home / "s3data", creds, tls=(secrets.pki / "s3-server.pem", secrets.pki / "server.key")
        )
        server.start()
        try:
            s3 = settings.s3.model_validate(
                {
                    **settings.s3.model_dump(),
                    "endpoint": server.endpoint,
                    "access_key": creds.access_key,
                    "secret_key": creds.secret_key,
                    "secure": True,
                    "ca_file": str(secrets.ca),
                }
            )
            store = EncryptedObjectStore(ObjectStore(s3), rotated)
            prefixes = (s3.audio_prefix, s3.jobs_prefix, s3.reports_prefix, "work/", "auth/", "audit/")
            changed = sum(store.rewrap_prefix(prefix) for prefix in prefixes)
        finally:
            server.stop()
    if retire_old:
        write_private(path, rotated.without_key(old).to_json().encode())
    console.print(
        f"active master key {old} → {new_id}; {changed} objects re-wrapped" + (f"; {old} retired" if retire_old else "")
    )


if __name__ == "__main__":
    app()
