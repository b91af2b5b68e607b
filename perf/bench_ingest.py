"""Ingest benchmark: SubmitBatch calls/s and latency against a real gateway on a real S3 server.

    .venv/bin/python perf/bench_ingest.py [--seconds 6] [--threads 16] [--batch 100] [--profile] [--out perf/results]

Starts ``rclone serve s3`` (files on disk), then the product's gateway (``start_server`` on its own event loop,
as in tests/integration/conftest.py) in a child process, with the product's defaults: durable manifests,
client-side encryption at rest, audit trail, per-call trace; ``tls_mode=local`` + a bearer token. Pre-uploads a
few audio objects and has ``--threads`` client threads submit batches of ``--batch`` calls referencing them for
``--seconds`` per scenario. Scenarios (each a fresh gateway process on the same S3 server):

* ``gateway``                 the product as shipped, batches of ``--batch`` whose calls reference content-addressed
                              uploads (``audio/uploads/<sha256>``, as ``UploadAudio`` stores them): the gateway
                              knows their sizes after the first check and sends no HEAD for them
* ``gateway_direct_keys``     the same, but every call of a batch references its own key under a call system's
                              own path (written straight to S3, mutable): one S3 HEAD per call
* ``gateway_batch1``          the same as ``gateway``, one call per batch
* ``baseline_s3``             no gateway: the same threads write the same encrypted manifest + open marker
                              straight to S3 (the floor a durable ack costs); figures are ratios against it
* ``no_audio_check`` / ``no_audit`` / ``no_trace`` / ``no_encryption`` / ``all_off``   ablations of the
                              gateway: what each piece of the product costs (where the time goes);
                              ``no_audit_batch1``: the audit trail's cost when every batch is one call

``--profile`` also runs the default gateway under cProfile and writes the top functions to
``ingest_profile.txt``. Writes ``ingest.json`` and ``ingest.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import io
import json
import math
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_CALLS_PER_SECOND = 2000.0
ABLATIONS = ("no_audio_check", "no_audit", "no_audit_batch1", "no_trace", "no_encryption", "all_off")


# ---- the gateway child process ---------------------------------------------------------------------------------
def _settings(config: dict[str, Any], variant: str) -> Any:
    from callqc.settings import load_settings

    off = variant == "all_off"
    security: dict[str, Any] = {
        "tokens": {"signing_key_file": config["signing_key"]},
        "audit": {"hmac_key_file": config["audit_key"]},
    }
    plain = variant == "no_encryption" or off
    if plain:
        security["require_encryption_at_rest"] = False
    else:
        security["envelope"] = {"keyring_file": config["keyring"]}
    return load_settings(
        home=Path(config["home"]),
        s3={
            "endpoint": config["endpoint"],
            "access_key": config["access_key"],
            "secret_key": config["secret_key"],
            "bucket": config["bucket"] + ("-plain" if plain else ""),  # never mix ciphertext and plaintext
        },
        gateway={"tls_mode": "local", "port": 0},
        security=security,
    )


def _apply_variant(variant: str) -> None:
    """Switch one piece of the product off (ablation) by patching it in this process."""
    from callqc import telemetry
    from callqc.gateway.security import GatewaySecurity
    from callqc.gateway.servicer import CallQCServicer

    off = variant == "all_off"
    if variant == "no_audio_check" or off:

        async def no_audio_problems(self: Any, specs: Any) -> list:
            return []

        CallQCServicer._audio_problems = no_audio_problems  # type: ignore[method-assign]
    if variant == "no_audit" or off:

        async def no_record(self: Any, *args: Any, **kwargs: Any) -> None:
            return None

        GatewaySecurity.record = no_record  # type: ignore[method-assign]
    if variant == "no_trace" or off:
        telemetry.start_call_trace = lambda call_id, batch_id: {}  # type: ignore[assignment]


def serve(config_path: Path, variant: str, profile_out: Path | None) -> None:
    """Child process: run the gateway until stdin closes; print its port first."""
    from callqc import telemetry
    from callqc.gateway.server import start_server

    config = json.loads(config_path.read_text())
    settings = _settings(config, variant)
    _apply_variant(variant)
    telemetry.configure("callqc-gateway", settings.telemetry, 0)  # as serve_forever does
    profiler = cProfile.Profile() if profile_out else None

    async def main() -> None:
        server, port = await start_server(settings)
        print(f"PORT {port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.stop(grace=None)

    if profiler:
        profiler.enable()
    try:
        asyncio.run(main())
    finally:
        if profiler and profile_out:
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
            profile_out.write_text(out.getvalue())


@contextlib.contextmanager
def gateway_process(config_path: Path, variant: str, profile_out: Path | None = None):
    """A gateway child process; yields its target address."""
    argv = [sys.executable, __file__, "--serve", str(config_path), "--variant", variant]
    if profile_out:
        argv += ["--profile-out", str(profile_out)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"gateway child did not start: {line!r}")
        yield f"127.0.0.1:{int(line.split()[1])}"
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- load ------------------------------------------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    batch_size: int
    threads: int
    seconds: float
    calls: int = 0
    batches: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        out.update(
            calls_per_second=round(self.calls_per_second, 1),
            batches_per_second=round(self.batches / self.elapsed, 2) if self.elapsed else 0.0,
            p50_ms=round(self.percentile_ms(50), 2),
            p95_ms=round(self.percentile_ms(95), 2),
            p99_ms=round(self.percentile_ms(99), 2),
        )
        return out


def _drive(scenario: Scenario, work: Any) -> Scenario:
    """Run ``work(thread_index, seq)`` (one batch) from ``threads`` threads for ``seconds``."""
    lock = threading.Lock()
    stop_at = time.monotonic() + scenario.seconds

    def loop(index: int) -> None:
        seq = 0
        while time.monotonic() < stop_at:
            seq += 1
            started = time.perf_counter()
            try:
                work(index, seq)
            except Exception:
                with lock:
                    scenario.errors += 1
                continue
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                scenario.latencies_ms.append(elapsed)
                scenario.batches += 1
                scenario.calls += scenario.batch_size

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(scenario.threads)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    scenario.elapsed = time.perf_counter() - started
    return scenario


def run_gateway_scenario(name: str, target: str, token: str, audio: list[tuple[str, str]], args: Any, batch: int):
    import grpc

    from callqc.client import ClientAuth
    from callqc.v1 import callqc_pb2 as pb
    from callqc.v1 import callqc_pb2_grpc as pb_grpc

    auth = ClientAuth(local=True, token=token)
    stubs = [pb_grpc.CallQCStub(grpc.secure_channel(target, auth.channel_credentials())) for _ in range(args.threads)]
    calls = [
        pb.CallInput(
            call_id=f"c{i:05d}",
            audio_key=audio[i % len(audio)][0],
            audio_sha256=audio[i % len(audio)][1],
            language="zh",
            channel_layout=pb.CHANNEL_LAYOUT_STEREO_AGENT_LEFT,
            metadata=pb.CallMetadata(
                agent_id="A1024",
                customer_id="C778812",
                call_started_at="2026-11-20T10:15:00+08:00",
                attempts_today=1,
                ledger=pb.Ledger(amount_due="35000", overdue_days=42),
            ),
        )
        for i in range(batch)
    ]
    run = f"{name}-{os.getpid()}-{time.time_ns()}"

    def work(index: int, seq: int) -> None:
        reply = stubs[index].SubmitBatch(
            pb.SubmitBatchRequest(request_id=f"{run}-{index}-{seq}", calls=calls), timeout=120
        )
        if not reply.created or reply.counts.failed:
            raise RuntimeError(f"batch not accepted cleanly: {reply.counts}")

    work(0, 0)  # warm up (channel, token check, first S3 connections)
    return _drive(Scenario(name, batch, args.threads, args.seconds), work)


def run_baseline(store: Any, audio: list[tuple[str, str]], args: Any) -> Scenario:
    """The same durable writes without the gateway: encrypted manifest + open marker per batch."""
    from callqc.jobs import BatchManifest
    from callqc.models import CallMetadata, CallSpec, Ledger

    spec = CallSpec(
        call_id="c00000",
        audio_key=audio[0][0],
        audio_sha256=audio[0][1],
        metadata=CallMetadata(
            agent_id="A1024", customer_id="C778812", attempts_today=1, ledger=Ledger(amount_due=35000, overdue_days=42)
        ),
    )
    calls = [spec.model_copy(update={"call_id": f"c{i:05d}"}) for i in range(args.batch)]

    def work(index: int, seq: int) -> None:
        batch_id = f"bbase{index}x{seq}x{time.time_ns()}"
        manifest = BatchManifest(
            batch_id=batch_id, request_id=batch_id, client="bench", request_digest="x", calls=calls
        )
        store.put_bytes(f"jobs/batches/{batch_id}/manifest.json", manifest.model_dump_json().encode())
        store.put_bytes(f"jobs/open/{batch_id}", batch_id.encode())

    return _drive(Scenario("baseline_s3", args.batch, args.threads, args.seconds), work)


def plot(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = results["scenarios"]
    names = [r["name"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    rates = [r["calls_per_second"] for r in rows]
    ax1.barh(names, rates, color="tab:blue")
    for y, rate in enumerate(rates):
        ax1.text(rate, y, f" {rate:,.0f}", va="center", fontsize=8)
    ax1.axvline(TARGET_CALLS_PER_SECOND, color="tab:red", linestyle="--", label=f"target {TARGET_CALLS_PER_SECOND:.0f}")
    ax1.set_xscale("log")
    ax1.set_xlabel("calls accepted / s (log)")
    ax1.legend()
    ax2.barh(names, [r["p99_ms"] for r in rows], color="tab:orange")
    ax2.set_xlabel("p99 SubmitBatch latency (ms)")
    fig.suptitle(f"callqc ingest: {results['threads']} client threads, batches of {results['batch']} calls")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="load per scenario")
    parser.add_argument("--threads", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--batch", type=int, default=100, help="calls per batch")
    parser.add_argument("--audio-objects", type=int, default=4)
    parser.add_argument("--scenarios", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--profile", action="store_true", help="also run the default gateway under cProfile")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--replot", action="store_true", help="redraw ingest.png from ingest.json, run nothing")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="gateway", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.variant, args.profile_out)
        return 0
    if args.replot:
        plot(json.loads((args.out / "ingest.json").read_text()), args.out / "ingest.png")
        return 0

    from callqc.s3server import LocalS3Server, S3Credentials
    from callqc.security.envelope import Keyring
    from callqc.security.keyfiles import write_private
    from callqc.security.tokens import TokenIssuer, generate_signing_key, write_signing_key
    from callqc.storage import ObjectStore, open_store

    everything = ["gateway", "gateway_direct_keys", "gateway_batch1", "baseline_s3", *ABLATIONS]
    wanted = [s for s in args.scenarios.split(",") if s] or everything
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="callqc-ingest-") as tmp:
        root = Path(tmp)
        s3 = LocalS3Server(root / "s3", S3Credentials.generate(), log_path=root / "rclone.log")
        s3.start()
        try:
            keys = {"keyring": root / "keyring.json", "signing_key": root / "signing.pem", "audit_key": root / "a.key"}
            write_private(keys["keyring"], Keyring.generate("k1").to_json().encode())
            write_signing_key(generate_signing_key(), keys["signing_key"])
            write_private(keys["audit_key"], os.urandom(32))
            config = {
                "home": str(root / "home"),
                "endpoint": s3.endpoint,
                "access_key": s3.credentials.access_key,
                "secret_key": s3.credentials.secret_key,
                "bucket": "ingest",
                **{k: str(v) for k, v in keys.items()},
            }
            config_path = root / "config.json"
            write_private(config_path, json.dumps(config).encode())
            settings = _settings(config, "gateway")
            store = open_store(settings)
            plain_store = ObjectStore(_settings(config, "no_encryption").s3)
            audio = []
            for i in range(args.audio_objects):
                data = os.urandom(64 * 1024) + i.to_bytes(4, "big")
                sha = hashlib.sha256(data).hexdigest()
                for bucket in (store, plain_store):
                    bucket.put_bytes(f"audio/uploads/{sha}", data, metadata={"sha256": sha})
                audio.append((f"audio/uploads/{sha}", sha))
            direct = []  # a call system's own keys (not content-addressed): the gateway HEADs each one
            for i in range(args.batch):
                data = os.urandom(1024) + i.to_bytes(4, "big")
                for bucket in (store, plain_store):
                    bucket.put_bytes(f"audio/direct/{i:05d}.wav", data)
                direct.append((f"audio/direct/{i:05d}.wav", hashlib.sha256(data).hexdigest()))
            token = TokenIssuer.from_settings(settings.security.tokens).issue(
                "bench-system", ["call_system"], kind="service", ttl_seconds=3600
            )
            scenarios: list[Scenario] = []
            for name in wanted:
                if name == "baseline_s3":
                    scenarios.append(run_baseline(store, audio, args))
                else:
                    variant = name.removesuffix("_batch1").removesuffix("_direct_keys")
                    batch = 1 if name.endswith("_batch1") else args.batch
                    keys = direct if name.endswith("_direct_keys") else audio
                    with gateway_process(config_path, variant) as target:
                        scenarios.append(run_gateway_scenario(name, target, token, keys, args, batch))
                print(json.dumps(scenarios[-1].summary()), flush=True)
            if args.profile:
                with gateway_process(config_path, "gateway", args.out / "ingest_profile.txt") as target:
                    run_gateway_scenario("gateway_profiled", target, token, audio, args, args.batch)
        finally:
            s3.stop()

    rows = [s.summary() for s in scenarios]
    by_name = {r["name"]: r for r in rows}
    base = by_name.get("baseline_s3", {}).get("calls_per_second") or 0.0
    for row in rows:
        row["ratio_to_baseline_s3"] = round(row["calls_per_second"] / base, 3) if base else None
    gateway = by_name.get("gateway", {}).get("calls_per_second", 0.0)
    results = {
        "benchmark": "ingest",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],  # > cpus: other work skewed the run
        },
        "threads": args.threads,
        "batch": args.batch,
        "seconds_per_scenario": args.seconds,
        "target_calls_per_second": TARGET_CALLS_PER_SECOND,
        "gateway_calls_per_second": gateway,
        "meets_target": gateway >= TARGET_CALLS_PER_SECOND,
        "definitions": {
            "calls_per_second": "calls in batches the gateway acknowledged (manifest + open marker stored) / wall s",
            "p99_ms": "99th percentile SubmitBatch latency, client side, per batch",
            "ratio_to_baseline_s3": "calls/s relative to writing the same encrypted manifests straight to S3",
        },
        "scenarios": rows,
    }
    write_results(results, args.out)
    print(f"gateway: {gateway:.0f} calls/s (target {TARGET_CALLS_PER_SECOND:.0f}); wrote {args.out / 'ingest.json'}")
    return 0


def write_results(results: dict[str, Any], out: Path) -> None:
    (out / "ingest.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "ingest.png")


if __name__ == "__main__":
    sys.exit(main())
