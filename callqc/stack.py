"""The embedded single-machine stack: local S3 server, Ray head, the Serve app, the gateway.

Everything is started as separate processes through their own command-line tools (``rclone``,
``ray start``, ``serve run``, ``python -m callqc.gateway``), so this module imports no Ray. State
(pids, ports, generated S3 keys) lives in ``settings.home`` with owner-only permissions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

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
    gateway_metrics_port: int = 0
    dispatcher_metrics_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    ray_tls: bool = False  # Ray's internal gRPC runs over mutual TLS (security.ray_tls at `up`)


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


CLI_CLIENT = "callqc-cli"


def local_addresses() -> list[str]:
    """Names and IPv4 addresses of this machine: Ray binds its GCS to the primary address, and its
    TLS peers check the certificate against it."""
    addresses = ["127.0.0.1", "localhost"]
    for entries in psutil.net_if_addrs().values():
        addresses += [e.address for e in entries if e.family == socket.AF_INET and e.address not in addresses]
    return addresses


@dataclass(frozen=True)
class LocalSecrets:
    """Where the local stack keeps its generated keys and certificates (all 0600, never in the repo)."""

    home: Path

    @property
    def keyring(self) -> Path:
        return self.home / "keys" / "keyring.json"

    @property
    def signing_key(self) -> Path:
        return self.home / "keys" / "token-signing.pem"

    @property
    def audit_key(self) -> Path:
        return self.home / "keys" / "audit-hmac.key"

    @property
    def pki(self) -> Path:
        return self.home / "pki"

    @property
    def ca(self) -> Path:
        return self.pki / "ca.crt"

    def ray_tls_environment(self) -> dict[str, str]:
        """Ray's own TLS (gRPC between GCS, raylets, workers and drivers): every Ray process of the stack,
        and every client that connects to it, needs these. Plaintext peers are refused."""
        return {
            "RAY_USE_TLS": "1",
            "RAY_TLS_SERVER_CERT": str(self.pki / "node.crt"),
            "RAY_TLS_SERVER_KEY": str(self.pki / "node.key"),
            "RAY_TLS_CA_CERT": str(self.ca),
        }

    def client_pair(self, name: str = CLI_CLIENT) -> tuple[Path, Path]:
        return self.pki / f"client-{name}.crt", self.pki / f"client-{name}.key"

    def ensure(self) -> None:
        """Create what is missing. Master keys persist across restarts (the data depends on them);
        certificates are re-issued at every start."""
        from callqc.security.envelope import Keyring
        from callqc.security.keyfiles import write_private
        from callqc.security.tls import generate_test_pki
        from callqc.security.tokens import generate_signing_key, write_signing_key

        (self.home / "keys").mkdir(parents=True, exist_ok=True)
        os.chmod(self.home / "keys", 0o700)
        if not self.keyring.exists():
            write_private(self.keyring, Keyring.generate("k1").to_json().encode())
        if not self.signing_key.exists():
            write_signing_key(generate_signing_key(), self.signing_key)
        if not self.audit_key.exists():
            write_private(self.audit_key, os.urandom(32))
        pki = generate_test_pki(
            self.pki, local_addresses(), clients=(CLI_CLIENT,), days=30, ca_name="callqc local CA", node=True
        )
        bundle = self.pki / "s3-server.pem"  # rclone wants certificate + CA in one file
        bundle.write_bytes(pki.server.cert.read_bytes() + pki.ca.cert.read_bytes())


def ray_temp_dir(home: Path) -> Path:
    """This stack's own Ray temp dir (short: Ray's unix socket paths must stay under ~107 chars)."""
    return Path("/tmp") / f"callqc-ray-{hashlib.sha1(str(home.resolve()).encode()).hexdigest()[:10]}"


def stop_ray_cluster(temp_dir: Path, timeout: float = 20.0) -> int:
    """Stop only the Ray processes started with ``temp_dir`` (and their workers); others are left alone.

    ``ray stop`` would stop every Ray cluster of the user on this machine.
    """
    marker = str(temp_dir)
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            args = proc.info["cmdline"] or []
            if proc.pid not in spared and any(a.startswith("--") and marker in a for a in args):
                roots.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    victims: dict[int, psutil.Process] = {}
    for root in roots:
        try:
            victims[root.pid] = root
            victims.update({c.pid: c for c in root.children(recursive=True) if c.pid not in spared})
        except psutil.NoSuchProcess:
            continue
    for proc in victims.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _gone, alive = psutil.wait_procs(list(victims.values()), timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    return len(victims)


class LocalStack:
    """Brings the whole product up on one machine, and down again."""

    def __init__(
        self,
        settings: Settings,
        serve_config: Path = DEFAULT_SERVE_CONFIG,
        num_cpus: int | None = None,
        log: Callable[[str], None] = lambda _msg: None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: extra variables for every process of the stack (settings as ``CALLQC_*``, e.g. a
        gateway backlog cap or ``CALLQC_JUDGE__ENGINE=none``), on top of this process's environment."""
        self.settings = settings
        self.extra_env = dict(env or {})
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

    def environment(self, state: StackState, gateway: bool = False) -> dict[str, str]:
        """What a process of the stack needs. Only the gateway gets the TLS key, the token signing key
        and the audit key; the Ray workers get the S3 credentials and the master keyring."""
        secrets = LocalSecrets(self.home)
        env = dict(os.environ)
        env.update(client_environment(self.home, state))
        env.update({"RAY_ADDRESS": state.ray_address, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"})
        env.update(self.extra_env)
        env["CALLQC_TELEMETRY__DISPATCHER_METRICS_PORT"] = str(state.dispatcher_metrics_port)
        if not gateway:
            env.pop("CALLQC_SECURITY__AUDIT__HMAC_KEY_FILE", None)
        else:
            env.update(
                {
                    "CALLQC_TELEMETRY__GATEWAY_METRICS_PORT": str(state.gateway_metrics_port),
                    "CALLQC_GATEWAY__TLS_MODE": "mtls",  # services prove themselves by certificate
                    "CALLQC_SECURITY__TLS__CERT_FILE": str(secrets.pki / "server.crt"),
                    "CALLQC_SECURITY__TLS__KEY_FILE": str(secrets.pki / "server.key"),
                    "CALLQC_SECURITY__TLS__CLIENT_CA_FILE": str(secrets.ca),
                    "CALLQC_SECURITY__TOKENS__SIGNING_KEY_FILE": str(secrets.signing_key),
                    "CALLQC_SECURITY__AUDIT__HMAC_KEY_FILE": str(secrets.audit_key),
                    "CALLQC_SECURITY__SERVICE_CERTS": json.dumps([{"match": CLI_CLIENT, "subject": CLI_CLIENT}]),
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
        secrets = LocalSecrets(self.home)
        secrets.ensure()
        credentials = S3Credentials.generate()
        s3 = LocalS3Server(
            self.home / "s3data",
            credentials,
            host=host,
            port=int(port or 0) or free_port(),
            log_path=self.logs / "s3.log",
            tls=(secrets.pki / "s3-server.pem", secrets.pki / "server.key"),
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
            gateway_metrics_port=free_port(),
            dispatcher_metrics_port=free_port(),
            pids={"s3": s3_pid},
            ray_tls=self.settings.security.ray_tls,
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
                "secure": True,
                "ca_file": str(LocalSecrets(self.home).ca),
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
                f"--temp-dir={ray_temp_dir(self.home)}",  # so that `down` stops this cluster and no other
                f"--dashboard-port={free_port()}",
                f"--ray-client-server-port={free_port()}",
            ],
            env,
            timeout=120,
        )
        state.pids["ray"] = 0  # stopped by stop_ray_cluster (only this stack's Ray, never others')
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
        state.pids["gateway"] = self._spawn(
            "gateway", [sys.executable, "-m", "callqc.gateway"], self.environment(state, gateway=True)
        )
        self._save_state(state)
        wait_for_port(self.settings.gateway.host, state.gateway_port, timeout=30)

    # -- down ------------------------------------------------------------------------------
    def down(self) -> None:
        state = self.load_state()
        if state is None:
            return
        if "gateway" in state.pids:
            _terminate(state.pids["gateway"])
        if "ray" in state.pids:
            stop_ray_cluster(ray_temp_dir(self.home))
        if "s3" in state.pids:
            _terminate(state.pids["s3"])
        self.state_path.unlink(missing_ok=True)


def client_environment(home: Path, state: StackState) -> dict[str, str]:
    """Settings (as CALLQC_* variables) that point a process at the running local stack."""
    secrets = LocalSecrets(home)
    return {
        "CALLQC_HOME": str(home),
        "CALLQC_S3__ENDPOINT": state.s3_endpoint,
        "CALLQC_S3__ACCESS_KEY": state.access_key,
        "CALLQC_S3__SECRET_KEY": state.secret_key,
        "CALLQC_S3__SECURE": "true",
        "CALLQC_S3__CA_FILE": str(secrets.ca),
        "CALLQC_SECURITY__ENVELOPE__KEYRING_FILE": str(secrets.keyring),
        "CALLQC_SECURITY__AUDIT__HMAC_KEY_FILE": str(secrets.audit_key),
        "CALLQC_GATEWAY__PORT": str(state.gateway_port),
        **(secrets.ray_tls_environment() if state.ray_tls else {}),
    }


def apply_state_to_environment(settings_home: Path) -> bool:
    """Point this process at a running local stack (used by client commands). True if found."""
    path = settings_home / "stack.json"
    if not path.exists():
        return False
    state = StackState(**json.loads(path.read_text()))
    for key, value in client_environment(settings_home, state).items():
        os.environ.setdefault(key, value)
    return True
