"""Load test of the CallQC gateway: call-system users submit batches at a profile's call volume.

Run it as its own process (locust monkey-patches the standard library with gevent; importing it after
urllib3 / minio / ray crashes, so this file imports only grpc, yaml and the generated protobuf stubs):

    CALLQC_LOAD_PROFILE=perf/profiles/local-small.yaml CALLQC_HOME=~/.callqc \\
        .venv/bin/locust -f perf/locustfile.py --headless -u 1 -r 1 --run-time 60s

Connection (environment variables; with only ``CALLQC_HOME`` set, everything is read from the running
``callqc up`` stack: ``$CALLQC_HOME/stack.json`` and its PKI):

    CALLQC_LOAD_TARGET   host:port of the gateway (default: 127.0.0.1:<gateway_port of the local stack>)
    CALLQC_LOAD_CA       CA bundle that signed the gateway's certificate
    CALLQC_LOAD_CERT / CALLQC_LOAD_KEY   client certificate and key (mTLS, service identity)
    CALLQC_LOAD_TOKEN    bearer token (a person, or a service behind a TLS-terminating proxy)
    CALLQC_LOAD_LOCAL=1  gRPC local credentials (a tls_mode=local gateway on loopback, tests only)
    CALLQC_LOAD_PROFILE  the call-volume profile (default perf/profiles/local-small.yaml)
    CALLQC_LOAD_SAMPLES  batch YAML whose calls are the audio pool (default samples/batch.yaml)
    CALLQC_LOAD_RATE_SCALE  multiplies the profile's arrival rate (e.g. 10 to compress a day tenfold)

At the end it prints a coverage verdict (submitted, inspected, failed, p50/p95 end-to-end latency,
backlog over time) and exits 1 when fewer than 100% of the submitted calls were inspected within the
profile's SLA window, 0 otherwise (the verdict, not request errors, decides the exit code).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import random
import time
import uuid
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
import yaml
from locust import User, events, task
from locust.env import Environment

from callqc.v1 import callqc_pb2 as pb
from callqc.v1 import callqc_pb2_grpc as pb_grpc

grpc_gevent.init_gevent()  # grpc's blocking calls must yield to other greenlets

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = REPO_ROOT / "perf" / "profiles" / "local-small.yaml"
DEFAULT_SAMPLES = REPO_ROOT / "samples" / "batch.yaml"
CHUNK_BYTES = 512 * 1024
TERMINAL = {pb.CALL_STATE_DONE, pb.CALL_STATE_FAILED}
VERDICT_PREFIX = "CALLQC-VERDICT"


# ---- profile ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DurationBucket:
    seconds: float
    weight: float


@dataclass(frozen=True)
class LoadProfile:
    """A day of collection calls, as the bank describes it, plus how the test runs it."""

    name: str
    calls_per_day: int
    avg_duration_seconds: float
    peak_hour_factor: float
    duration_distribution: list[DurationBucket]
    violation_rate: float
    batch_size: int
    sla_seconds: float
    total_calls: int = 0  # stop submitting after this many calls (0: until --run-time ends)
    rate_scale: float = 1.0
    drain_seconds: float = 0.0  # after the run, wait this long at most for submitted calls to finish
    stop_when_done: bool = False  # end the run once total_calls are all finished
    backlog_sample_seconds: float = 5.0
    max_backoff_seconds: float = 60.0  # RESOURCE_EXHAUSTED: retry the same request id for this long

    @property
    def calls_per_second(self) -> float:
        """Peak-hour arrival rate (scaled)."""
        return self.calls_per_day * self.peak_hour_factor / 86400.0 * self.rate_scale

    def pick_duration(self, rng: random.Random) -> float:
        buckets = self.duration_distribution
        return rng.choices([b.seconds for b in buckets], weights=[b.weight for b in buckets])[0]


def load_profile(path: Path, rate_scale: float | None = None) -> LoadProfile:
    """Read and check a profile YAML (see perf/profiles/)."""
    doc = yaml.safe_load(Path(path).read_text())
    buckets = [
        DurationBucket(float(b["seconds"]), float(b.get("weight", 1.0))) for b in doc.get("duration_distribution") or []
    ]
    if not buckets:
        buckets = [DurationBucket(float(doc["avg_duration_seconds"]), 1.0)]
    if any(b.seconds <= 0 or b.weight < 0 for b in buckets) or sum(b.weight for b in buckets) <= 0:
        raise ValueError(f"{path}: duration_distribution needs positive seconds and weights")
    fields = {k: doc[k] for k in LoadProfile.__dataclass_fields__ if k in doc and k != "duration_distribution"}
    fields["duration_distribution"] = buckets
    if rate_scale is not None:
        fields["rate_scale"] = rate_scale
    profile = LoadProfile(**fields)
    if not 0 <= profile.violation_rate <= 1:
        raise ValueError(f"{path}: violation_rate must be within [0, 1]")
    if profile.batch_size < 1 or profile.calls_per_day < 1 or profile.sla_seconds <= 0:
        raise ValueError(f"{path}: batch_size, calls_per_day and sla_seconds must be positive")
    return profile


# ---- samples ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One recording of the sample batch and what to submit with it."""

    name: str
    path: Path
    language: str
    layout: int
    metadata: pb.CallMetadata
    violation: bool


