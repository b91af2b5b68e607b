"""Rule engine throughput: the batched recall scan and evaluation vs naive per-rule regex loops.

    python perf/bench_rules.py [--mb 4] [--seed 7] [--batch 256] [--out perf/results]

Builds a deterministic synthetic corpus of collection-call transcripts (mostly ordinary talk, a few
violations and customer signals, some English calls, every call with a ledger), pins itself to one
core, and measures CPU time (``time.process_time``: the machine is shared, wall time is noisy) for
the default pack and a synthetic pack of ≥ 1,000 patterns, on each matcher back-end:

* ``recall``         normalised calls → validated per-rule candidate hits with spans (one scan per batch);
* ``evaluate_many``  end to end, normalisation to Finding objects, a batch of calls at a time;
* ``evaluate``       end to end, one call at a time;
* ``naive``          the recall job done with ``re.finditer`` per pattern of each rule, per call;
* ``naive_alternation``  the same with one alternation per rule (a stronger baseline).

MB/s counts the UTF-8 bytes of the original transcript text. Prints a table and the definitions,
writes ``rules.json`` and (when matplotlib imports) ``rules.png``.
"""

from __future__ import annotations

import argparse
import json
import os
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
from callqc.rules.batch import BatchText
from callqc.rules.context import CallText
from callqc.rules.matcher import hyperscan_available
from callqc.rules.native import NativeMatcher, native_available
from callqc.rules.pack import PatternSet, Rule
from callqc.rules.records import transcript_from_turns
from callqc.rules.regexcheck import REGEX_FLAGS, fold_regex
from callqc.textnorm import is_cjk, normalize_text, phonetic

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

DEFINITIONS = {
    "MB": "10^6 UTF-8 bytes of the original transcript text (segment texts, before normalisation)",
    "time": "CPU time of this process (time.process_time), pinned to one core; best of --repeats runs",
    "recall": "recall scan: from normalised calls (CallText, phonetic layer included) to validated "
    "per-rule candidate hits with spans (layout + encoding, matcher, offsets, segment/layer/word-boundary "
    "checks, pattern→rule expansion); RuleEngine.recall, --batch calls per scan",
    "evaluate_many": "RuleEngine.evaluate_many end to end: normalisation, recall scan, guards, checks, "
    "Finding objects; --batch calls per call of evaluate_many",
    "evaluate": "RuleEngine.evaluate, one call at a time (what the Rules deployment does per request)",
    "naive": "the same job as the recall scan done naively: for each call, for each rule, re.finditer of "
    "each of the rule's patterns (triggers, groups, exceptions, near, prerequisites; phonetic forms over "
    "the phonetic text) collecting every (start, end)",
    "naive_alternation": "a stronger naive loop: one re alternation per rule and layer, finditer",
    "× naive": "MB/s divided by the faster of naive and naive_alternation for the same pack",
    "hs only": "floor: the recall scan's Hyperscan databases (and narrow-layer encoding) over the same layers, "
    "already joined and UTF-8 encoded, with no match callback",
    "noop cb": "the same with a no-op Python callback per match (the Python binding's cost per match)",
    "layout only": "floor of the hyperscan-native back-end: its C core laying the batches out (plain and phonetic "
    "text encoded as UTF-8, segments recorded) with no database to scan",
}


_NUMERALS = "0-9零〇一二两三四五六七八九十百千万亿"


def _rule_patterns(rule: Rule, min_pinyin: int) -> list[tuple[str, bool]]:
    """Every pattern a rule uses, as (regex, phonetic layer?): phonetic forms where the rule has pinyin."""

    def phrase(text: str, tail: str = "", phon_tail: str = "") -> list[tuple[str, bool]]:
        norm = normalize_text(text)
        if rule.pinyin and sum(map(is_cjk, norm)) >= min_pinyin:  # the phonetic form also matches the phrase
            return [(re.escape(phonetic(norm)) + phon_tail, True)]
        return [(re.escape(norm) + tail, False)]

    if rule.type == "ledger":  # a context phrase, then a numeral within ``lookahead`` characters
        numerals = _NUMERALS + phonetic(_NUMERALS[3:])
        tail = f"[^\\n{_NUMERALS}]{{0,{rule.lookahead}}}[{_NUMERALS}]"
        phon_tail = f"[^\\n{numerals}]{{0,{rule.lookahead}}}[{numerals}]"
        return [x for p in rule.phrases for x in phrase(p, tail, phon_tail)] + [
            (fold_regex(r) + tail, False) for r in rule.regexes
        ]
    sets = list(rule.all_groups()) if rule.type == "required" else [rule.triggers]
    sets += [PatternSet(phrases=rule.exceptions, regexes=rule.exception_regexes), rule.near, rule.prerequisite]
    out: list[tuple[str, bool]] = []
    for pset in sets:
        if pset is not None:
            out += [x for p in pset.phrases for x in phrase(p)] + [(fold_regex(r), False) for r in pset.regexes]
    return out


