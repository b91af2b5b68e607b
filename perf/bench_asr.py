"""ASR stage throughput: callqc's batched per-channel transcription vs a naive baseline, same model, same run.

    python perf/bench_asr.py [--rounds 1] [--threads 2] [--workers 2] [--out perf/results]
    python perf/bench_asr.py --device cuda --compute-type float16 --batch-sizes 1,4,8,16,32 --copies 8

* ``baseline``: plain ``WhisperModel.transcribe`` (library defaults: beam 5, no VAD, 30 s windows,
  temperature fallback) of each call's mono mix, one call after another, with the call's language;
* ``callqc``: :meth:`callqc.asr.Transcriber.transcribe_many` on both channels of every call at once,
  as the ASR deployment receives them (VAD, trimmed windows batched across calls and channels,
  word timestamps, Simplified Chinese).

Both load the same model directory on the same device. Reported per system: wall seconds, process
CPU seconds (all threads), real-time factors (RTF = processing time / call audio time) and
throughput; the ratio ``baseline / callqc`` for wall and for CPU time (the machine may be shared:
CPU time is the steadier figure); and accuracy against the ground truth of ``samples/batch.yaml``
(CER for Mandarin, WER for English) so speed is not bought with quality. With ``--batch-sizes``
callqc is measured once per batch size (RTF by batch size, e.g. on a GPU). Writes ``asr.json``
(or ``--name``) and, when matplotlib imports, a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.plotting import pyplot  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from callqc.asr import Transcriber, resolve_model_dir  # noqa: E402
from callqc.settings import AsrSettings  # noqa: E402

TARGET_RATIO = 2.0


@dataclass
class Call:
    call_id: str
    language: str
    duration: float
    channels: list[np.ndarray]  # 16 kHz float32, agent first
    truth: dict[str, str]  # speaker → reference text ("all": every turn in time order)


@dataclass
class Measure:
    name: str
    wall_s: float
    cpu_s: float
    audio_s: float
    error_rate: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def rtf_wall(self) -> float:
        return self.wall_s / self.audio_s

    @property
    def rtf_cpu(self) -> float:
        return self.cpu_s / self.audio_s

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(rtf_wall=self.rtf_wall, rtf_cpu=self.rtf_cpu, audio_s_per_wall_s=1 / self.rtf_wall)
        return out


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_calls(copies: int) -> list[Call]:
    doc = yaml.safe_load((ROOT / "samples" / "batch.yaml").read_text(encoding="utf-8"))
    calls = []
    for entry in doc["calls"]:
        with wave.open(str(ROOT / "samples" / entry["file"])) as w:
            assert w.getframerate() == 16000 and w.getnchannels() == 2, entry["file"]
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
        channels = [pcm[:, i].astype(np.float32) / 32768.0 for i in (0, 1)]
        turns = entry["expected"]["turns"]
        truth = {
            speaker: " ".join(t["text"] for t in turns if t["speaker"] == speaker) for speaker in ("agent", "customer")
        }
        truth["all"] = " ".join(t["text"] for t in turns)
        calls.append(Call(entry["call_id"], entry["language"], len(pcm) / 16000, channels, truth))
    return [c for _ in range(copies) for c in calls]


# ---- accuracy ---------------------------------------------------------------------------------------


def _tokens(text: str, language: str) -> list[str]:
    if language == "zh":
        import opencc

        return list(re.sub(r"[^\w]", "", opencc.OpenCC("t2s").convert(text)))
    return re.sub(r"[^\w' ]+", " ", text.lower()).split()


def _edits(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, row[0] = row[0], i
        for j in range(1, len(b) + 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
    return row[len(b)]


_NUMERALS = re.compile(r"[0-9零〇一二三四五六七八九十百千万亿两]")


def error_rates(pairs: list[tuple[str, str, str]]) -> dict[str, float]:
    """CER (zh) / WER (en) over (language, hypothesis, reference) pairs.

    ``cer_zh_text`` ignores numerals: the truth spells numbers in characters while whisper writes
    either characters or digits (三万五千 / 3万5000), which the rule engine reads alike.
    """
    totals: dict[str, list[int]] = {}
    for language, hyp, ref in pairs:
        keys = ["cer_zh", "cer_zh_text"] if language == "zh" else [f"wer_{language}"]
        for key in keys:
            strip = key == "cer_zh_text"
            ref_tokens = _tokens(_NUMERALS.sub("", ref) if strip else ref, language)
            hyp_tokens = _tokens(_NUMERALS.sub("", hyp) if strip else hyp, language)
            acc = totals.setdefault(key, [0, 0])
            acc[0] += _edits(hyp_tokens, ref_tokens)
            acc[1] += len(ref_tokens)
    return {key: errors / count for key, (errors, count) in totals.items()}


# ---- the two systems --------------------------------------------------------------------------------


def run_baseline(model: Any, calls: list[Call]) -> Measure:
    wall, cpu = time.perf_counter(), _cpu()
    texts = []
    for call in calls:
        mono = np.clip(call.channels[0] + call.channels[1], -1.0, 1.0)
        segments, _info = model.transcribe(mono, language=call.language)
        texts.append(" ".join(s.text for s in segments))
    measure = Measure("baseline", time.perf_counter() - wall, _cpu() - cpu, sum(c.duration for c in calls))
    measure.error_rate = error_rates([(c.language, text, c.truth["all"]) for c, text in zip(calls, texts, strict=True)])
    return measure


def run_callqc(transcriber: Transcriber, calls: list[Call], name: str = "callqc") -> Measure:
    requests = [(channel, call.language) for call in calls for channel in call.channels]
    before = asdict(transcriber.stats)
    wall, cpu = time.perf_counter(), _cpu()
    results = transcriber.transcribe_many(requests)
    measure = Measure(name, time.perf_counter() - wall, _cpu() - cpu, sum(c.duration for c in calls))
    pairs = []
    for index, call in enumerate(calls):
        for offset, speaker in enumerate(("agent", "customer")):
            text = " ".join(s.text for s in results[2 * index + offset])
            pairs.append((call.language, text, call.truth[speaker]))
    measure.error_rate = error_rates(pairs)
    after = asdict(transcriber.stats)
    measure.detail = {k: after[k] - before[k] for k in after}
    measure.detail["segments"] = sum(len(r) for r in results)
    return measure


def best(measures: list[Measure]) -> Measure:
    """The round with the least CPU time (the least disturbed by other work on the machine)."""
    return min(measures, key=lambda m: m.cpu_s)


# ---- main -------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="paired baseline/callqc rounds, order alternating")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="baseline intra-op threads")
    parser.add_argument("--cpu-threads", type=int, default=1, help="callqc threads per batch")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="callqc batches at once")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--batch-sizes", default="8", help="comma list of windows per batch; the largest is compared")
    parser.add_argument("--copies", type=int, default=1, help="repeat the sample calls (bigger batches)")
    parser.add_argument("--model-dir", default="", help="faster-whisper model dir (default: bundled whisper base)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    parser.add_argument("--name", default="asr", help="output file stem")
    args = parser.parse_args()

    sizes = sorted({int(x) for x in args.batch_sizes.split(",") if x.strip()}, reverse=True)  # largest first
    settings = AsrSettings(
        model_dir=args.model_dir,
        device=args.device,
        compute_type=args.compute_type,
        cpu_threads=args.cpu_threads,
        num_workers=args.workers,
        batch_size=sizes[0],
        trim_windows=args.device == "cpu",
    )
    model_dir = resolve_model_dir(settings)
    calls = load_calls(args.copies)
    audio_s = sum(c.duration for c in calls)
    print(f"{len(calls)} calls, {audio_s:.1f} s of audio, {2 * len(calls)} channels; model {model_dir}")
    load_before = os.getloadavg()

    transcriber = Transcriber(settings, model_dir)
    transcriber.transcribe_many([(calls[0].channels[0][: 16000 * 3], calls[0].language)])  # warm-up
    baseline_model = None
    if not args.skip_baseline:
        from faster_whisper import WhisperModel

        baseline_model = WhisperModel(
            str(model_dir), device=transcriber.device, compute_type=transcriber.compute_type, cpu_threads=args.threads
        )
        baseline_model.transcribe(calls[0].channels[0][: 16000 * 3], language=calls[0].language)  # warm-up

    base_runs: list[Measure] = []
    ours_runs: list[Measure] = []
    sweep: dict[int, Measure] = {}
    for round_index in range(args.rounds):
        order = ["baseline", "callqc"] if round_index % 2 == 0 else ["callqc", "baseline"]
        for system in order:
            if system == "baseline" and baseline_model is not None:
                base_runs.append(run_baseline(baseline_model, calls))
                last = base_runs[-1]
            elif system == "callqc":
                ours_runs.append(run_callqc(transcriber, calls))
                last = ours_runs[-1]
            else:
                continue
            print(f"  round {round_index + 1} {system:8s}: {last.wall_s:6.1f} s wall, {last.cpu_s:6.1f} s CPU")
    for size in sizes[1:]:
        transcriber.settings = transcriber.decoder.settings = settings.model_copy(update={"batch_size": size})
        sweep[size] = run_callqc(transcriber, calls, name=f"callqc-batch{size}")
        print(f"  batch {size}: {sweep[size].wall_s:.1f} s wall, RTF {sweep[size].rtf_wall:.4f}")
    ours = best(ours_runs)
    sweep = {sizes[0]: ours, **sweep}

    result: dict[str, Any] = {
        "benchmark": "asr",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "settings": {
            "device": transcriber.device,
            "compute_type": transcriber.compute_type,
            "baseline_threads": args.threads,
            "callqc_cpu_threads": args.cpu_threads,
            "callqc_workers": args.workers,
            "batch_sizes": sizes,
            "model": transcriber.version,
            "rounds": args.rounds,
            "copies": args.copies,
        },
        "audio_seconds": audio_s,
        "callqc": ours.summary(),
        "rtf_by_batch_size": {str(k): {"rtf_wall": m.rtf_wall, "rtf_cpu": m.rtf_cpu} for k, m in sweep.items()},
        "target_ratio": TARGET_RATIO,
    }
    print()
    print(f"{'system':10s} {'wall s':>8s} {'CPU s':>8s} {'RTF wall':>9s} {'RTF CPU':>8s}  accuracy")
    rows = [ours] + ([best(base_runs)] if base_runs else [])
    for m in rows:
        acc = " ".join(f"{k}={v:.3f}" for k, v in sorted(m.error_rate.items()))
        print(f"{m.name:10s} {m.wall_s:8.1f} {m.cpu_s:8.1f} {m.rtf_wall:9.4f} {m.rtf_cpu:8.4f}  {acc}")
    if base_runs:
        # rounds are paired (the two systems run back to back), so load on a shared machine cancels out
        walls = sorted(b.wall_s / o.wall_s for b, o in zip(base_runs, ours_runs, strict=True))
        cpus = sorted(b.cpu_s / o.cpu_s for b, o in zip(base_runs, ours_runs, strict=True))
        result["baseline"] = best(base_runs).summary()
        result["ratio_wall"] = statistics.median(walls)
        result["ratio_cpu"] = statistics.median(cpus)
        result["ratio_wall_rounds"] = walls
        result["ratio_cpu_rounds"] = cpus
        result["meets_target"] = result["ratio_wall"] >= TARGET_RATIO
        print(
            f"\nthroughput vs baseline (median of {len(walls)} paired rounds): {result['ratio_wall']:.2f}x wall, "
            f"{result['ratio_cpu']:.2f}x CPU time; target {TARGET_RATIO:.1f}x: "
            f"{'met' if result['meets_target'] else 'NOT met'}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    plot(result, args.out / f"{args.name}.png")
    return 0


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = ["callqc"] + (["baseline"] if "baseline" in result else [])
    width = 0.35
    xs = np.arange(len(names))
    left.bar(xs - width / 2, [result[n]["rtf_wall"] for n in names], width, label="wall")
    left.bar(xs + width / 2, [result[n]["rtf_cpu"] for n in names], width, label="CPU time")
    left.set_xticks(xs, names)
    left.set_ylabel("real-time factor (lower is faster)")
    left.legend()
    if "ratio_wall" in result:
        left.set_title(f"{result['ratio_wall']:.2f}x throughput, {result['ratio_cpu']:.2f}x CPU time vs baseline")
    sizes = sorted(result["rtf_by_batch_size"], key=int)
    if len(sizes) > 1:
        right.plot([int(s) for s in sizes], [result["rtf_by_batch_size"][s]["rtf_wall"] for s in sizes], marker="o")
        right.set_xscale("log", base=2)
        right.set_xlabel("batch size (windows)")
        right.set_ylabel("RTF (wall)")
    elif "ratio_wall_rounds" in result:
        rounds = np.arange(1, len(result["ratio_wall_rounds"]) + 1)
        right.bar(rounds - width / 2, result["ratio_wall_rounds"], width, label="wall")
        right.bar(rounds + width / 2, result["ratio_cpu_rounds"], width, label="CPU time")
        right.axhline(result["target_ratio"], color="grey", linestyle="--", label="target")
        right.set_xticks(rounds)
        right.set_xlabel("paired round (sorted)")
        right.set_ylabel("baseline time / callqc time")
        right.legend()
    setup = result["settings"]
    right.set_title(f"{setup['device']} {setup['compute_type']}, {setup['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path.name}")


if __name__ == "__main__":
    sys.exit(main())