_LAYOUTS = {
    "stereo_agent_left": pb.CHANNEL_LAYOUT_STEREO_AGENT_LEFT,
    "stereo_agent_right": pb.CHANNEL_LAYOUT_STEREO_AGENT_RIGHT,
    "mono": pb.CHANNEL_LAYOUT_MONO,
}


def load_samples(path: Path) -> list[Sample]:
    doc = yaml.safe_load(Path(path).read_text())
    samples = []
    for entry in doc["calls"]:
        meta = dict(entry.get("metadata") or {})
        ledger = meta.pop("ledger", None)
        metadata = pb.CallMetadata(
            agent_id=str(meta.get("agent_id", "")),
            customer_id=str(meta.get("customer_id", "")),
            call_started_at=str(meta.get("call_started_at", "")),
            attempts_today=int(meta.get("attempts_today", 0)),
            outsourced=bool(meta.get("outsourced", False)),
            principal=str(meta.get("principal", "")),
        )
        if ledger:
            metadata.ledger.CopyFrom(
                pb.Ledger(amount_due=str(ledger["amount_due"]), overdue_days=int(ledger["overdue_days"]))
            )
        samples.append(
            Sample(
                name=entry["call_id"],
                path=Path(path).parent / entry["file"],
                language=entry.get("language", "zh"),
                layout=_LAYOUTS[entry.get("channel_layout", "stereo_agent_left")],
                metadata=metadata,
                violation=bool((entry.get("expected") or {}).get("violations")),
            )
        )
    return samples


def audio_of_duration(path: Path, seconds: float) -> bytes:
    """The sample's WAV repeated to about ``seconds`` (at least once): a long call from a short recording."""
    with wave.open(str(path)) as src:
        params = src.getparams()
        frames = src.readframes(src.getnframes())
    own = params.nframes / params.framerate
    repeats = max(1, round(seconds / own))
    if repeats == 1:
        return Path(path).read_bytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as dst:
        dst.setparams(params)
        dst.writeframes(frames * repeats)
    return out.getvalue()


# ---- connection ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Connection:
    target: str
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token: str = ""
    local: bool = False

    def credentials(self) -> grpc.ChannelCredentials:
        if self.local:
            creds = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        else:

            def read(p: Path | None) -> bytes | None:
                return p.read_bytes() if p else None

            creds = grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))
        if self.token:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(self.token))
        return creds


