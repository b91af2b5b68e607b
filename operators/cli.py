"""``callqc ops ...``: cluster status, scaling, capacity plan, retry of failed calls, node drain.

Ray (and the S3 client) are imported inside the commands that use them, so mounting ``ops_app`` under the
``callqc`` command keeps its start-up light. The Ray cluster is the one in ``--address``, else
``$RAY_ADDRESS``, else the local stack started by ``callqc up``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from callqc.settings import Settings

ops_app = typer.Typer(help="Operate the cluster: status, scale, plan, retry, drain.", no_args_is_help=True)
console = Console()
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVE_CONFIG = Path(os.environ.get("CALLQC_SERVE_CONFIG", REPO_ROOT / "deployments" / "serve_local.yaml"))
POOL_PREFIX = "callqc_pool_"
REPLICA_ACTOR_PREFIX = "SERVE_REPLICA::"

AddressOpt = Annotated[str, typer.Option("--address", "-a", help="Ray cluster (default: $RAY_ADDRESS / local stack)")]
AppOpt = Annotated[str, typer.Option("--app", help="Serve application name")]


# -- shared helpers --------------------------------------------------------------------------------------------
def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


def _settings() -> Settings:
    """Settings, pointed at the local stack when one runs (like the other callqc commands)."""
    from callqc.settings import load_settings
    from callqc.stack import apply_state_to_environment

    apply_state_to_environment(load_settings().home)
    return load_settings()


def _ray_address(explicit: str) -> str:
    if explicit or os.environ.get("RAY_ADDRESS"):
        return explicit or os.environ["RAY_ADDRESS"]
    from callqc.stack import LocalStack

    state = LocalStack(_settings()).load_state()
    return state.ray_address if state and state.ray_address else "auto"


def _connect(address: str) -> str:
    import ray

    resolved = _ray_address(address)
    if not ray.is_initialized():
        ray.init(address=resolved, logging_level="ERROR", log_to_driver=False)
    return resolved


def _time_zone(name: str) -> tzinfo:
    if not name:
        return datetime.now().astimezone().tzinfo or UTC
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


# -- status ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeRow:
    node_id: str
    address: str
    alive: bool
    head: bool
    draining: bool
    cpus: float
    cpus_used: float
    gpus: float
    gpus_used: float
    pools: list[str]


def node_rows(nodes: list[dict[str, Any]], available: dict[str, dict[str, float]], draining: set[str]) -> list[NodeRow]:
    """One row per Ray node from ``ray.nodes()`` and the per-node available resources (pure)."""
    rows = []
    for node in nodes:
        node_id = node["NodeID"]
        total = node.get("Resources") or {}
        free = available.get(node_id, total if node.get("Alive") else {})
        rows.append(
            NodeRow(
                node_id=node_id,
                address=node.get("NodeManagerAddress", ""),
                alive=bool(node.get("Alive")),
                head="node:__internal_head__" in total,
                draining=node_id in draining,
                cpus=total.get("CPU", 0.0),
                cpus_used=total.get("CPU", 0.0) - free.get("CPU", 0.0),
                gpus=total.get("GPU", 0.0),
                gpus_used=total.get("GPU", 0.0) - free.get("GPU", 0.0),
                pools=sorted(k.removeprefix(POOL_PREFIX) for k in total if k.startswith(POOL_PREFIX)),
            )
        )
    return sorted(rows, key=lambda r: (not r.head, not r.alive, r.address))


def _ray_nodes() -> list[NodeRow]:
    import ray

    nodes = ray.nodes()
    try:  # per-node free resources and draining nodes come from the GCS (Ray developer API)
        from ray._private import state

        available = state.available_resources_per_node()
        draining = set(state.state.get_draining_nodes())
    except Exception:
        available, draining = {}, set()
    return node_rows(nodes, available, draining)


def _work(tz: tzinfo) -> dict[str, Any]:
    from callqc.jobs import job_store_from_settings
    from callqc.operations import daily_coverage, queue_depth

    jobs = job_store_from_settings(_settings())
    today = datetime.now(tz).date()
    depth = queue_depth(jobs)
    cov = daily_coverage(jobs, today, tz)
    return {
        "open_batches": depth.open_batches,
        "queued_calls": depth.queued_calls,
        "running_calls": depth.running_calls,
        "calls_per_minute": round(cov.calls_per_minute, 2),
        "day": today.isoformat(),
        "received": cov.received,
        "inspected": cov.inspected,
        "coverage": None if cov.ratio is None else round(cov.ratio, 4),
    }


@ops_app.command()
def status(
    address: AddressOpt = "",
    app: AppOpt = "callqc",
    tz: Annotated[str, typer.Option(help="bank time zone for 'today', e.g. Asia/Shanghai (default: local)")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    with_ray: Annotated[bool, typer.Option("--ray/--no-ray", help="ask the Ray cluster")] = True,
    with_s3: Annotated[bool, typer.Option("--s3/--no-s3", help="read queue and coverage from S3")] = True,
) -> None:
    """Nodes and GPUs, replicas per deployment, queue depth, calls/min and today's coverage."""
    report: dict[str, Any] = {}
    if with_ray:
        try:
            from operators.serve_status import application_status

            _connect(address)
            report["nodes"] = [asdict(row) for row in _ray_nodes()]
            report["serve"] = application_status(app)
        except Exception as err:  # the S3 side is still worth showing when Ray is down
            report["ray_error"] = f"{type(err).__name__}: {err}"
    if with_s3:
        try:
            report["work"] = _work(_time_zone(tz))
        except Exception as err:
            report["s3_error"] = f"{type(err).__name__}: {err}"
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_status(report)
    if "ray_error" in report or "s3_error" in report:
        raise typer.Exit(1)


