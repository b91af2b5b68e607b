"""Ray Serve autoscaling as our configs use it: replicas follow load up to max_replicas and back to min_replicas.

A private local Ray cluster (2 CPUs, no dashboard, own temp dir) inside the test process, short delays, load
sent through a DeploymentHandle: first a trivial sleeping deployment, then the real ASR deployment (whisper
base transcribing sample channels stored as PCM in the real S3 server). Polls are bounded; nothing is timed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import warnings
import wave
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from callqc.audio import to_pcm16
from callqc.settings import Settings
from callqc.storage import ObjectStore

from ..conftest import SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

APP = "autoscale-test"
POLL_LIMIT_S = 60.0  # an upper bound for each poll loop, never asserted on as a duration

AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 1,
    "downscale_delay_s": 2,
    "look_back_period_s": 2,
    "metrics_interval_s": 0.5,  # deprecated knob, but the only per-deployment way to push metrics faster
}


@pytest.fixture(scope="module")
def serve_cluster() -> Iterator[None]:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.pop("RAY_ADDRESS", None)
    import ray
    from ray import serve
    from ray.serve.config import ProxyLocation

    temp_dir = tempfile.mkdtemp(prefix="cqas-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
        _temp_dir=temp_dir,
    )  # fmt: skip
    try:
        serve.start(proxy_location=ProxyLocation.Disabled)  # no HTTP port: nothing to clash with
        yield
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def running_replicas(deployment: str = "Sleeper", app_name: str = APP) -> int:
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None or deployment not in app.deployments:
        return 0
    return int(app.deployments[deployment].replica_states.get("RUNNING", 0))


def keep_busy(send: Callable[[], None]) -> tuple[threading.Event, threading.Thread, list[BaseException]]:
    """Call ``send`` in a loop on a background thread until the returned event is set."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                send()
        except BaseException as err:  # surfaced by the caller's assertion
            errors.append(err)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    return stop, worker, errors


def wait_until(condition: Callable[[], bool], what: str) -> None:
    import time

    deadline = time.monotonic() + POLL_LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, f"not reached within the poll bound: {what}"
        time.sleep(0.25)


def test_replicas_follow_load_between_min_and_max(serve_cluster: None) -> None:
    from ray import serve

    @serve.deployment(max_ongoing_requests=2, ray_actor_options={"num_cpus": 0.1})
    class Sleeper:
        async def __call__(self, seconds: float) -> str:
            import asyncio

            await asyncio.sleep(seconds)
            return "ok"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        app = Sleeper.options(autoscaling_config=AUTOSCALING).bind()
        handle = serve.run(app, name=APP, route_prefix=None)
    assert handle.remote(0).result(timeout_s=30) == "ok"
    assert running_replicas() == 1

    def load() -> None:  # 4 requests in flight at all times: 4 per replica > target 1, so it must scale up
        for response in [handle.remote(0.5) for _ in range(4)]:
            response.result(timeout_s=30)

    stop, worker, errors = keep_busy(load)
    try:
        wait_until(lambda: running_replicas() == 2, "scaled up to max_replicas=2 under load")
        assert running_replicas() <= AUTOSCALING["max_replicas"]
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not errors, errors

    wait_until(lambda: running_replicas() == 1, "scaled back down to min_replicas=1 without load")
    serve.delete(APP)


