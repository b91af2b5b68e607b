"""Prompts for the judge: a Chinese system prompt built from the rule pack, the call as a user message.

The system prompt holds everything shared by all calls (role, rule definitions, output rules), so
engines with prefix caching compute it once; the user message holds one chunk of one call. Rules
come from the pack, so prompts and rules version together: :func:`prompt_version` changes whenever
the template or the pack does, and is recorded in every report.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from callqc.models import CallMetadata, Finding, Role, Segment, Severity, Transcript
from callqc.rules.pack import RulePack

TEMPLATE_VERSION = "v1"

# Checks the judge may raise on its own (COMPLIANCE_RULES.md: L items and customer signals).
JUDGE_RULE_IDS: tuple[str, ...] = (
    *("F02", "F05", "F07", "F10", "F11", "F13", "F17", "F18", "R02", "R06", "R07", "R08"),
    *(f"C0{i}" for i in range(1, 9)),
)


@dataclass(frozen=True)
class RuleInfo:
    id: str
    name: str
    severity: Severity
    category: str
    description: str
    examples: tuple[str, ...] = ()
    mode: str = "L"


# L items the default pack has no keyword rule for (so no pack entry): defined here, same wording source.
EXTRA_RULES: dict[str, RuleInfo] = {
    "R06": RuleInfo(
        "R06",
        "仅引导官方还款渠道",
        Severity.S1,
        "required",
        "坐席只能引导客户通过官方App或对公账户还款",
        ("请通过官方App还款",),
    ),
    "R07": RuleInfo(
        "R07",
        "第三方接听时的合规话术",
        Severity.S0,
        "required",
        "非本人接听时不得透露欠款信息，只能请其转告",
        ("我们有业务需联系他，请转告",),
    ),
    "R08": RuleInfo(
        "R08",
        "异议与投诉的受理",
        Severity.S1,
        "required",
        "客户提出异议或投诉时，坐席应记录并转专人核实，停止施压",
        ("您的异议我已记录，会转专人核实",),
    ),
}

_CANDIDATE_NOTE = re.compile(r"\s*\((?:keyword )?candidates[^)]*\)")
ROLE_ZH = {Role.AGENT: "坐席", Role.CUSTOMER: "客户", Role.THIRD_PARTY: "第三方", Role.UNKNOWN: "未知"}

_SYSTEM = "\n".join(
    [
        "你是资深贷后质检员，负责审查催收电话转写文本是否合规。"
        "依据：中国银行业协会《金融机构个人消费类贷款催收工作指引》、《消费金融公司管理办法》等。",
        "规则包：{pack_name}（版本 {pack_version}）。",
        "",
        "## 规则定义",
        "{rules}",
        "",
        "## 任务",
        "用户消息给出通话信息、规则引擎发现的候选问题（编号 k1、k2…）和转写片段，"
        "每行格式为 [片段编号 开始-结束 角色] 文本。",
        "1. candidates：逐一复核每个候选问题，verdict 取 violation（确属违规）、"
        "not_violation（不构成违规，例如否定句“我们不会上门”、坐席复述客户原话、正常告知后果）"
        "或 uncertain（证据不足）。",
        "   confidence 为 0 到 1 的把握程度；segment_ids 引用作为证据的片段编号；"
        "rationale 用不超过40字的中文说明理由。",
        "2. findings：只在转写中有明确证据时，补充规则引擎没有列出的问题，rule_id 只能取：{judge_ids}。"
        "每条必须引用片段编号。没有就输出空数组。",
        "3. emotions：按通话阶段描述双方情绪。role 为 agent（坐席）或 customer（客户）；"
        "state 取 calm（平静）、anxious（焦虑）、angry（愤怒）、distressed（痛苦绝望）；"
        "坐席语气带敌意或恐吓时 hostile 为 true；引用对应片段编号。",
        "只能引用转写中出现过的片段编号，不得编造。只输出 JSON。",
    ]
)

_USER = """## 通话信息
{metadata}

## 候选问题
{candidates}

