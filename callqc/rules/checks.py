"""What each rule type does with its hits (and with the call metadata) to produce findings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import time
from functools import lru_cache
from itertools import groupby
from operator import attrgetter

from callqc.models import CallMetadata, Finding, Role
from callqc.rules.compiler import CompiledRule, PatternInfo, PatternRole
from callqc.rules.context import CallText, RuleHit
from callqc.rules.guards import NegationGuard
from callqc.rules.pack import Defaults, Negation
from callqc.textnorm import Amount, find_amounts, find_days, normalize_text

_APPROXIMATE = ("多", "左右", "来", "余", "几", "上下")
# How an answer to "请问是张三先生吗？" opens when it is someone else (besides a negation word).
_DENIAL_OPENERS = ("no ", "nope", "wrong number", "打错")
_INTERJECTIONS = "啊喂嗯哦呃额唉哎 "  # 喂不是 / 啊不是: an interjection may come first


@dataclass
class RuleInput:
    """Everything one rule sees of one call."""

    call: CallText
    metadata: CallMetadata | None
    defaults: Defaults
    infos: list[PatternInfo]
    hits: dict[PatternRole, list[RuleHit]] = field(default_factory=dict)
    groups: dict[int, list[RuleHit]] = field(default_factory=dict)

    def role_hits(self, role: PatternRole) -> list[RuleHit]:
        return self.hits.get(role, [])


Check = Callable[[CompiledRule, RuleInput], list[Finding]]


# --- shared helpers -------------------------------------------------------------------------


def _confidence(cr: CompiledRule, inp: RuleInput, hit: RuleHit | None) -> float:
    conf = cr.rule.confidence
    if hit is not None:
        if hit.phonetic:
            conf *= inp.defaults.pinyin.confidence
        if inp.call.role(hit.seg) == Role.UNKNOWN:
            conf *= inp.defaults.unknown_role_confidence
    return round(conf, 3)


def _finding(cr: CompiledRule, **fields: object) -> Finding:
    rule = cr.rule
    return Finding(
        rule_id=rule.id,
        name=rule.name,
        severity=rule.severity,
        category=rule.category,
        source="rule",
        **fields,  # type: ignore[arg-type]
    )


def _hit_finding(cr: CompiledRule, inp: RuleInput, hit: RuleHit, end: int | None = None, why: str = "") -> Finding:
    call = inp.call
    stop = hit.end if end is None else end
    t0, t1 = call.time_span(hit.seg, hit.start, stop)
    label = inp.infos[hit.pattern].label
    rationale = why or (f"homophone of {label!r}" if hit.phonetic else f"matched {label!r}")
    return _finding(
        cr,
        segment_ids=[call.segments[hit.seg].id],
        start=round(t0, 3),
        end=round(t1, 3),
        evidence=call.evidence(hit.seg, hit.start, stop),
        confidence=_confidence(cr, inp, hit),
        rationale=rationale,
    )


def _when_ok(cr: CompiledRule, metadata: CallMetadata | None) -> bool:
    when = cr.rule.when
    if when is None or when.outsourced is None:
        return True
    return metadata is not None and metadata.outsourced == when.outsourced


def _scoped(cr: CompiledRule, inp: RuleInput, hits: list[RuleHit]) -> list[RuleHit]:
    return [h for h in hits if inp.call.in_scope(h.seg, cr.rule.scope)]


def _dedupe(hits: list[RuleHit]) -> list[RuleHit]:
    """Overlapping hits of one rule in one segment become one hit spanning them all."""
    merged: list[RuleHit] = []
    for hit in sorted(hits, key=lambda h: (h.seg, h.start, h.phonetic, -h.end)):
        last = merged[-1] if merged else None
        if last is not None and last.overlaps(hit):
            merged[-1] = last._replace(end=max(last.end, hit.end), phonetic=last.phonetic and hit.phonetic)
        else:
            merged.append(hit)
    return merged


def _guarded(cr: CompiledRule, inp: RuleInput, hits: list[RuleHit]) -> list[RuleHit]:
    """Apply exceptions, proximity, negation and quotation guards."""
    exceptions = inp.role_hits(PatternRole.EXCEPTION)
    near = inp.role_hits(PatternRole.NEAR)
    within = cr.rule.near.within if cr.rule.near else 0
    out = []
    for hit in hits:
        if any(hit.overlaps(x) for x in exceptions):
            continue
        if cr.rule.near and not any(n.seg == hit.seg and hit.gap(n) <= within for n in near):
            continue
        if cr.negation and cr.negation.negated(inp.call, hit):
            continue
        if cr.quotation and cr.quotation.quoted(inp.call, hit):
            continue
        out.append(hit)
    return out


# --- rule types -----------------------------------------------------------------------------


def _per_segment(hits: list[RuleHit]) -> list[list[RuleHit]]:
    """Sorted hits grouped by segment: one rule says one thing about one turn, however often it matched."""
    return [list(group) for _seg, group in groupby(hits, key=attrgetter("seg"))]


def _segment_finding(cr: CompiledRule, inp: RuleInput, hits: list[RuleHit]) -> Finding:
    """One finding for all hits of a rule in one segment: the span from the first to the last."""
    if len(hits) == 1:
        return _hit_finding(cr, inp, hits[0])
    labels = list(dict.fromkeys(inp.infos[h.pattern].label for h in hits))
    merged = hits[0]._replace(phonetic=all(h.phonetic for h in hits))
    why = f"matched {', '.join(repr(label) for label in labels)} ({len(hits)} times in this turn)"
    return _hit_finding(cr, inp, merged, end=max(h.end for h in hits), why=why)


def check_keyword(cr: CompiledRule, inp: RuleInput) -> list[Finding]:
    """Prohibited phrases (agent) or customer signals: one finding per segment with guarded hits."""
    if not _when_ok(cr, inp.metadata):
        return []
    hits = _dedupe(_guarded(cr, inp, _scoped(cr, inp, inp.role_hits(PatternRole.TRIGGER))))
    return [_segment_finding(cr, inp, group) for group in _per_segment(hits)[: inp.defaults.max_findings_per_rule]]


def _window(cr: CompiledRule, duration: float) -> tuple[float, float, str]:
    window = cr.rule.window
    if window and window.first_s:
        return 0.0, min(window.first_s, duration), f"first {window.first_s:g}s"
    if window and window.last_s:
        return max(0.0, duration - window.last_s), duration, f"last {window.last_s:g}s"
    return 0.0, duration, "the call"


def check_required(cr: CompiledRule, inp: RuleInput) -> list[Finding]:
    """R01/R05/R09: every group must be said by the agent inside the window, else flag the window."""
    call = inp.call
    if not _when_ok(cr, inp.metadata):
        return []
    scoped = call.scoped(cr.rule.scope)
    if not scoped:
        return []  # nothing said by that side: there is nothing to judge
    w0, w1, where = _window(cr, call.duration)
    in_window = [i for i in scoped if call.segments[i].start < w1 and call.segments[i].end > w0]
    satisfied: set[int] = set()
    for g, hits in inp.groups.items():
        for hit in _scoped(cr, inp, hits):
            t0, t1 = call.time_span(hit.seg, hit.start, hit.end)
            if t0 < w1 and t1 > w0:
                satisfied.add(g)
                break
    principal = normalize_text(inp.metadata.principal) if inp.metadata and cr.rule.accept_principal else ""
    if principal and any(principal in call.seg_text(i) for i in in_window):
        satisfied.update(range(len(cr.groups)))
    missing = [group.name for g, group in enumerate(cr.groups) if g not in satisfied]
    if not missing:
        return []
    return [
        _finding(
            cr,
            segment_ids=[call.segments[i].id for i in in_window],
            start=round(w0, 3),
            end=round(w1, 3),
            evidence="",
            confidence=round(cr.rule.confidence, 3),
            rationale=f"not said in {where}: {', '.join(missing)}",
        )
    ]


@lru_cache(maxsize=8)
def _denial_guard(negation: Negation) -> NegationGuard:
    return NegationGuard.build(negation)


def _answered(inp: RuleInput, hit: RuleHit) -> bool:
    """An identity check counts unless the one who answers it is not the person asked for.

    The answer is the first other-side segment after the check: a third party (我是他妈妈 said by a
    speaker diarized as third_party), or an answer that opens with a denial (不是，我是他同事 / "No, this
    is his wife") means the identity was not verified. No answer at all (one-sided or undiarized
    transcript) keeps the check.
    """
    call = inp.call
    guard = _denial_guard(inp.defaults.negation)
    for seg in range(hit.seg + 1, len(call.segments)):
        role = call.role(seg)
        if role in (Role.AGENT, Role.UNKNOWN):
            continue
        if role == Role.THIRD_PARTY:
            return False
        text = call.seg_text(seg).lstrip(_INTERJECTIONS)
        if text in ("no", "nope") or text.startswith(_DENIAL_OPENERS):
            return False
        m = guard.regex.match(text) if guard.regex else None
        return m is None or guard.exempt_span(text, m.start(), m.end())
    return True


def check_sequence(cr: CompiledRule, inp: RuleInput) -> list[Finding]:
    """R02: a trigger (debt detail) said before any prerequisite (identity check) the person confirmed."""
    if not _when_ok(cr, inp.metadata):
        return []
    prereq = [h for h in _scoped(cr, inp, inp.role_hits(PatternRole.PREREQUISITE)) if _answered(inp, h)]
    first = min(((h.seg, h.start) for h in prereq), default=None)
    triggers = _guarded(cr, inp, _scoped(cr, inp, inp.role_hits(PatternRole.TRIGGER)))
    early = [h for h in _dedupe(triggers) if first is None or (h.seg, h.start) < first]
    if not early:
        return []
    why = "said before any identity check" if first is not None else "said and identity never checked"
    return [_hit_finding(cr, inp, early[0], why=f"{inp.infos[early[0].pattern].label!r} {why}")]


def _number_at(inp: RuleInput, cr: CompiledRule, pos: int, seg: int) -> Amount | None:
    """The number that starts at ``pos`` (the numeral the matcher stopped on), unless approximate."""
    call = inp.call
    region = call.text[pos : min(int(call.ends[seg]), pos + 24)]
    found = find_amounts(region) if cr.rule.field == "amount_due" else find_days(region)
    if not found or found[0].start != 0:
        return None
    first = found[0]
    tail = call.text[pos + first.end : pos + first.end + 2]
    if tail.startswith(_APPROXIMATE) or "几" in first.text:
        return None
    return first


def _locate(cr: CompiledRule, inp: RuleInput, hit: RuleHit) -> RuleHit:
    """Give a context hit (reported by its numeral only) its real start and exactness."""
    assert cr.context is not None
    call = inp.call
    start, homophone = cr.context.locate(call.text, call.phonetic_text, int(call.starts[hit.seg]), hit.end)
    return hit._replace(start=start, phonetic=homophone)


def check_ledger(cr: CompiledRule, inp: RuleInput) -> list[Finding]:
    """F06/R03: an amount / overdue-day count the agent states that the ledger does not support."""
    meta = inp.metadata
    if meta is None or meta.ledger is None or not _when_ok(cr, meta):
        return []
    expected = float(meta.ledger.amount_due if cr.rule.field == "amount_due" else meta.ledger.overdue_days)
    allowed = max(cr.rule.tolerance.ratio * expected, cr.rule.tolerance.absolute)
    guarded = bool(cr.negation or cr.quotation or cr.rule.near)
    exception_segs = {h.seg for h in inp.role_hits(PatternRole.EXCEPTION)}
    findings: list[Finding] = []
    for hit in _dedupe(_scoped(cr, inp, inp.role_hits(PatternRole.TRIGGER))):
        value = _number_at(inp, cr, hit.end - 1, hit.seg)
        if value is None or abs(value.value - expected) <= allowed:
            continue
        hit = _locate(cr, inp, hit)
        if (guarded or hit.seg in exception_segs) and not _guarded(cr, inp, [hit]):
            continue
        unit = "元" if cr.rule.field == "amount_due" else " days"
        why = f"stated {value.value:g}{unit}, ledger {cr.rule.field} is {expected:g}{unit}"
        findings.append(_hit_finding(cr, inp, hit, end=hit.end - 1 + value.end, why=why))
    return findings[: inp.defaults.max_findings_per_rule]


def _in_banned(local: time, start: time, end: time) -> bool:
    if start < end:
        return start <= local < end
    return local >= start or local < end  # the window wraps midnight (22:00–08:00)


def check_call_hours(cr: CompiledRule, inp: RuleInput) -> list[Finding]:
    """F15: the call started inside the banned local-time window."""
    meta = inp.metadata
    if meta is None or meta.call_started_at is None or cr.banned is None:
        return []
    started = meta.call_started_at.astimezone(cr.tz) if cr.tz else meta.call_started_at
    start, end = cr.banned
    if not _in_banned(started.time(), start, end):
        return []
    why = (
        f"call started {started.strftime('%H:%M')} local ({started.strftime('%z')}), "
        f"inside the banned window {start:%H:%M}–{end:%H:%M}"
    )
    return [_finding(cr, start=0.0, end=0.0, confidence=round(cr.rule.confidence, 3), rationale=why)]


def check_attempts(cr: CompiledRule, inp: RuleInput) -> list[Finding]:
    """F16: more attempts today to this number than the pack allows."""
    meta = inp.metadata
    limit = cr.rule.max_per_day
    if meta is None or limit is None or meta.attempts_today <= limit:
        return []
    why = f"{meta.attempts_today} attempts today, limit {limit}"
    return [_finding(cr, start=0.0, end=0.0, confidence=round(cr.rule.confidence, 3), rationale=why)]


CHECKS: dict[str, Check] = {
    "keyword": check_keyword,
    "required": check_required,
    "sequence": check_sequence,
    "ledger": check_ledger,
    "call_hours": check_call_hours,
    "attempts": check_attempts,
}