def test_the_asr_deployment_adds_a_replica_under_channel_load_and_removes_it(
    serve_cluster: None, settings: Settings, store: ObjectStore
) -> None:
    """The real ASR deployment (whisper base, @serve.batch, settings from the replica's environment) scales
    from 1 to 2 replicas while channel requests queue up, then back to 1; every request is transcribed."""
    from ray import serve

    from deployments.asr import ASR

    with wave.open(str(SAMPLES / "calls" / "en_compliant.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    key = "work/autoscale/16000/ch0.s16le"
    store.put_bytes(key, to_pcm16(pcm[:, 0].astype(np.float32) / 32768.0))

    env = {
        "CALLQC_S3__ENDPOINT": settings.s3.endpoint,
        "CALLQC_S3__ACCESS_KEY": settings.s3.access_key,
        "CALLQC_S3__SECRET_KEY": settings.s3.secret_key.get_secret_value(),
        "CALLQC_S3__BUCKET": settings.s3.bucket,
        "CALLQC_SECURITY__ENVELOPE__KEYRING_FILE": str(settings.security.envelope.keyring_file),
        "HF_HUB_OFFLINE": "1",
    }
    asr = ASR.options(
        autoscaling_config={**AUTOSCALING, "upscale_delay_s": 2, "downscale_delay_s": 4},
        max_ongoing_requests=2,
        ray_actor_options={"num_cpus": 0.5, "runtime_env": {"env_vars": env}},  # two fit on the 2-CPU cluster
        user_config={"batch_max_requests": 1, "num_workers": 1, "cpu_threads": 1},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        handle = serve.run(asr.bind(), name="asr-autoscale", route_prefix=None)
    first = handle.transcribe.remote(key, "en").result(timeout_s=120)
    assert "app" in " ".join(s.text for s in first.segments).lower()
    assert running_replicas("ASR", "asr-autoscale") == 1

    transcribed: list[int] = []

    def load() -> None:  # 4 channel requests in flight: 2 per replica at most, target 1 → scale up
        for response in [handle.transcribe.remote(key, "en") for _ in range(4)]:
            transcribed.append(len(response.result(timeout_s=300).segments))

    stop, worker, errors = keep_busy(load)
    try:
        wait_until(lambda: running_replicas("ASR", "asr-autoscale") == 2, "ASR scaled up to 2 replicas under load")
    finally:
        stop.set()
        worker.join(timeout=300)
    assert not errors, errors
    assert transcribed and all(count == len(first.segments) for count in transcribed)
    wait_until(lambda: running_replicas("ASR", "asr-autoscale") == 1, "ASR scaled back down to 1 replica")
    serve.delete("asr-autoscale")


ECHO_APP = """
from ray import serve


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Echo:
    async def __call__(self) -> str:
        return "ok"


app = Echo.bind()
"""


def test_ops_scale_redeploys_the_config_and_status_shows_it(
    serve_cluster: None, tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`callqc ops scale` on a live cluster: validate, `serve run --non-blocking` a changed copy, wait; then status."""
    import json
    import sys

    import ray
    import yaml
    from typer.testing import CliRunner

    from operators.cli import ops_app

    module_dir = tmp_path / "app"  # type: ignore[operator]
    module_dir.mkdir()
    (module_dir / "cq_echo_app.py").write_text(ECHO_APP)
    monkeypatch.syspath_prepend(str(module_dir))  # for the validator, in this process
    monkeypatch.setenv("PYTHONPATH", str(module_dir))  # for `serve run`, which builds the app in its own driver
    config = {
        "proxy_location": "Disabled",
        "applications": [
            {
                "name": "echo",
                "route_prefix": None,
                "import_path": "cq_echo_app:app",
                "runtime_env": {"env_vars": {"PYTHONPATH": str(module_dir)}},  # for the controller's build task
                "deployments": [{"name": "Echo", "autoscaling_config": {"min_replicas": 1, "max_replicas": 2}}],
            }
        ],
    }
    path = tmp_path / "echo.yaml"  # type: ignore[operator]
    path.write_text(yaml.safe_dump(config))
    address = ray.get_runtime_context().gcs_address
    runner = CliRunner()

    scaled = runner.invoke(
        ops_app,
        ["scale", "Echo", "--min", "2", "--max", "3", "--config", str(path), "--app", "echo", "-a", address],
        env={"COLUMNS": "200"},
    )
    assert scaled.exit_code == 0, scaled.output
    assert "app RUNNING" in scaled.output
    wait_until(lambda: echo_replicas() == 2, "min_replicas=2 applied to the running app")

    status = runner.invoke(
        ops_app, ["status", "--json", "--no-s3", "--app", "echo", "-a", address], env={"COLUMNS": "200"}
    )
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert report["serve"]["status"] == "RUNNING"
    assert report["serve"]["deployments"]["Echo"]["replicas"].get("RUNNING") == 2
    (node,) = report["nodes"]
    assert node["alive"] and node["head"] and node["cpus"] == 2
    assert "ray_error" not in report and sys.modules.get("ray") is not None
    from operators.cli import _replicas_on

    assert _replicas_on(node["node_id"]) == 2  # what `drain --wait` polls: Serve replicas alive on the node
    refused = runner.invoke(ops_app, ["drain", node["node_id"][:10], "-a", address], env={"COLUMNS": "200"})
    assert refused.exit_code == 1 and "head node" in refused.output
    from ray import serve

    serve.delete("echo")


def echo_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get("echo")
    return 0 if app is None else int(app.deployments["Echo"].replica_states.get("RUNNING", 0))