def naive_matchers(pack: RulePack) -> tuple[list[tuple[re.Pattern[str], bool]], list[tuple[re.Pattern[str], bool]]]:
    """Compiled (regex, phonetic layer?) pairs: one per pattern of each rule, and one alternation per rule and layer."""
    per_pattern, alternations = [], []
    for rule in pack.rules:
        if not rule.enabled:
            continue
        patterns = _rule_patterns(rule, pack.defaults.pinyin.min_chars)
        per_pattern += [(re.compile(expr, REGEX_FLAGS), phon) for expr, phon in patterns]
        for phon in (False, True):
            exprs = [e for e, p in patterns if p == phon]
            if exprs:
                alternations.append((re.compile("|".join(f"(?:{e})" for e in exprs), REGEX_FLAGS), phon))
    return per_pattern, alternations


def _naive(matchers: list[tuple[re.Pattern[str], bool]]):
    def run(call: CallText) -> int:
        found = 0
        for rx, phon in matchers:
            for m in rx.finditer(call.phonetic_text if phon else call.text):
                found += m.end() - m.start() > 0
        return found

    return run


def _best_mbps(fn, items: list, nbytes: list[int], min_seconds: float, repeats: int) -> float:
    """Best MB/s of ``repeats`` runs of ``fn`` over ``items`` (each run ≥ min_seconds, repeating items)."""
    best = 0.0
    for _ in range(repeats):
        done, start = 0, time.process_time()
        while True:
            for item, size in zip(items, nbytes, strict=True):
                fn(item)
                done += size
                if time.process_time() - start >= min_seconds and done >= 1e5:
                    break
            elapsed = time.process_time() - start
            if elapsed >= min_seconds:
                break
        best = max(best, done / elapsed / 1e6)
    return best


def _batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def measure(label: str, pack: RulePack, calls: list[Call], args: argparse.Namespace, backend: str) -> dict[str, object]:
    engine = RuleEngine(pack, backend=backend)
    prepared = [engine.prepare(c.transcript) for c in calls]  # normalisation: outside the recall figure
    sizes = [c.nbytes for c in calls]
    call_batches = _batches(list(zip(calls, prepared, strict=True)), args.batch)
    batch_sizes = [sum(c.nbytes for c, _ in b) for b in call_batches]
    hits = sum(len(engine.recall([p for _, p in b])) for b in call_batches)

    def recall(batch: list[tuple[Call, CallText]]) -> None:
        found = engine.recall([p for _, p in batch])
        found.per_rule(engine.flags)

    def evaluate_many(batch: list[tuple[Call, CallText]]) -> None:
        engine.evaluate_many([c.transcript for c, _ in batch], [c.metadata for c, _ in batch])

    def evaluate(call: Call) -> None:
        engine.evaluate(call.transcript, call.metadata)

    t, r = args.seconds, args.repeats
    row: dict[str, object] = {
        "pack": label,
        "pack_version": pack.version,
        "rules": len(pack.rules),
        "patterns": engine.pattern_count,
        "backend": engine.backend,
        "hits_per_mb": round(hits / (sum(sizes) / 1e6)),
        "recall_mbps": _best_mbps(recall, call_batches, batch_sizes, t, r),
        "evaluate_many_mbps": _best_mbps(evaluate_many, call_batches, batch_sizes, t, r),
        "evaluate_mbps": _best_mbps(evaluate, calls, sizes, t, r),
    }
    if engine.backend == NativeMatcher.backend:
        row["layout_only_mbps"] = _layout_floor(engine, [[p for _, p in b] for b in call_batches], batch_sizes, t, r)
    if engine.backend == "hyperscan":
        row.update(_floors(engine, [[p for _, p in b] for b in call_batches], batch_sizes, t, r))
    if backend == args.naive_backend:  # the naive loops do not depend on the back-end: time them once
        per_pattern, alternations = naive_matchers(pack)
        row["naive_mbps"] = _best_mbps(_naive(per_pattern), prepared, sizes, t, r)
        row["naive_alternation_mbps"] = _best_mbps(_naive(alternations), prepared, sizes, t, r)
    return row


