"""The embedded single-machine stack: local S3 server, Ray head, the Serve app, the gateway.

Everything is started as separate processes through their own command-line tools (``rclone``,
``ray start``, ``serve run``, ``python -m callqc.gateway``), so this module imports no Ray. State
(pids, ports, generated S3 keys) lives in ``settings.home`` with owner-only permissions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from callqc.asr import resolve_model_dir
from callqc.s3server import LocalS3Server, S3Credentials, free_port, wait_for_port
from callqc.settings import S3Settings, Settings
from callqc.storage import ObjectStore

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVE_CONFIG = REPO_ROOT / "deployments" / "serve_local.yaml"


@dataclass
class StackState:
    s3_endpoint: str
    access_key: str
    secret_key: str
    ray_address: str = ""
    gateway_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)


class StackError(RuntimeError):
    """The local stack could not be brought up or down."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _terminate(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group (the process started it), then SIGKILL after ``timeout``."""
    if not _alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            os.kill(pid, signal.SIGKILL)


class LocalStack:
    """Brings the whole product up on one machine, and down again."""

    def __init__(
        self,
        settings: Settings,
        serve_config: Path = DEFAULT_SERVE_CONFIG,
        num_cpus: int | None = None,
        log: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        self.settings = settings
        self.home = settings.home
        self.serve_config = serve_config
        self.num_cpus = num_cpus or max(2, os.cpu_count() or 2)
        self.log = log
        self.state_path = self.home / "stack.json"
        self.logs = self.home / "logs"

    # -- state ---------------------------------------------------------------------------
    def load_state(self) -> StackState | None:
        if not self.state_path.exists():
            return None
        return StackState(**json.loads(self.state_path.read_text()))

    def _save_state(self, state: StackState) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(state), fh, indent=2)
        os.replace(tmp, self.state_path)

    def running(self) -> bool:
        state = self.load_state()
        return state is not None and any(_alive(pid) for pid in state.pids.values())

    def environment(self, state: StackState) -> dict[str, str]:
        """What every process of the stack (and any client) needs to find the others."""
        env = dict(os.environ)
        env.update(
            {
                "CALLQC_HOME": str(self.home),
                "CALLQC_S3__ENDPOINT": state.s3_endpoint,
                "CALLQC_S3__ACCESS_KEY": state.access_key,
                "CALLQC_S3__SECRET_KEY": state.secret_key,
                "CALLQC_GATEWAY__PORT": str(state.gateway_port),
                "RAY_ADDRESS": state.ray_address,
                "RAY_USAGE_STATS_ENABLED": "0",
                "HF_HUB_OFFLINE": "1",
            }
        )
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        return proc.pid

    def _run(self, name: str, argv: list[str], env: dict[str, str], timeout: float) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as out:
            result = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, timeout=timeout
            )
        if result.returncode != 0:
            tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
            raise StackError(f"{' '.join(argv[:3])} failed (exit {result.returncode}); log tail:\n{tail}")

    # -- up --------------------------------------------------------------------------------
    def up(self, timeout: float = 300.0) -> StackState:
        if self.running():
            raise StackError(f"a stack is already running from {self.home}; run `callqc down` first")
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        host, _, port = self.settings.s3.endpoint.partition(":")
        credentials = S3Credentials.generate()
        s3 = LocalS3Server(
            self.home / "s3data",
            credentials,
            host=host,
            port=int(port or 0) or free_port(),
            log_path=self.logs / "s3.log",
        )
        self.logs.mkdir(parents=True, exist_ok=True)
        self.log(f"object store: rclone serve s3 on {s3.endpoint}")
        s3_pid = s3.start(detach=True)
        gateway_port = self.settings.gateway.port or free_port()
        ray_port = free_port()
        state = StackState(
            s3.endpoint,
            credentials.access_key,
            credentials.secret_key,
            ray_address=f"127.0.0.1:{ray_port}",
            gateway_port=gateway_port,
            pids={"s3": s3_pid},
        )
        self._save_state(state)
        try:
            self._bring_up_rest(state, timeout)
        except BaseException:
            self.down()
            raise
        return state

    def _bring_up_rest(self, state: StackState, timeout: float) -> None:
        env = self.environment(state)
        s3_settings = S3Settings.model_validate(
            {
                **self.settings.s3.model_dump(),
                "endpoint": state.s3_endpoint,
                "access_key": state.access_key,
                "secret_key": state.secret_key,
            }
        )
        ObjectStore(s3_settings)  # creates the bucket
        self.log("models: whisper base (assembled once, checked by sha256)")
        resolve_model_dir(self.settings.asr)

        bin_dir = Path(sys.executable).parent
        port = state.ray_address.rsplit(":", 1)[1]
        self.log(f"compute: ray start --head ({self.num_cpus} CPUs)")
        self._run(
            "ray",
            [
                str(bin_dir / "ray"),
                "start",
                "--head",
                f"--port={port}",
                f"--num-cpus={self.num_cpus}",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            env,
            timeout=120,
        )
        state.pids["ray"] = 0  # ray processes are stopped with `ray stop`
        self._save_state(state)
        self.log(f"serve: {self.serve_config.name}")
        self._run(
            "serve",
            [str(bin_dir / "serve"), "run", "--non-blocking", "-a", state.ray_address, str(self.serve_config)],
            env,
            timeout=120,
        )
        self._run(
            "serve-wait",
            [sys.executable, "-m", "operators.serve_status", "--wait", "--timeout", str(int(timeout))],
            env,
            timeout=timeout + 30,
        )
        self.log(f"gateway: gRPC on 127.0.0.1:{state.gateway_port}")
        state.pids["gateway"] = self._spawn("gateway", [sys.executable, "-m", "callqc.gateway"], env)
        self._save_state(state)
        wait_for_port(self.settings.gateway.host, state.gateway_port, timeout=30)

    # -- down ------------------------------------------------------------------------------
    def down(self) -> None:
        state = self.load_state()
        if state is None:
            return
        env = self.environment(state)
        if "gateway" in state.pids:
            _terminate(state.pids["gateway"])
        if "ray" in state.pids:
            bin_dir = Path(sys.executable).parent
            subprocess.run([str(bin_dir / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        if "s3" in state.pids:
            _terminate(state.pids["s3"])
        self.state_path.unlink(missing_ok=True)


def apply_state_to_environment(settings_home: Path) -> bool:
    """Point this process at a running local stack (used by client commands). True if found."""
    path = settings_home / "stack.json"
    if not path.exists():
        return False
    state = StackState(**json.loads(path.read_text()))
    os.environ.setdefault("CALLQC_S3__ENDPOINT", state.s3_endpoint)
    os.environ.setdefault("CALLQC_S3__ACCESS_KEY", state.access_key)
    os.environ.setdefault("CALLQC_S3__SECRET_KEY", state.secret_key)
    os.environ.setdefault("CALLQC_GATEWAY__PORT", str(state.gateway_port))
    return True