def _print_status(report: dict[str, Any]) -> None:
    if "nodes" in report:
        table = Table(title="nodes", caption="GPU/CPU 'used' = reserved by Ray tasks and replicas")
        for column in ("node", "address", "state", "CPU used/total", "GPU used/total", "pools"):
            table.add_column(column)
        for n in report["nodes"]:
            state = "dead" if not n["alive"] else ("draining" if n["draining"] else "alive")
            table.add_row(
                n["node_id"][:12] + (" (head)" if n["head"] else ""),
                n["address"],
                state,
                f"{n['cpus_used']:g}/{n['cpus']:g}",
                f"{n['gpus_used']:g}/{n['gpus']:g}",
                ",".join(n["pools"]) or "-",
            )
        console.print(table)
    serve = report.get("serve")
    if serve:
        table = Table(title=f"application {serve['app']}: {serve['status']}")
        for column in ("deployment", "status", "replicas"):
            table.add_column(column)
        for name, dep in serve["deployments"].items():
            replicas = " ".join(f"{state}={count}" for state, count in sorted(dep["replicas"].items()))
            table.add_row(name, dep["status"], replicas or "-")
        console.print(table)
    work = report.get("work")
    if work:
        coverage = "-" if work["coverage"] is None else f"{work['coverage']:.1%}"
        console.print(
            f"queue: {work['open_batches']} open batches, {work['queued_calls']} calls queued, "
            f"{work['running_calls']} running · {work['calls_per_minute']:g} calls/min · "
            f"coverage {work['day']}: {work['inspected']}/{work['received']} = {coverage}"
        )
    for key in ("ray_error", "s3_error"):
        if key in report:
            console.print(f"[bold red]{key.replace('_', ' ')}:[/] {report[key]}")


# -- scale -----------------------------------------------------------------------------------------------------
def scaled_config(
    config: dict[str, Any], app: str, deployment: str, min_replicas: int, max_replicas: int
) -> dict[str, Any]:
    """A copy of ``config`` with the deployment's autoscaling bounds set (pure; other fields untouched)."""
    import copy

    result = copy.deepcopy(config)
    for application in result.get("applications") or []:
        if application.get("name") != app:
            continue
        for dep in application.get("deployments") or []:
            if dep.get("name") == deployment:
                dep.pop("num_replicas", None)
                autoscaling = dict(dep.get("autoscaling_config") or {})
                autoscaling.update(min_replicas=min_replicas, max_replicas=max_replicas)
                if "initial_replicas" in autoscaling:
                    autoscaling["initial_replicas"] = min(
                        max(autoscaling["initial_replicas"], min_replicas), max_replicas
                    )
                dep["autoscaling_config"] = autoscaling
                return result
        raise KeyError(f"deployment {deployment!r} is not in application {app!r} of the config")
    raise KeyError(f"application {app!r} is not in the config")