def _layout_floor(engine: RuleEngine, batches: list[list[CallText]], sizes: list[int], t: float, r: int) -> float:
    """The native core with no database: what laying a batch out as UTF-8 layers costs."""
    import numpy as np

    from callqc.rules import _recall

    n = engine.pattern_count
    zeros = np.zeros(n, dtype=np.int64).tobytes()
    core = _recall.Core(None, None, None, None, [None] * n, zeros, zeros, zeros, bytes(n), None)
    phonetic = engine._compiled.has_phonetic

    def run(batch: list[CallText]) -> None:
        agent = np.array([c.agent_chars for c in batch], dtype=np.int64).tobytes()
        phons = [c.phonetic_text for c in batch] if phonetic else None
        core.recall([c.text for c in batch], phons, agent, [c.order for c in batch])

    return _best_mbps(run, batches, sizes, t, r)


def _floors(engine: RuleEngine, batches: list[list[CallText]], sizes: list[int], t: float, r: int) -> dict:
    """What the Hyperscan databases cost without Python callbacks, and with a no-op one per match.

    Same databases, same layers, same per-call scans as ``recall`` (the benchmark reaches into the
    matcher on purpose): the gap to ``recall`` is the Python work per match and per batch.
    """
    matcher = engine._matcher
    layouts = [BatchText(b, engine._compiled.has_phonetic) for b in batches]
    for layout in layouts:
        layout.agent  # noqa: B018 - computed outside the timing

    def databases(handler: object) -> object:
        def run(layout: BatchText) -> None:
            raw: list[int] = []
            for db, layer in ((matcher._plain, layout.plain), (matcher._phon, layout.phon)):
                if db is not None and layer is not None:
                    db.scan(layer.data, match_event_handler=handler, scratch=matcher._scratch(db))
            if matcher._narrow_db is not None:
                narrow = matcher._narrow.encode(layout.plain.text)
                matcher._narrow_db.scan(
                    narrow, match_event_handler=handler, scratch=matcher._scratch(matcher._narrow_db)
                )
            if matcher._first is not None:
                matcher._scan_first(layout.plain, layout.phon, layout.agent, handler, raw)

        return run

    return {
        "hyperscan_only_mbps": _best_mbps(databases(None), layouts, sizes, t, r),
        "noop_callback_mbps": _best_mbps(databases(_noop), layouts, sizes, t, r),
    }


def _noop(*_args: object) -> None:
    return None


def _with_ratios(rows: list[dict[str, object]]) -> None:
    """Ratios against the *faster* of the two naive loops of the same pack (the conservative baseline)."""
    naive = {r["pack"]: r for r in rows if "naive_mbps" in r}
    for r in rows:
        base = naive[r["pack"]]
        r.setdefault("naive_mbps", base["naive_mbps"])
        r.setdefault("naive_alternation_mbps", base["naive_alternation_mbps"])
        best = max(float(r["naive_mbps"]), float(r["naive_alternation_mbps"]))
        r["naive_best_mbps"] = best
        for kind in ("recall", "evaluate_many", "evaluate"):
            r[f"{kind}_vs_naive"] = round(float(r[f"{kind}_mbps"]) / best, 1)
        r["recall_vs_naive_per_pattern"] = round(float(r["recall_mbps"]) / float(r["naive_mbps"]), 1)
        r["recall_vs_naive_alternation"] = round(float(r["recall_mbps"]) / float(r["naive_alternation_mbps"]), 1)
        for key, value in list(r.items()):
            if key.endswith("_mbps"):
                r[key] = round(float(value), 3 if float(value) < 10 else 1)