def connection_from_env(env: dict[str, str] | None = None) -> Connection:
    """CALLQC_LOAD_* variables, falling back to the local stack under CALLQC_HOME (``callqc up``)."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("CALLQC_HOME", "~/.callqc")).expanduser()
    state: dict[str, Any] = {}
    if (home / "stack.json").exists():
        state = json.loads((home / "stack.json").read_text())
    pki = home / "pki"

    def path(name: str, default: Path) -> Path | None:
        value = env.get(name)
        if value:
            return Path(value)
        return default if default.exists() else None

    target = env.get("CALLQC_LOAD_TARGET") or f"127.0.0.1:{state.get('gateway_port', 50051)}"
    local = env.get("CALLQC_LOAD_LOCAL", "") in ("1", "true", "yes")
    if local:
        return Connection(target, token=env.get("CALLQC_LOAD_TOKEN", ""), local=True)
    return Connection(
        target,
        ca=path("CALLQC_LOAD_CA", pki / "ca.crt"),
        cert=path("CALLQC_LOAD_CERT", pki / "client-callqc-cli.crt"),
        key=path("CALLQC_LOAD_KEY", pki / "client-callqc-cli.key"),
        token=env.get("CALLQC_LOAD_TOKEN", ""),
    )


# ---- shared run state ------------------------------------------------------------------------------------------
@dataclass
class Tracker:
    """What this run submitted and what became of it (one per locust process)."""

    submitted: dict[str, float] = field(default_factory=dict)  # "batch/call" -> submit time
    finished: dict[str, tuple[int, float]] = field(default_factory=dict)  # -> (state, finish time)
    rejected: int = 0  # refused at intake (counted as not inspected)
    backoffs: int = 0  # SubmitBatch answered RESOURCE_EXHAUSTED (backlog full): the client waited and retried
    backlog: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, unfinished calls)
    watchers: list[gevent.Greenlet] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    reserved: int = 0  # calls handed to users so far (for total_calls)

    def unfinished(self) -> int:
        return len(self.submitted) - len(self.finished)

    def reserve(self, wanted: int, total: int) -> int:
        """How many calls a user may put in its next batch under the run's cap."""
        grant = wanted if not total else max(0, min(wanted, total - self.reserved))
        self.reserved += grant
        return grant


PROFILE: LoadProfile | None = None
SAMPLES: list[Sample] = []
TRACKER = Tracker()
RUN_ID = uuid.uuid4().hex[:8]
_BATCH_SEQ = itertools.count(1)


def _setup() -> tuple[LoadProfile, list[Sample]]:
    global PROFILE, SAMPLES
    if PROFILE is None:
        scale = os.environ.get("CALLQC_LOAD_RATE_SCALE")
        PROFILE = load_profile(
            Path(os.environ.get("CALLQC_LOAD_PROFILE", DEFAULT_PROFILE)), float(scale) if scale else None
        )
        SAMPLES = load_samples(Path(os.environ.get("CALLQC_LOAD_SAMPLES", DEFAULT_SAMPLES)))
    return PROFILE, SAMPLES


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def verdict(tracker: Tracker, profile: LoadProfile) -> dict[str, Any]:
    """Coverage of the run: inspected (DONE within the SLA window) / submitted."""
    latencies = [
        finish - tracker.submitted[key]
        for key, (state, finish) in tracker.finished.items()
        if state == pb.CALL_STATE_DONE and key in tracker.submitted
    ]
    submitted = len(tracker.submitted) + tracker.rejected
    inspected = sum(1 for lat in latencies if lat <= profile.sla_seconds)
    failed = sum(1 for state, _t in tracker.finished.values() if state == pb.CALL_STATE_FAILED) + tracker.rejected
    coverage = inspected / submitted if submitted else 0.0
    return {
        "profile": profile.name,
        "run_id": RUN_ID,  # in every call id of the run: f"{sample}-{run_id}-{batch}-{i}"
        "submitted": submitted,
        "inspected": inspected,
        "inspected_late": len(latencies) - inspected,
        "failed": failed,
        "unfinished": tracker.unfinished(),
        "coverage": round(coverage, 6),
        "sla_seconds": profile.sla_seconds,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "backoffs": tracker.backoffs,
        "backlog": [(round(t, 1), n) for t, n in tracker.backlog],
        "ok": submitted > 0 and inspected == submitted,
    }


def format_verdict(v: dict[str, Any]) -> str:
    def sec(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1f}s"

    backlog = " ".join(f"{t:.0f}s:{n}" for t, n in v["backlog"][-30:]) or "n/a"
    return "\n".join(
        [
            f"{VERDICT_PREFIX} profile={v['profile']} coverage={v['coverage'] * 100:.1f}% "
            f"({v['inspected']}/{v['submitted']} inspected within {v['sla_seconds']:.0f}s) "
            f"{'PASS' if v['ok'] else 'FAIL'}",
            f"  submitted={v['submitted']} inspected={v['inspected']} late={v['inspected_late']} "
            f"failed={v['failed']} unfinished={v['unfinished']} backoffs={v['backoffs']}",
            f"  end-to-end latency p50={sec(v['latency_p50_s'])} p95={sec(v['latency_p95_s'])}",
            f"  backlog (t:unfinished calls) {backlog}",
            f"{VERDICT_PREFIX}-JSON {json.dumps(v)}",
        ]
    )