@ops_app.command()
def scale(
    deployment: Annotated[str, typer.Argument(help="deployment name, e.g. ASR")],
    min_replicas: Annotated[int, typer.Option("--min", help="autoscaling min_replicas")],
    max_replicas: Annotated[int, typer.Option("--max", help="autoscaling max_replicas")],
    config: Annotated[Path, typer.Option(help="the Serve config the app runs with")] = DEFAULT_SERVE_CONFIG,
    app: AppOpt = "callqc",
    address: AddressOpt = "",
    out: Annotated[Path | None, typer.Option(help="also write the changed config here (to keep the change)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and print the change, deploy nothing")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the app to be RUNNING again")] = 300,
) -> None:
    """Change a deployment's autoscaling min/max in the running app (re-deploys the Serve config)."""
    # The supported path: `serve run --non-blocking CONFIG` is Serve's declarative deploy (deploy_apps), as used by
    # `serve deploy` and KubeRay, so the whole config stays in force and an autoscaling change is a lightweight
    # update (no replica restart). `serve deploy` needs the dashboard (off in the local stack); `serve.run(app)`
    # would redeploy from code and drop the YAML's settings. On KubeRay, change the Helm values instead: the
    # RayService re-applies its serveConfigV2 and would undo a change made here.
    from operators.validate_config import ConfigError, load_config, validate_config

    try:
        changed = scaled_config(load_config(config), app, deployment, min_replicas, max_replicas)
        validate_config(changed, f"{config} with {deployment} min={min_replicas} max={max_replicas}")
    except (KeyError, ConfigError) as err:
        _fail(str(err).strip("'\""))
    text = yaml.safe_dump(changed, sort_keys=False)
    if out:
        out.write_text(f"# {config} with {deployment} scaled to min {min_replicas} / max {max_replicas}\n{text}")
    if dry_run:
        console.print(f"{deployment}: autoscaling min {min_replicas} max {max_replicas} (dry run, nothing deployed)")
        return
    resolved = _ray_address(address)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="callqc-serve-") as handle:
        handle.write(text)
        handle.flush()
        serve_bin = Path(sys.executable).with_name("serve")
        serve_bin = serve_bin if serve_bin.exists() else Path(shutil.which("serve") or "serve")
        argv = [str(serve_bin), "run", "--non-blocking", "-a", resolved, handle.name]
        result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        _fail(f"serve run failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")
    waited = _wait_running(resolved, app, timeout)
    console.print(f"[green]{deployment}[/]: autoscaling min {min_replicas} max {max_replicas} — app {waited}")


def _wait_running(address: str, app: str, timeout: float) -> str:
    from operators.serve_status import application_status

    _connect(address)
    deadline = time.monotonic() + timeout
    while True:
        info = application_status(app)
        if info["status"] in ("RUNNING", "DEPLOY_FAILED", "UNHEALTHY") or time.monotonic() > deadline:
            return str(info["status"])
        time.sleep(1.0)


