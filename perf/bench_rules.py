"""Rule engine throughput: one combined matcher vs a naive per-rule ``re.search`` loop.

    python perf/bench_rules.py [--mb 4] [--seed 7] [--out perf/results]

Builds a deterministic synthetic corpus of collection-call transcripts (mostly ordinary talk, a few
violations and customer signals, some English calls), then measures on one core, in one run:

* ``scan``      the combined matcher (Hyperscan, or Aho-Corasick) over each call's normalised text;
* ``evaluate``  ``RuleEngine.evaluate`` end to end (normalisation, scan, guards, findings);
* ``naive``     for each call, for each rule, ``re.search`` of one alternation of that rule's phrases
                and regexes over the same normalised text;

for the default pack and for a synthetic pack of ≥ 1,000 patterns. Prints a table with MB/s and
ratios, writes ``rules.json`` and (when matplotlib imports) ``rules.png``.
MB/s counts the UTF-8 bytes of the original transcript text.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callqc.models import CallMetadata, Ledger, Transcript
from callqc.rules import RuleEngine, RulePack, default_pack_path, load_rule_pack
from callqc.rules.context import CallText
from callqc.rules.matcher import hyperscan_available
from callqc.rules.records import transcript_from_turns
from callqc.rules.regexcheck import REGEX_FLAGS, fold_regex
from callqc.textnorm import normalize_text

TARGET_MBPS = 100.0
TARGET_RATIO = 50.0

# --- synthetic corpus -------------------------------------------------------------------------

_SURNAMES = "张王李赵刘陈杨黄周吴徐孙马朱胡郭何林罗高"
_INSTITUTIONS = ["某某消费金融", "安信消费金融", "华融银行信用卡中心", "快贷平台", "诚意金融"]
_INTRO = [
    "您好，我是{inst}的贷后专员，工号{id}，本次通话将被录音，来电是关于您名下贷款的事情。",
    "您好，这里是{inst}，我是客服{name}，工号{id}，通话全程录音，跟您核对一下借款的情况。",
    "喂，您好，我是{inst}的，找一下{cust}。",
]
_VERIFY = ["请问是{cust}本人吗？", "麻烦您核对一下身份证后四位。", "请问您是{cust}先生吗？"]
_AGENT = [
    "您目前已逾期{days}天，欠款{amt}，请您尽快处理。",
    "截至今天，您应还{amt}，逾期{days}天。",
    "请您通过官方App或者对公账户还款，不要转给任何个人。",
    "您这边大概什么时候能处理呢？",
    "我理解您的难处，我们可以帮您申请分期。",
    "如果今天处理不了，明天下午五点前可以吗？",
    "逾期会影响您的个人征信，建议您尽快还款。",
    "您可以先还一部分，剩下的我们再协商。",
    "好的，我这边帮您备注一下，稍后会有短信提醒。",
    "您的异议我已经记录，会转给专人核实。",
    "我们的还款渠道只有官方App和对公账户。",
    "请问您现在方便说话吗？",
    "那我们约定一下还款时间吧。",
    "您放心，我们不会上门，也不会联系您的家人。",
]
_AGENT_BAD = [
    "你这个老赖，再不还钱就让你身败名裂。",
    "不还的话今晚上门收拾你。",
    "我会给你通讯录每个人打电话。",
    "你直接转我个人微信就行。",
    "不还就抓你坐牢。",
    "你去网贷借点先还我们。",
]
_CUSTOMER = [
    "嗯，我知道了。",
    "我最近手头确实比较紧张，工资还没发。",
    "能不能宽限几天？",
    "我这个月底应该可以还一部分。",
    "你们每天都打电话，我也很烦。",
    "好的，我明天去App上看一下。",
    "利息怎么这么高啊？",
    "我现在在上班，不太方便。",
    "行，那就这样吧。",
    "我会想办法的，你们别着急。",
]
_CUSTOMER_SIGNAL = ["我不想活了。", "我要打12378投诉你们。", "这笔我没借过。", "我在医院住院呢。", "晚上别打了。"]
_CLOSE = ["感谢您的接听，再见。", "好的，那就不打扰您了，祝您生活愉快，再见。", "嗯，那先这样。"]
_EN_AGENT = [
    "Hello, this is {name} calling from Acme Finance, employee ID {id}, this call is recorded.",
    "Am I speaking with {cust}?",
    "You are overdue for {days} days and the amount due is {num} yuan.",
    "Please pay through the official app only.",
    "I understand, we can discuss an instalment plan.",
    "Thank you for your time, goodbye.",
]
_EN_CUSTOMER = ["Okay, I see.", "I lost my job last month.", "Can you call back later?", "I will pay next week."]
_CN_AMOUNTS = {
    "三万五千元": 35000,
    "3.5万": 35000,
    "35,000元": 35000,
    "两万元": 20000,
    "一万二千元": 12000,
    "8000元": 8000,
}


def _call_turns(rng: random.Random) -> tuple[list[tuple[str, str]], str, dict[str, str]]:
    fill = {
        "inst": rng.choice(_INSTITUTIONS),
        "id": str(rng.randint(1000, 9999)),
        "name": rng.choice(_SURNAMES) + "经理",
        "cust": rng.choice(_SURNAMES) + "先生",
        "days": str(rng.randint(1, 120)),
        "amt": rng.choice(list(_CN_AMOUNTS)),
        "num": str(rng.randint(1000, 90000)),
    }
    if rng.random() < 0.1:
        turns = [("agent", t.format(**fill)) for t in _EN_AGENT[:3]]
        for _ in range(rng.randint(10, 30)):
            pool = _EN_AGENT[3:5] if rng.random() < 0.5 else _EN_CUSTOMER
            turns.append(("agent" if pool is not _EN_CUSTOMER else "customer", rng.choice(pool).format(**fill)))
        turns.append(("agent", _EN_AGENT[5]))
        return turns, "en", fill
    turns = [("agent", rng.choice(_INTRO).format(**fill))]
    if rng.random() < 0.8:
        turns.append(("agent", rng.choice(_VERIFY).format(**fill)))
        turns.append(("customer", "是我，什么事？"))
    for _ in range(rng.randint(30, 90)):
        if rng.random() < 0.5:
            text = rng.choice(_AGENT_BAD) if rng.random() < 0.02 else rng.choice(_AGENT)
            turns.append(("agent", text.format(**fill)))
        else:
            text = rng.choice(_CUSTOMER_SIGNAL) if rng.random() < 0.03 else rng.choice(_CUSTOMER)
            turns.append(("customer", text))
    turns.append(("agent", rng.choice(_CLOSE)))
    return turns, "zh", fill


@dataclass
class Call:
    transcript: Transcript
    metadata: CallMetadata
    nbytes: int


def make_corpus(megabytes: float, seed: int) -> list[Call]:
    rng = random.Random(seed)
    calls: list[Call] = []
    total = 0
    while total < megabytes * 1e6:
        turns, lang, fill = _call_turns(rng)
        transcript = transcript_from_turns(turns, language=lang, call_id=f"c{len(calls)}")
        amount = _CN_AMOUNTS[fill["amt"]] if lang == "zh" else float(fill["num"])
        if rng.random() < 0.1:  # one call in ten misstates the debt
            amount *= 2
        ledger = Ledger(amount_due=amount, overdue_days=int(fill["days"]))
        metadata = CallMetadata(attempts_today=rng.randint(1, 8), ledger=ledger)
        nbytes = sum(len(s.text.encode("utf-8")) for s in transcript.segments)
        calls.append(Call(transcript, metadata, nbytes))
        total += nbytes
    return calls


# --- packs ----------------------------------------------------------------------------------

_COMMON = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种"
    "面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本"
    "去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比"
    "或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总"
    "次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做"
    "必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权"
    "收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信"
    "马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连"
    "断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存"
    "候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"
)


def synthetic_pack(n_rules: int = 55, per_rule: int = 19, seed: int = 11) -> str:
    """YAML of a keyword pack with n_rules × (per_rule phrases + 1 regex) ≥ 1,000 patterns."""
    rng = random.Random(seed)
    lines = ['version: "0.0.1-synthetic"', "rules:"]
    seen: set[str] = set()
    for r in range(n_rules):
        phrases = []
        while len(phrases) < per_rule:
            word = "".join(rng.choice(_COMMON) for _ in range(rng.randint(2, 4)))
            if word not in seen:
                seen.add(word)
                phrases.append(word)
        a, b = rng.choice(_COMMON), rng.choice(_COMMON)
        lines += [
            f"  - id: S{r:03d}",
            f"    name: synthetic {r}",
            "    type: keyword",
            "    severity: S2",
            "    category: synthetic",
            "    scope: any",
            f"    phrases: [{', '.join(phrases)}]",
            f"    regexes: ['{a}.{{0,3}}{b}']",
        ]
    return "\n".join(lines) + "\n"


# --- measurements ---------------------------------------------------------------------------


def _naive_rules(pack: RulePack) -> list[re.Pattern[str]]:
    """One alternation per rule of its trigger phrases and regexes (what a simple loop would do)."""
    compiled = []
    for rule in pack.rules:
        parts = [re.escape(normalize_text(p)) for p in rule.phrases]
        parts += [fold_regex(r) for r in rule.regexes]
        for group in rule.groups:
            parts += [re.escape(normalize_text(p)) for p in group.phrases] + [fold_regex(r) for r in group.regexes]
        if parts:
            compiled.append(re.compile("|".join(f"(?:{p})" for p in parts), REGEX_FLAGS))
    return compiled


def _noop(*_args: object) -> None:
    return None


def _timed(fn, calls: list[Call], min_seconds: float) -> tuple[float, int]:
    """Run ``fn`` over calls (repeating the corpus) for at least ``min_seconds``: (MB/s, bytes)."""
    done = 0
    start = time.process_time()
    while True:
        for call in calls:
            fn(call)
            done += call.nbytes
            if done >= 2e5 and time.process_time() - start >= min_seconds:
                return done / (time.process_time() - start) / 1e6, done
        if time.process_time() - start >= min_seconds:
            return done / (time.process_time() - start) / 1e6, done


def measure(label: str, pack: RulePack, calls: list[Call], min_seconds: float, backend: str) -> dict[str, object]:
    engine = RuleEngine(pack, backend=backend)
    texts = {id(c): CallText(c.transcript, with_phonetic=engine._compiled.has_phonetic) for c in calls}
    prepared = {key: (t.buffer, t.buffer_byte_offsets()) for key, t in texts.items()}
    matcher = engine._matcher
    naive = _naive_rules(pack)

    def scan(call: Call) -> None:
        matcher.scan(*prepared[id(call)])

    def evaluate(call: Call) -> None:
        engine.evaluate(call.transcript, call.metadata)

    def naive_loop(call: Call) -> None:
        text = texts[id(call)].text
        for rx in naive:
            rx.search(text)

    raw_mbps = None
    if engine.backend == "hyperscan":  # the floor: Hyperscan over each call, a no-op Python callback per match
        db, scratch = matcher._db, matcher._scratch()  # the benchmark looks inside on purpose
        encoded = {key: buf.encode("utf-8") for key, (buf, _) in prepared.items()}

        def raw_scan(call: Call) -> None:
            db.scan(encoded[id(call)], match_event_handler=_noop, scratch=scratch)

        raw_mbps, _ = _timed(raw_scan, calls, min_seconds)
    scan_mbps, _ = _timed(scan, calls, min_seconds)
    eval_mbps, _ = _timed(evaluate, calls, min_seconds)
    naive_mbps, naive_bytes = _timed(naive_loop, calls, min_seconds)
    return {
        "pack": label,
        "pack_version": pack.version,
        "rules": len(pack.rules),
        "patterns": engine.pattern_count,
        "backend": engine.backend,
        "hyperscan_raw_mbps": round(raw_mbps, 2) if raw_mbps is not None else None,
        "scan_mbps": round(scan_mbps, 2),
        "evaluate_mbps": round(eval_mbps, 2),
        "naive_mbps": round(naive_mbps, 3),
        "naive_bytes_measured": naive_bytes,
        "scan_vs_naive": round(scan_mbps / naive_mbps, 1),
        "evaluate_vs_naive": round(eval_mbps / naive_mbps, 1),
    }


def _table(rows: list[dict[str, object]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        for row in rows:
            print(row)
        return
    table = Table(title=f"rule engine throughput (targets: ≥ {TARGET_MBPS:g} MB/s, ≥ {TARGET_RATIO:g}× naive)")
    columns = (
        "pack",
        "patterns",
        "backend",
        "raw MB/s",
        "scan MB/s",
        "evaluate MB/s",
        "naive MB/s",
        "scan ×",
        "eval ×",
    )
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        raw = r["hyperscan_raw_mbps"]
        table.add_row(
            str(r["pack"]),
            str(r["patterns"]),
            str(r["backend"]),
            "-" if raw is None else f"{raw:.1f}",
            f"{r['scan_mbps']:.1f}",
            f"{r['evaluate_mbps']:.1f}",
            f"{r['naive_mbps']:.2f}",
            f"{r['scan_vs_naive']:.0f}×",
            f"{r['evaluate_vs_naive']:.0f}×",
        )
    Console(width=120).print(table)


def _plot(rows: list[dict[str, object]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    kinds = ("scan_mbps", "evaluate_mbps", "naive_mbps")
    width = 0.25
    for k, kind in enumerate(kinds):
        ax.bar([i + k * width for i in range(len(rows))], [float(r[kind]) for r in rows], width, label=kind)
    ax.set_xticks([i + width for i in range(len(rows))], [str(r["pack"]) for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("MB/s (log)")
    ax.axhline(TARGET_MBPS, linestyle="--", color="grey")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="corpus size in MB of transcript text")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum time per measurement")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)

    t0 = time.process_time()
    calls = make_corpus(args.mb, args.seed)
    corpus_mb = sum(c.nbytes for c in calls) / 1e6
    print(f"corpus: {len(calls)} calls, {corpus_mb:.2f} MB, built in {time.process_time() - t0:.1f}s")
    packs = {"default": load_rule_pack(default_pack_path()), "synthetic": load_rule_pack(synthetic_pack())}
    backends = ["hyperscan", "aho-corasick"] if hyperscan_available() else ["aho-corasick"]
    rows = [measure(label, pack, calls, args.seconds, backend) for backend in backends for label, pack in packs.items()]
    _table(rows)
    main_rows = [r for r in rows if r["backend"] == backends[0]]
    ok = all(float(r["scan_mbps"]) >= TARGET_MBPS and float(r["scan_vs_naive"]) >= TARGET_RATIO for r in main_rows)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "corpus": {"calls": len(calls), "megabytes": round(corpus_mb, 3), "seed": args.seed},
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "targets": {"mbps": TARGET_MBPS, "ratio": TARGET_RATIO, "met_by_scan": ok},
        "results": rows,
    }
    (args.out / "rules.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    plotted = _plot(rows, args.out / "rules.png")
    plot_note = f" and {args.out / 'rules.png'}" if plotted else " (matplotlib not installed: no plot)"
    print(f"wrote {args.out / 'rules.json'}{plot_note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
