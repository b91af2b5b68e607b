"""The isolated decoder: probe, check caps, decode to 16 kHz s16le per channel, under rlimits.

Started by :mod:`callqc.audio_sandbox` as ``python -I audio_worker.py JOB_JSON`` — a standalone
script that imports only the standard library and PyAV, so it starts fast and inherits nothing.
It limits itself (CPU time, address space, output file size, no core dumps) *before* it opens the
untrusted file, opens it with the one demuxer chosen by sniffing the bytes (never FFmpeg's
probing), and writes JSON lines to stdout: first the limits in force, last ``{"ok": true, ...}`` or
``{"ok": false, "code": <CallErrorCode name>, "message": ...}``. Anything worse (a crash, a limit
signal) is read from its exit status by the parent.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import sys
from typing import Any

import av

CODECS = {
    "pcm_s16le", "pcm_s16be", "pcm_u8", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f64le",
    "pcm_alaw", "pcm_mulaw", "adpcm_ms", "adpcm_ima_wav", "gsm_ms",
    "mp3", "mp3float", "mp2", "opus", "libopus", "vorbis", "flac", "amrnb", "amrwb",
    "libopencore_amrnb", "libopencore_amrwb",
}  # fmt: skip
MIN_RATE, MAX_RATE = 4000, 192000
TRUNCATION_SLACK = 0.25  # seconds a decoder may lose at the end of a complete stream
MIN_HEADROOM = 32 << 20  # address space the decoder needs above the interpreter's own


class Fail(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def apply_limits(limits: dict[str, int]) -> dict[str, int]:
    """Lower this process's own limits (never above an existing hard limit); returns what applies."""
    wanted = {
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_CPU: limits["cpu_seconds"],
        resource.RLIMIT_AS: limits["memory_bytes"],
        resource.RLIMIT_FSIZE: limits["output_bytes"],
    }
    for which, value in wanted.items():
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        new_hard = value
        if which == resource.RLIMIT_CPU:  # SIGXCPU at the soft limit, SIGKILL a second later
            new_hard = value + 1 if hard == resource.RLIM_INFINITY else min(value + 1, hard)
        resource.setrlimit(which, (value, new_hard))
    names = {"cpu_seconds": resource.RLIMIT_CPU, "memory_bytes": resource.RLIMIT_AS}
    names["output_bytes"] = resource.RLIMIT_FSIZE
    return {name: resource.getrlimit(which)[0] for name, which in names.items()}


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def probe(container: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Stream parameters from the header only, checked against the caps."""
    streams = container.streams.audio
    if not streams:
        raise Fail("AUDIO_UNDECODABLE", f"the {container.format.name} container holds no audio stream")
    stream = streams[0]
    ctx = stream.codec_context
    info = {
        "format": container.format.name,
        "codec": ctx.name,
        "channels": int(ctx.channels or 0),
        "sample_rate": int(ctx.sample_rate or 0),
        "duration": _duration(container, stream),
    }
    if info["codec"] not in CODECS:
        raise Fail("AUDIO_UNSUPPORTED_FORMAT", f"codec {info['codec']} is not accepted")
    if info["channels"] < 1:
        raise Fail("AUDIO_UNDECODABLE", "the stream declares no channels")
    if info["channels"] > job["max_channels"]:
        raise Fail("AUDIO_TOO_MANY_CHANNELS", f"{info['channels']} channels; the cap is {job['max_channels']}")
    if not MIN_RATE <= info["sample_rate"] <= MAX_RATE:
        raise Fail("AUDIO_UNDECODABLE", f"sample rate {info['sample_rate']} Hz is outside {MIN_RATE}–{MAX_RATE} Hz")
    if info["duration"] is not None and info["duration"] > job["max_duration"]:
        raise Fail("AUDIO_TOO_LONG", f"audio lasts {info['duration']:.0f}s; the cap is {job['max_duration']:.0f}s")
    if job["expected_channels"] is not None and info["channels"] != job["expected_channels"]:
        raise Fail(
            "CHANNEL_MISMATCH",
            f"channel layout {job['layout']} needs {job['expected_channels']} channel(s); the file has "
            f"{info['channels']}",
        )
    return info


class _Damage:
    """Decode errors seen so far and where the demuxer stopped."""

    def __init__(self, file_size: int) -> None:
        self.file_size = file_size
        self.errors = 0
        self.first: tuple[float, str] | None = None
        self.trailing = False  # the most recent packet failed (nothing decoded after it)
        self.last_end = 0  # byte offset just past the last packet read

    def packet(self, packet: Any) -> None:
        if packet.pos is not None and packet.pos >= 0:
            self.last_end = max(self.last_end, packet.pos + packet.size)

    def error(self, seconds: float, err: Exception) -> None:
        self.errors += 1
        self.trailing = True
        if self.first is None:
            self.first = (seconds, _why(err))

    def near_end(self) -> bool:
        return self.file_size - self.last_end <= max(4096, self.file_size // 50)

    def verdict(self, info: dict[str, Any], seconds: float) -> Fail | None:
        """TRUNCATED when the file stops early, UNDECODABLE for damage inside; None when intact."""
        declared = info["duration"]
        short = declared is not None and seconds < declared - TRUNCATION_SLACK
        if self.trailing or (short and self.near_end()):
            said = f" of the {declared:.3f}s it declares" if short else ""
            return Fail("AUDIO_TRUNCATED", f"the stream is cut off: it ends after {seconds:.3f}s{said}")
        if self.errors:
            at, what = self.first or (0.0, "")
            return Fail("AUDIO_UNDECODABLE", f"{self.errors} corrupt packet(s), the first after {at:.3f}s: {what}")
        if short:
            return Fail(
                "AUDIO_UNDECODABLE",
                f"the stream stops at byte {self.last_end} of {self.file_size} after {seconds:.3f}s of the "
                f"{declared:.3f}s it declares (corrupt data)",
            )
        return None


def decode(container: Any, info: dict[str, Any], job: dict[str, Any], file_size: int) -> int:
    """Decode, resample and write one s16le file per channel; returns samples per channel."""
    rate, cap = job["sample_rate"], job["max_duration"]
    stream = container.streams.audio[0]
    stream.codec_context.thread_count = 1  # no decoder threads: their stacks would eat the address space
    layout = "mono" if info["channels"] == 1 else "stereo"
    resampler = av.AudioResampler(format="s16p", layout=layout, rate=rate)
    outs = [open(path, "wb") for path in job["outputs"]]  # noqa: SIM115 - closed below
    damage = _Damage(file_size)
    written = 0

    def emit(frames: list[Any]) -> None:
        nonlocal written
        for frame in frames:
            if written + frame.samples > (cap + 1.0) * rate:
                raise Fail("AUDIO_TOO_LONG", f"audio runs past the {cap:.0f}s cap (its header did not say so)")
            size = frame.samples * 2
            for plane, out in zip(frame.planes, outs, strict=False):
                out.write(memoryview(plane)[:size])
            written += frame.samples

    try:
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as err:  # the demuxer gave up on the bytes
                if isinstance(err, MemoryError):
                    raise
                damage.error(written / rate, err)
                break
            damage.packet(packet)
            try:
                frames = packet.decode()
            except av.error.FFmpegError as err:
                if isinstance(err, MemoryError):
                    raise
                damage.error(written / rate, err)
                continue
            if frames:
                damage.trailing = False
            for frame in frames:
                frame.pts = None
                emit(resampler.resample(frame))
        emit(resampler.resample(None))
    finally:
        for out in outs:
            out.close()
    fail = damage.verdict(info, written / rate)
    if fail is not None and not (job["accept_damaged"] and written):
        raise fail
    if written == 0:
        raise Fail("AUDIO_EMPTY", "audio decodes to no samples")
    return written


def footprint() -> int:
    """This process's address space now (Linux), before it touches the input."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def run(job: dict[str, Any]) -> dict[str, Any]:
    own = footprint()
    wanted = job["limits"]["memory_bytes"]
    if wanted < own + MIN_HEADROOM:
        return {
            "ok": False,
            "code": "AUDIO_DECODE_LIMIT",
            "message": f"decoder memory limit {wanted >> 20} MiB leaves less than {MIN_HEADROOM >> 20} MiB above "
            f"the decoder's own {own >> 20} MiB",
        }
    limits = apply_limits(job["limits"])
    reply: dict[str, Any] = {"limits": limits, "footprint_bytes": own}
    _say(reply)  # first line: the limits in force, even if what follows crashes
    try:
        with av.open(job["input"], mode="r", format=job["demuxer"], metadata_errors="ignore") as container:
            info = probe(container, job)
            reply["probe"] = info
            if not job["probe_only"]:
                reply["samples"] = decode(container, info, job, os.path.getsize(job["input"]))
        reply["ok"] = True
    except Fail as fail:
        reply.update(ok=False, code=fail.code, message=fail.message)
    except (MemoryError, av.error.MemoryError):
        reply.update(ok=False, code="AUDIO_DECODE_LIMIT", message=f"decoder exceeded its memory limit ({_mib(limits)})")
    except OSError as err:
        if err.errno == errno.EFBIG:  # RLIMIT_FSIZE (Python ignores SIGXFSZ)
            message = f"decoded output exceeded its size limit ({limits['output_bytes']} bytes)"
            reply.update(ok=False, code="AUDIO_DECODE_LIMIT", message=message)
        else:
            reply.update(ok=False, code="AUDIO_UNDECODABLE", message=f"not a readable audio file: {_why(err)}")
    except (av.error.FFmpegError, ValueError, EOFError) as err:
        message = f"not a readable {job['demuxer']} file: {_why(err)}"
        reply.update(ok=False, code="AUDIO_UNDECODABLE", message=message)
    reply["max_rss_bytes"] = _peak_rss_bytes()
    return reply


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process since exec (VmHWM). ``ru_maxrss`` would also count the
    parent's image copied at fork, which on Linux survives exec in the accounting."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _why(err: Exception) -> str:
    """FFmpeg's reason without the (temporary, internal) file name."""
    return str(getattr(err, "strerror", None) or err)


def _mib(limits: dict[str, int]) -> str:
    return f"{limits['memory_bytes'] // (1024 * 1024)} MiB address space"


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> int:
    _say(run(json.loads(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