## 转写（第 {chunk}/{chunks} 段）
{transcript}"""

RETRY_NOTE = "\n\n注意：上一次回答无效（{reason}）。请严格按照要求重新输出 JSON，只引用上面出现的片段编号。"


def judge_rules(pack: RulePack) -> dict[str, RuleInfo]:
    """Rules the prompt defines: the pack's L-mode rules (candidates the judge reviews) and the checks the
    judge may raise itself (from the pack when it has them, else :data:`EXTRA_RULES`)."""
    out: dict[str, RuleInfo] = {}
    for rule in pack.rules:
        if not rule.enabled:
            continue
        if "L" in rule.mode or rule.id in JUDGE_RULE_IDS:
            examples = tuple(p for p in rule.phrases if not p.isascii())[:4] if rule.type == "keyword" else ()
            desc = _CANDIDATE_NOTE.sub("", " ".join(rule.description.split())).strip()
            out[rule.id] = RuleInfo(rule.id, rule.name, rule.severity, rule.category, desc, examples, rule.mode)
    for rule_id in JUDGE_RULE_IDS:
        if rule_id not in out and rule_id in EXTRA_RULES:
            out[rule_id] = EXTRA_RULES[rule_id]
    return out


def reviewed(finding: Finding, rules: dict[str, RuleInfo]) -> bool:
    """Rule findings the judge reviews: candidates of checks whose mode includes L."""
    info = rules.get(finding.rule_id)
    return finding.source == "rule" and info is not None and "L" in info.mode


def system_prompt(pack: RulePack) -> str:
    rules = judge_rules(pack)
    lines = []
    for info in rules.values():
        example = f" 例：{'；'.join(info.examples)}" if info.examples else ""
        lines.append(f"- {info.id} {info.name}（{info.severity.value}）：{info.description}{example}")
    judge_ids = "、".join(r for r in JUDGE_RULE_IDS if r in rules)
    return _SYSTEM.format(
        pack_name=pack.name or "default", pack_version=pack.version, rules="\n".join(lines), judge_ids=judge_ids
    )


def prompt_version(pack: RulePack) -> str:
    """``judge-v1/<pack version>@<digest of the full prompt template>``."""
    digest = hashlib.sha256("\x1f".join([TEMPLATE_VERSION, system_prompt(pack), _USER, RETRY_NOTE]).encode())
    return f"judge-{TEMPLATE_VERSION}/{pack.version}@{digest.hexdigest()[:10]}"


def _clock(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 60:02d}:{whole % 60:02d}"


def render_segment(seg: Segment) -> str:
    text = " ".join(seg.text.split())
    return f"[{seg.id} {_clock(seg.start)}-{_clock(seg.end)} {ROLE_ZH.get(seg.role, '未知')}] {text}"


def render_metadata(metadata: CallMetadata | None, duration: float) -> str:
    metadata = metadata or CallMetadata()
    parts = [f"通话时长：{duration:.0f} 秒"]
    parts.append(
        f"外包坐席：{'是' if metadata.outsourced else '否'}"
        + (f"（委托方 {metadata.principal}）" if metadata.principal else "")
    )
    if metadata.ledger is not None:
        parts.append(f"台账应还金额：{metadata.ledger.amount_due:g} 元，逾期 {metadata.ledger.overdue_days} 天")
    if metadata.call_started_at is not None:
        parts.append(f"通话开始：{metadata.call_started_at.isoformat(timespec='minutes')}")
    if metadata.attempts_today:
        parts.append(f"今日呼叫次数：{metadata.attempts_today}")
    return "；".join(parts)


@dataclass(frozen=True)
class Chunk:
    index: int
    segments: tuple[Segment, ...]

    @property
    def segment_ids(self) -> list[str]:
        return [s.id for s in self.segments]


def chunk_transcript(transcript: Transcript, chunk_chars: int, overlap_segments: int) -> list[Chunk]:
    """Consecutive stretches of at most ``chunk_chars`` rendered characters (always at least one segment);
    each chunk after the first repeats the last ``overlap_segments`` segments of the one before."""
    segments = transcript.segments
    if not segments:
        return [Chunk(0, ())]
    chunks: list[Chunk] = []
    start = 0
    while True:
        end, used = start, 0
        while end < len(segments):
            size = len(render_segment(segments[end])) + 1
            if end > start and used + size > chunk_chars:
                break
            used += size
            end += 1
        chunks.append(Chunk(len(chunks), tuple(segments[start:end])))
        if end >= len(segments):
            return chunks
        start = max(end - overlap_segments, start + 1)


@dataclass
class Candidate:
    """A rule finding under review, numbered k1, k2… within its call."""

    key: str
    finding: Finding
    chunks: list[int] = field(default_factory=list)


def assign_candidates(candidates: Sequence[Candidate], chunks: Sequence[Chunk]) -> None:
    """Each candidate goes to every chunk holding one of its segments (no segment, e.g. a missing
    self-introduction: the first chunk)."""
    for cand in candidates:
        wanted = set(cand.finding.segment_ids)
        cand.chunks = [c.index for c in chunks if wanted & set(c.segment_ids)] or [0]


def render_candidate(cand: Candidate, rules: dict[str, RuleInfo]) -> str:
    info = rules.get(cand.finding.rule_id)
    name = info.name if info else cand.finding.name
    where = f"片段 {'、'.join(cand.finding.segment_ids)}" if cand.finding.segment_ids else "全通话"
    evidence = f"：“{cand.finding.evidence[:60]}”" if cand.finding.evidence else ""
    return f"{cand.key} {cand.finding.rule_id} {name}（{where}）{evidence}"


def user_prompt(
    transcript: Transcript,
    metadata: CallMetadata | None,
    chunk: Chunk,
    chunks: int,
    candidates: Sequence[Candidate],
    rules: dict[str, RuleInfo],
) -> str:
    listed = [render_candidate(c, rules) for c in candidates] or ["（无）"]
    return _USER.format(
        metadata=render_metadata(metadata, transcript.duration),
        candidates="\n".join(listed),
        chunk=chunk.index + 1,
        chunks=chunks,
        transcript="\n".join(render_segment(s) for s in chunk.segments) or "（空）",
    )
