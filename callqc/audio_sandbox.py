"""Run the decoder (:mod:`callqc.audio_worker`) in a child process with limits, and read its fate.

The child gets a clean environment (no S3 keys, no keyring), its own session (so a timeout kills
everything it started), and limits itself before touching the input. Whatever happens to it — a
reply, a crash, a CPU-time or memory limit, a wall-clock timeout — becomes either its JSON reply or
a precise :class:`AudioError`; the serving process never decodes untrusted bytes itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callqc.audio_sniff import AudioError
from callqc.errors import CallErrorCode

WORKER = Path(__file__).with_name("audio_worker.py")
_STDERR_TAIL = 2000
_CHILD_ENV = {
    "PATH": os.defpath,
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_bytes: int
    output_bytes: int  # per file written
    timeout_seconds: float

    def for_child(self) -> dict[str, int]:
        return {"cpu_seconds": self.cpu_seconds, "memory_bytes": self.memory_bytes, "output_bytes": self.output_bytes}


@dataclass
class WorkerRun:
    """What one decoder process did: its reply (if any), its exit, its resource use."""

    returncode: int
    cpu_seconds: float
    max_rss_bytes: int
    timed_out: bool
    reply: dict[str, Any] = field(default_factory=dict)
    applied_limits: dict[str, int] = field(default_factory=dict)  # what the child reported before the input
    stderr_tail: str = ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify(run: WorkerRun, limits: Limits) -> AudioError | None:
    """None when the child replied ok; otherwise the per-call error its exit means."""
    limit = CallErrorCode.AUDIO_DECODE_LIMIT
    if run.timed_out:
        return AudioError(limit, f"decoder timed out after {limits.timeout_seconds:g}s and was killed")
    code = run.returncode
    if code < 0:
        sig = -code
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and run.cpu_seconds >= limits.cpu_seconds):
            return AudioError(limit, f"decoder exceeded its CPU-time limit of {limits.cpu_seconds}s")
        if sig == signal.SIGXFSZ:
            return AudioError(limit, f"decoded output exceeded its size limit of {limits.output_bytes} bytes")
        if sig == signal.SIGKILL:
            return AudioError(limit, "decoder was killed (SIGKILL; out of memory?)")
        return AudioError(CallErrorCode.AUDIO_UNDECODABLE, f"decoder crashed with {_signal_name(sig)} on this input")
    if code != 0 or not run.reply:
        if "MemoryError" in run.stderr_tail:
            mib = limits.memory_bytes // (1024 * 1024)
            return AudioError(limit, f"decoder exceeded its memory limit ({mib} MiB address space)")
        last = run.stderr_tail.strip().splitlines()[-1:] or ["no output"]
        return AudioError(CallErrorCode.AUDIO_UNDECODABLE, f"decoder failed (exit {code}): {last[0][:300]}")
    if run.reply.get("ok"):
        return None
    try:
        error_code = CallErrorCode(run.reply.get("code", ""))
    except ValueError:
        error_code = CallErrorCode.AUDIO_UNDECODABLE
    return AudioError(error_code, str(run.reply.get("message") or "decoder refused the input"))


def _read_tail(path: Path, size: int) -> str:
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - size))
        return fh.read().decode("utf-8", "replace")


def _wait(pid: int, timeout: float) -> tuple[bool, int, Any]:
    """Wait for ``pid`` (killing its session at the timeout): (timed out, exit code, rusage or None)."""
    deadline = time.monotonic() + timeout
    timed_out, delay = False, 0.002
    try:
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                return timed_out, os.waitstatus_to_exitcode(status), usage
            if time.monotonic() >= deadline and not timed_out:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                delay = 0.002
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    except ChildProcessError:  # someone else reaped it (a SIGCHLD handler): the reply file still tells
        return timed_out, 0, None


def run_worker(job: dict[str, Any], limits: Limits, workdir: Path) -> WorkerRun:
    """Start the worker on ``job`` in ``workdir`` and wait for it (or kill it at the timeout)."""
    job = {**job, "limits": limits.for_child()}
    out_path, err_path = workdir / "worker.out", workdir / "worker.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(  # fixed argv: this interpreter and our own script
            [sys.executable, "-I", str(WORKER), json.dumps(job)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=workdir,
            env=_CHILD_ENV,
            start_new_session=True,
            close_fds=True,
        )
    timed_out, returncode, usage = _wait(proc.pid, limits.timeout_seconds)
    proc.returncode = returncode  # reaped here (wait4 gives its rusage): keep Popen from waiting again
    lines = _json_lines(out_path.read_bytes())
    reply = next((line for line in reversed(lines) if "ok" in line), {})
    applied = next((line["limits"] for line in lines if "limits" in line), {})
    return WorkerRun(
        returncode=returncode,
        cpu_seconds=usage.ru_utime + usage.ru_stime if usage else 0.0,
        # the worker's own peak (VmHWM); the kernel's ru_maxrss of a child also counts the forked parent image
        max_rss_bytes=int(reply.get("max_rss_bytes") or (usage.ru_maxrss * 1024 if usage else 0)),
        timed_out=timed_out,
        reply=reply,
        applied_limits=applied,
        stderr_tail=_read_tail(err_path, _STDERR_TAIL),
    )


def _json_lines(raw: bytes) -> list[dict[str, Any]]:
    """The worker's JSON lines (a crash may leave a partial last line: skipped)."""
    out = []
    for line in raw.splitlines()[:16]:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