# -- plan ------------------------------------------------------------------------------------------------------
@ops_app.command()
def plan(
    calls_per_day: Annotated[int, typer.Option("--calls-per-day", help="calls received on an average day")],
    avg_minutes: Annotated[float, typer.Option("--avg-minutes", help="average call length in minutes")],
    peak_factor: Annotated[float, typer.Option("--peak-factor", help="peak day / average day")] = 1.0,
    hours: Annotated[float, typer.Option("--hours", help="hours allowed to inspect one day's calls")] = 24.0,
    utilization: Annotated[float, typer.Option("--utilization", help="target load of each replica")] = 0.7,
    channels: Annotated[int, typer.Option("--channels", help="audio channels per call")] = 2,
    profile: Annotated[str, typer.Option("--profile", help="hardware profile in the figures file")] = "gpu",
    figures: Annotated[Path | None, typer.Option(help="stage figures YAML (default operators/capacity.yaml)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Replicas, CPUs and GPUs per stage for a call volume, from measured stage throughputs."""
    from pydantic import ValidationError

    from operators.capacity import DEFAULT_FIGURES, Workload, load_profiles, plan_capacity

    profiles = load_profiles(figures or DEFAULT_FIGURES)
    if profile not in profiles:
        _fail(f"no profile {profile!r}; the figures file has: {', '.join(profiles)}")
    try:
        workload = Workload(
            calls_per_day=calls_per_day,
            avg_minutes=avg_minutes,
            peak_factor=peak_factor,
            processing_hours=hours,
            target_utilization=utilization,
            channels_per_call=channels,
        )
    except ValidationError as err:
        _fail("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in err.errors()))
    chosen = profiles[profile]
    result = plan_capacity(workload, chosen)
    if as_json:
        body = {
            "workload": workload.model_dump(),
            "hardware": result.hardware,
            "stages": [asdict(s) for s in result.stages],
        }
        body.update(gpus=result.gpus, cpus=result.cpus, nodes=result.nodes(chosen))
        body.update(call_seconds=round(result.call_seconds, 3), max_in_flight=result.in_flight_needed)
        print(json.dumps(body, indent=2))
        return
    table = Table(title=f"capacity plan — profile {profile}: {chosen.hardware}")
    for column in ("stage", "demand/min at peak", "replicas", "CPUs", "GPUs", "load", "figure from"):
        table.add_column(column)
    for s in result.stages:
        unit = s.unit.replace("_", " ")
        table.add_row(
            s.stage,
            f"{s.demand_per_minute:,.1f} {unit}",
            str(s.replicas),
            f"{s.cpus:g}",
            f"{s.gpus:g}",
            f"{s.utilization:.0%}",
            s.source.split(":")[0].split()[0] if s.source else "-",
        )
    console.print(table)
    console.print(
        f"{result.audio_minutes_per_day:,.0f} audio minutes on a peak day within {hours:g} h → "
        f"[bold]{result.gpus:g} GPUs, {result.cpus:g} CPUs, {result.nodes(chosen)} node(s)[/] of this profile. "
        "Set each stage's autoscaling max_replicas to at least its replicas here."
    )
    console.print(
        f"One call takes ≈ {result.call_seconds:,.1f} s through the stages: set dispatcher.max_in_flight to at "
        f"least [bold]{result.in_flight_needed}[/] (calls in flight = calls/s x seconds per call, at the target load)."
    )
    estimated = [s.stage for s in result.stages if s.source.startswith("estimate")]
    if estimated:
        console.print(f"[yellow]not measured on this hardware:[/] {', '.join(estimated)} — benchmark before buying.")


# -- retry -----------------------------------------------------------------------------------------------------
@ops_app.command()
def retry(
    failed: Annotated[str, typer.Option("--failed", help="batch id whose FAILED calls are re-queued")],
    include_all: Annotated[bool, typer.Option("--all", help="also input failures (AUDIO_*, ...)")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be re-queued")] = False,
) -> None:
    """Re-queue a finished batch's PROCESSING_FAILED calls (with --all: every failed call) and re-open it."""
    from callqc.jobs import job_store_from_settings
    from callqc.operations import BatchNotFound, BatchStillOpen, retry_failed

    try:
        result = retry_failed(job_store_from_settings(_settings()), failed, include_all=include_all, dry_run=dry_run)
    except (BatchNotFound, BatchStillOpen) as err:
        _fail(str(err))
    verb = "would re-queue" if dry_run else "re-queued"
    console.print(f"batch {failed}: {verb} {len(result.requeued)} call(s): {', '.join(result.requeued) or '-'}")
    for call_id, why in result.skipped.items():
        console.print(f"  [dim]kept failed[/] {call_id}: {why}")


# -- drain -----------------------------------------------------------------------------------------------------
def find_node(nodes: list[NodeRow], query: str) -> NodeRow:
    """The alive node whose id starts with ``query`` or whose address equals it (pure)."""
    matches = [n for n in nodes if n.alive and (n.node_id.startswith(query) or n.address == query)]
    if len(matches) != 1:
        known = ", ".join(f"{n.node_id[:12]} ({n.address})" for n in nodes if n.alive)
        raise LookupError(f"{len(matches)} alive nodes match {query!r}; alive: {known}")
    return matches[0]


def _replicas_on(node_id: str) -> int:
    from ray._private import state

    actors = state.actors(actor_state_name="ALIVE").values()
    return sum(1 for a in actors if a["Name"].startswith(REPLICA_ACTOR_PREFIX) and a["Address"]["NodeID"] == node_id)


@ops_app.command()
def drain(
    node: Annotated[str, typer.Argument(help="node id (or its prefix) or IP address, see `callqc ops status`")],
    deadline: Annotated[int, typer.Option(help="seconds until the node will be stopped")] = 600,
    address: AddressOpt = "",
    wait: Annotated[bool, typer.Option(help="wait until no Serve replica runs on the node")] = True,
) -> None:
    """Stop scheduling on a node and move its Serve replicas elsewhere, before it is switched off."""
    resolved = _connect(address)
    try:
        target = find_node(_ray_nodes(), node)
    except LookupError as err:
        _fail(str(err))
    if target.head:
        _fail("that is the head node (GCS, Serve controller): it cannot be drained, only replaced by a restart")
    ray_bin = Path(sys.executable).with_name("ray")
    argv = [
        str(ray_bin),
        "drain-node",
        "--address",
        resolved,
        "--node-id",
        target.node_id,
        "--reason",
        "DRAIN_NODE_REASON_PREEMPTION",
        "--reason-message",
        f"callqc ops drain by {os.environ.get('USER', '?')}",
        "--deadline-remaining-seconds",
        str(deadline),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        _fail(f"ray drain-node refused (exit {result.returncode}): {(result.stdout + result.stderr)[-2000:]}")
    console.print(f"node {target.node_id[:12]} ({target.address}) is draining; Serve starts replacements elsewhere")
    if not wait:
        return
    stop_at = time.monotonic() + deadline
    while (left := _replicas_on(target.node_id)) and time.monotonic() < stop_at:
        console.print(f"  {left} replica(s) still on the node…")
        time.sleep(5)
    if left:
        _fail(f"{left} replica(s) still on the node after {deadline}s; check `callqc ops status`")
    console.print("[green]no Serve replica left on the node[/]: stop Ray there (`ray stop`) or remove the VM / pod")


if __name__ == "__main__":
    ops_app()
