"""LLM judge throughput: calls batched into the engine vs one call at a time, same engine, same run.

    python perf/bench_judge.py [--models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b] [--calls 4] [--n-parallel 4]
                               [--threads 2] [--engine xllamacpp|vllm] [--max-tokens 512] [--out perf/results]

For each model: load the engine once (load seconds), judge one warm-up call that is not measured (the shared
system prompt enters the prefix cache, as in a running replica; each measured call still pays its own
transcript's prompt), then
* ``one_at_a_time``: ``Judge.review_many([call])`` for each call in turn (one request in flight);
* ``batched``: ``Judge.review_many(calls)`` (every chunk of every call in one ``complete_many``: llama.cpp
  slots decode together; vLLM continuous batching).
Reported: wall seconds, calls/s, seconds per call, prompt and completion tokens, completion tokens/s,
all tokens/s, judge statuses. Calls are Mandarin collection calls (threat, polite, third party, distressed
customer) with the rule engine's findings as candidates. Writes ``judge.json`` (or ``--name``) and a PNG.
The machine may be shared: compare the two modes within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.plotting import pyplot  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from callqc.judge import JudgeSettings  # noqa: E402
from callqc.judge.engines import JudgeEngineError, make_engine  # noqa: E402
from callqc.judge.judge import Judge  # noqa: E402
from callqc.models import CallMetadata, Finding, Ledger, Transcript  # noqa: E402
from callqc.rules import RuleEngine, default_pack_path, load_rule_pack, transcript_from_turns  # noqa: E402

CALLS: list[list[tuple[str, str]]] = [
    [
        ("agent", "您好，我是某某消费金融贷后专员，工号1234，来电是关于您名下贷款。"),
        ("agent", "请问是张三先生本人吗？"),
        ("customer", "是我，什么事？"),
        ("agent", "你已经逾期三十天，欠款三万元，今天必须还。"),
        ("customer", "我最近失业了，真的拿不出来。"),
        ("agent", "拿不出来？那我就找人去你家，让你全村都知道你欠钱不还。"),
        ("customer", "你这是威胁我，我要打12378投诉你们。"),
        ("agent", "随便你投诉，出门小心点。"),
    ],
    [
        ("agent", "您好，我是某某银行信用卡中心的王敏，工号5678，本次通话将被录音。"),
        ("agent", "请问是李华女士本人吗？麻烦核对一下身份证后四位。"),
        ("customer", "是我，后四位是1023。"),
        ("agent", "谢谢。截至今天，您的账单逾期十五天，应还五千二百元。"),
        ("customer", "我下周发工资就还，可以吗？"),
        ("agent", "可以的，请通过官方App或对公账户还款，不要转给任何个人账户。"),
        ("customer", "好的，知道了。"),
        ("agent", "感谢接听，祝您生活愉快，再见。"),
    ],
    [
        ("agent", "喂，是赵强吗？"),
        ("customer", "我不是他，我是他妈妈，他不在家。"),
        ("agent", "你儿子欠我们两万块钱不还，你替他还吧。"),
        ("customer", "我不知道这个事情，你们找他本人。"),
        ("agent", "你不还，我们就天天打电话，打到你们单位领导那里去。"),
        ("customer", "你们不要再打了。"),
    ],
    [
        ("agent", "您好，我是某某消费金融的贷后专员，工号3321，来电是关于您的借款。"),
        ("agent", "请问是陈先生本人吗？"),
        ("customer", "是我。我现在住院了，家里也没钱了，真的不想活了。"),
        ("agent", "您先别着急，身体最重要，我们可以帮您申请延期还款。"),
        ("customer", "这笔钱我已经还清了，金额不对。"),
        ("agent", "您的异议我已记录，会转专人核实后再联系您。"),
        ("agent", "感谢接听，再见。"),
    ],
]


# Warms the engine up (the shared system prompt enters the prefix cache) without being measured: a measured
# call that repeated it would find its whole prompt cached, which no call in production does.
WARM_UP: list[tuple[str, str]] = [
    ("agent", "您好，我是某某银行信用卡中心的客服，工号2468，本次通话将被录音。"),
    ("agent", "请问是周先生本人吗？"),
    ("customer", "是的。"),
    ("agent", "提醒您本月账单明天到期，请按时还款，感谢接听，再见。"),
]


def make_calls(
    count: int, calls: list[list[tuple[str, str]]] = CALLS
) -> list[tuple[Transcript, CallMetadata, list[Finding]]]:
    pack = load_rule_pack(default_pack_path())
    rules = RuleEngine(pack)
    out = []
    for i in range(count):
        turns = calls[i % len(calls)]
        transcript = transcript_from_turns(
            [{"speaker": s, "text": t, "id": f"s{n:04d}"} for n, (s, t) in enumerate(turns, start=1)], "zh"
        )
        metadata = CallMetadata(ledger=Ledger(amount_due=30000, overdue_days=30))
        out.append((transcript, metadata, rules.evaluate(transcript, metadata)))
    return out


def measure(judge: Judge, calls: list, batched: bool) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        results = judge.review_many(calls) if batched else [r for call in calls for r in judge.review_many([call])]
    except JudgeEngineError as err:  # e.g. the timeout: recorded, not a crash of the whole benchmark
        return {"wall_s": round(time.perf_counter() - started, 2), "calls": len(calls), "engine_error": str(err)}
    wall = time.perf_counter() - started
    prompt = sum(s.prompt_tokens for _f, s in results)
    completion = sum(s.completion_tokens for _f, s in results)
    return {
        "wall_s": round(wall, 2),
        "calls": len(calls),
        "calls_per_s": round(len(calls) / wall, 4),
        "seconds_per_call": round(wall / len(calls), 2),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "completion_tokens_per_s": round(completion / wall, 2),
        "all_tokens_per_s": round((prompt + completion) / wall, 2),
        "statuses": [s.status for _f, s in results],
        "errors": [s.error for _f, s in results if s.error],
    }


def run_model(model: str, args: argparse.Namespace, calls: list, warm_up: list) -> dict[str, Any]:
    settings = JudgeSettings(
        engine=args.engine,
        model=model,
        threads=args.threads,
        n_parallel=args.n_parallel,
        max_num_seqs=max(args.n_parallel, 2),
        max_tokens=args.max_tokens,
        ctx_size=args.ctx_size,
    )
    started = time.perf_counter()
    engine = make_engine(settings)
    load = time.perf_counter() - started
    assert engine is not None
    try:
        judge = Judge(engine, load_rule_pack(default_pack_path()), settings)
        print(f"{model}: loaded in {load:.1f} s; warm-up call", flush=True)
        warm = measure(judge, warm_up, batched=True)  # fills the prefix cache once, like a running replica
        print(f"{model}: warm-up {json.dumps(warm, ensure_ascii=False)}", flush=True)
        one = measure(judge, calls, batched=False)
        print(f"{model}: one at a time {json.dumps(one, ensure_ascii=False)}", flush=True)
        many = measure(judge, calls, batched=True)
        print(f"{model}: batched {json.dumps(many, ensure_ascii=False)}", flush=True)
    finally:
        engine.close()
    return {
        "model": engine.model_version,
        "engine": args.engine,
        "load_s": round(load, 2),
        "prompt_version": judge.prompt_version,
        "warm_up": warm,
        "one_at_a_time": one,
        "batched": many,
        "speedup_calls_per_s": round(many["calls_per_s"] / one["calls_per_s"], 2)
        if "calls_per_s" in many and "calls_per_s" in one
        else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    parser.add_argument("--engine", default="xllamacpp", choices=["xllamacpp", "vllm"])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--n-parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--ctx-size", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    parser.add_argument("--name", default="judge")
    args = parser.parse_args()
    calls, warm_up = make_calls(args.calls), make_calls(1, [WARM_UP])
    result: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_1m": os.getloadavg()[0]},
        "models": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name}.json"
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        result["models"][model] = run_model(model, args, calls, warm_up)  # one engine alive at a time
        result["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
        path.write_text(json.dumps(result, indent=1, ensure_ascii=False))  # after each model: partial runs count
    print(json.dumps(result, indent=1, ensure_ascii=False))
    print(f"wrote {path}")
    plot(result, args.out / f"{args.name}.png")
    return 0


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    models = list(result["models"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.35
    xs = list(range(len(models)))
    for offset, mode in ((-width / 2, "one_at_a_time"), (width / 2, "batched")):
        left.bar(
            [x + offset for x in xs], [result["models"][m][mode]["calls_per_s"] for m in models], width, label=mode
        )
        right.bar(
            [x + offset for x in xs],
            [result["models"][m][mode].get("completion_tokens_per_s", 0) for m in models],
            width,
            label=mode,
        )
    for ax, label in ((left, "calls / s"), (right, "completion tokens / s")):
        ax.set_xticks(xs, models)
        ax.set_ylabel(label)
        ax.legend()
    setup = result["settings"]
    left.set_title(f"{setup['engine']}, {setup['threads']} threads, {setup['n_parallel']} slots")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path.name}")


if __name__ == "__main__":
    sys.exit(main())