def _table(rows: list[dict[str, object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"rule engine, one core (targets: recall ≥ {TARGET_MBPS:g} MB/s and ≥ {TARGET_RATIO:g}× naive)")
    columns = [
        "pack",
        "patterns",
        "backend",
        "hits/MB",
        "hs only",
        "noop cb",
        "layout",
        "recall",
        "eval_many",
        "evaluate",
        "naive",
        "naive alt",
        "recall ×",
        "eval_many ×",
    ]
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["pack"]),
            str(r["patterns"]),
            str(r["backend"]),
            str(r["hits_per_mb"]),
            f"{r['hyperscan_only_mbps']:g}" if "hyperscan_only_mbps" in r else "-",
            f"{r['noop_callback_mbps']:g}" if "noop_callback_mbps" in r else "-",
            f"{r['layout_only_mbps']:g}" if "layout_only_mbps" in r else "-",
            f"{r['recall_mbps']:g}",
            f"{r['evaluate_many_mbps']:g}",
            f"{r['evaluate_mbps']:g}",
            f"{r['naive_mbps']:g}",
            f"{r['naive_alternation_mbps']:g}",
            f"{r['recall_vs_naive']:g}×",
            f"{r['evaluate_many_vs_naive']:g}×",
        )
    Console(width=150).print(table)
    print("Figures are MB/s.")
    for key, value in DEFINITIONS.items():
        print(f"  {key}: {value}")


def _plot(rows: list[dict[str, object]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    kinds = ("recall_mbps", "evaluate_many_mbps", "evaluate_mbps", "naive_best_mbps")
    labels = [f"{r['pack']}\n{r['backend']}" for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.2
    for k, kind in enumerate(kinds):
        xs = [i + (k - 1.5) * width for i in range(len(rows))]
        label = "naive (faster loop)" if kind == "naive_best_mbps" else kind.removesuffix("_mbps")
        bars = ax.bar(xs, [float(r[kind]) for r in rows], width, label=label)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(range(len(rows)), labels)
    ax.set_yscale("log")
    ax.set_ylabel("MB/s of transcript text, one core (log)")
    ax.axhline(TARGET_MBPS, linestyle="--", color="grey", linewidth=1)
    ax.set_title("callqc rule engine throughput")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _pin_one_core() -> tuple[str, set[int] | None]:
    """Pin this process to one core: (what was done, the affinity to restore)."""
    try:
        before = os.sched_getaffinity(0)
        cpu = min(before)
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}", before
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return "not pinned", None


def _check_parity(engine: RuleEngine, calls: list[Call]) -> None:
    """The batched path must give exactly the per-call findings."""
    sample = calls[:64]
    many = engine.evaluate_many([c.transcript for c in sample], [c.metadata for c in sample])
    one = [engine.evaluate(c.transcript, c.metadata) for c in sample]
    if many != one:
        raise SystemExit("evaluate_many and evaluate disagree")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="corpus size in MB of transcript text")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.7, help="minimum CPU time per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per batched measurement (best is kept)")
    parser.add_argument("--batch", type=int, default=256, help="calls per recall / evaluate_many call")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    pinned, before = _pin_one_core()
    try:
        return _run(args, pinned)
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)


def _run(args: argparse.Namespace, pinned: str) -> int:
    t0 = time.process_time()
    calls = make_corpus(args.mb, args.seed)
    corpus_mb = sum(c.nbytes for c in calls) / 1e6
    print(f"corpus: {len(calls)} calls, {corpus_mb:.2f} MB, built in {time.process_time() - t0:.1f}s; {pinned}")
    packs = {"default": load_rule_pack(default_pack_path()), "synthetic": load_rule_pack(synthetic_pack())}
    installed = {NativeMatcher.backend: native_available(), "hyperscan": hyperscan_available(), "aho-corasick": True}
    backends = [name for name, ok in installed.items() if ok]
    args.naive_backend = backends[0]
    _check_parity(RuleEngine(packs["default"], backends[0]), calls)
    rows = [measure(label, pack, calls, args, backend) for backend in backends for label, pack in packs.items()]
    _with_ratios(rows)
    _table(rows)
    main_rows = [r for r in rows if r["backend"] == backends[0]]
    met = {
        str(r["pack"]): float(r["recall_mbps"]) >= TARGET_MBPS and float(r["recall_vs_naive"]) >= TARGET_RATIO
        for r in main_rows
    }
    print("targets met (recall):", met)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "corpus": {"calls": len(calls), "megabytes": round(corpus_mb, 3), "seed": args.seed},
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "pinned": pinned,
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {"batch": args.batch, "seconds": args.seconds, "repeats": args.repeats},
        "definitions": DEFINITIONS,
        "targets": {"mbps": TARGET_MBPS, "ratio": TARGET_RATIO, "met_by_recall": met},
        "results": rows,
    }
    (args.out / "rules.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    plotted = _plot(rows, args.out / "rules.png")
    plot_note = f" and {args.out / 'rules.png'}" if plotted else " (matplotlib not installed: no plot)"
    print(f"wrote {args.out / 'rules.json'}{plot_note}; {time.process_time() - t0:.0f}s CPU in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