# ---- the user --------------------------------------------------------------------------------------------------
class CallSystemUser(User):
    """A bank call system: uploads its recordings once, then submits batches at the profile's rate."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.profile, self.samples = _setup()
        self.connection = connection_from_env()
        self.channel = grpc.secure_channel(self.connection.target, self.connection.credentials())
        self.stub = pb_grpc.CallQCStub(self.channel)
        self.rng = random.Random()
        self.audio_keys: dict[tuple[str, float], tuple[str, str]] = {}  # (sample, seconds) -> (key, sha256)
        self.next_at = time.monotonic()

    # -- helpers --------------------------------------------------------------------------------------------------
    def _fire(self, name: str, started: float, length: int = 0, exc: BaseException | None = None) -> None:
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )

    def _upload(self, data: bytes, filename: str) -> tuple[str, str]:
        digest = hashlib.sha256(data).hexdigest()

        def messages() -> Iterator[pb.UploadAudioRequest]:
            yield pb.UploadAudioRequest(header=pb.UploadHeader(filename=filename, sha256=digest, size=len(data)))
            for offset in range(0, len(data), CHUNK_BYTES):
                yield pb.UploadAudioRequest(chunk=data[offset : offset + CHUNK_BYTES])

        started = time.perf_counter()
        try:
            reply = self.stub.UploadAudio(messages(), timeout=300)
        except grpc.RpcError as err:
            self._fire("UploadAudio", started, exc=err)
            raise
        self._fire("UploadAudio", started, len(data))
        return reply.audio_key, reply.sha256

    def on_start(self) -> None:
        for sample in self.samples:
            for bucket in self.profile.duration_distribution:
                data = audio_of_duration(sample.path, bucket.seconds)
                self.audio_keys[(sample.name, bucket.seconds)] = self._upload(data, sample.path.name)
        self.next_at = time.monotonic()

    def on_stop(self) -> None:
        self.channel.close()

    def _pick(self) -> Sample:
        bad = [s for s in self.samples if s.violation]
        good = [s for s in self.samples if not s.violation]
        pool = bad if (bad and (not good or self.rng.random() < self.profile.violation_rate)) else good
        return self.rng.choice(pool)

    def _batch(self, size: int, seq: int) -> pb.SubmitBatchRequest:
        calls = []
        for i in range(size):
            sample = self._pick()
            key, sha = self.audio_keys[(sample.name, self.profile.pick_duration(self.rng))]
            calls.append(
                pb.CallInput(
                    call_id=f"{sample.name}-{RUN_ID}-{seq}-{i}",
                    audio_key=key,
                    audio_sha256=sha,
                    channel_layout=sample.layout,
                    language=sample.language,
                    metadata=sample.metadata,
                )
            )
        return pb.SubmitBatchRequest(request_id=f"load-{RUN_ID}-{seq}", calls=calls)

    def _submit(self, request: pb.SubmitBatchRequest) -> pb.SubmitBatchResponse | None:
        """SubmitBatch; on RESOURCE_EXHAUSTED back off and retry the same request id (idempotent)."""
        deadline = time.monotonic() + self.profile.max_backoff_seconds
        delay = 0.5
        while True:
            started = time.perf_counter()
            try:
                reply = self.stub.SubmitBatch(request, timeout=60)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() + delay < deadline:
                    self._fire("SubmitBatch (backlog full, backing off)", started)
                    TRACKER.backoffs += 1
                    gevent.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                self._fire("SubmitBatch", started, exc=err)
                return None
            self._fire("SubmitBatch", started, len(request.calls))
            return reply

    @task
    def submit_batch(self) -> None:
        profile = self.profile
        users = max(1, self.environment.runner.user_count if self.environment.runner else 1)
        size = TRACKER.reserve(profile.batch_size, profile.total_calls)
        if size == 0:  # the run's calls are all submitted: nothing left for this user but to wait
            gevent.sleep(1.0)
            return
        # pace: each user sends a batch every batch_size * users / rate seconds (the profile's peak rate)
        interval = size * users / profile.calls_per_second
        gevent.sleep(max(0.0, self.next_at - time.monotonic()))
        self.next_at = max(self.next_at, time.monotonic() - interval) + interval
        request = self._batch(size, next(_BATCH_SEQ))
        reply = self._submit(request)
        if reply is None:
            return
        now = time.monotonic()
        TRACKER.rejected += len(reply.rejected)
        rejected = {r.call_id for r in reply.rejected}
        ids = [c.call_id for c in request.calls if c.call_id not in rejected]
        for call_id in ids:
            TRACKER.submitted[f"{reply.batch_id}/{call_id}"] = now
        TRACKER.watchers.append(gevent.spawn(watch_batch, self.environment, self.connection, reply.batch_id, ids))


def watch_batch(environment: Environment, connection: Connection, batch_id: str, call_ids: list[str]) -> None:
    """Follow one batch with WatchBatch (re-opened after a broken stream, e.g. a gateway restart)."""
    channel = grpc.secure_channel(connection.target, connection.credentials())
    stub = pb_grpc.CallQCStub(channel)
    pending = {f"{batch_id}/{c}" for c in call_ids}
    started = time.perf_counter()
    try:
        while pending:
            try:
                for event in stub.WatchBatch(pb.WatchBatchRequest(batch_id=batch_id), timeout=3600):
                    key = f"{batch_id}/{event.call.call_id}"
                    if event.HasField("call") and event.call.state in TERMINAL and key in pending:
                        pending.discard(key)
                        TRACKER.finished[key] = (event.call.state, time.monotonic())
                    if event.complete:
                        break
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.CANCELLED:
                    return
                gevent.sleep(1.0)  # gateway briefly away: watch again
                continue
            if pending:
                gevent.sleep(1.0)
    finally:
        channel.close()
    environment.events.request.fire(
        request_type="grpc",
        name="WatchBatch (until complete)",
        response_time=(time.perf_counter() - started) * 1000,
        response_length=len(call_ids),
        exception=None,
        context={},
    )
    _maybe_finish(environment)


def _maybe_finish(environment: Environment) -> None:
    profile = PROFILE
    if profile is None or not profile.stop_when_done or not profile.total_calls:
        return
    if TRACKER.reserved >= profile.total_calls and TRACKER.unfinished() == 0 and environment.runner:
        submitted = len(TRACKER.submitted) + TRACKER.rejected
        if submitted >= profile.total_calls:
            gevent.spawn_later(0.1, environment.runner.quit)


def _sample_backlog(profile: LoadProfile) -> None:
    while True:
        TRACKER.backlog.append((time.monotonic() - TRACKER.started_at, TRACKER.unfinished()))
        gevent.sleep(profile.backlog_sample_seconds)


_SAMPLER: list[gevent.Greenlet] = []
_REPORTED: list[bool] = []


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kw: Any) -> None:
    profile, _samples = _setup()
    TRACKER.started_at = time.monotonic()
    if not _SAMPLER:
        _SAMPLER.append(gevent.spawn(_sample_backlog, profile))


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kw: Any) -> None:
    """Give submitted calls up to drain_seconds to finish (the run stopped submitting)."""
    profile, _samples = _setup()
    live = [g for g in TRACKER.watchers if not g.dead]
    if live and profile.drain_seconds > 0:
        gevent.joinall(live, timeout=profile.drain_seconds)
    TRACKER.backlog.append((time.monotonic() - TRACKER.started_at, TRACKER.unfinished()))


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_kw: Any) -> None:
    if _REPORTED:
        return
    _REPORTED.append(True)
    profile, _samples = _setup()
    for greenlet in [*TRACKER.watchers, *_SAMPLER]:
        greenlet.kill(block=False)
    result = verdict(TRACKER, profile)
    print(format_verdict(result), flush=True)
    environment.process_exit_code = 0 if result["ok"] else 1
