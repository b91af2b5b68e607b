"""The rule engine: compile a pack once, then one scan per call and dispatch of hits to rules."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from callqc.models import CallMetadata, Finding, Transcript
from callqc.rules.checks import CHECKS, RuleInput
from callqc.rules.compiler import CompiledPack, PatternRole, compile_pack
from callqc.rules.context import CallText, RuleHit
from callqc.rules.matcher import Hit, MatcherError, build_matcher
from callqc.rules.pack import RulePack, RulePackError


@dataclass(frozen=True)
class RuleRun:
    """Findings of one call with the pack version and matcher that produced them (for the report)."""

    pack_version: str
    backend: str
    findings: list[Finding]


class RuleEngine:
    """``RuleEngine(pack).evaluate(transcript, metadata)`` → findings. Thread-safe after construction."""

    def __init__(self, pack: RulePack, backend: str = "auto") -> None:
        self.pack = pack
        self._compiled: CompiledPack = compile_pack(pack)
        try:
            self._matcher = build_matcher(self._compiled.patterns, backend)
        except MatcherError as exc:
            if exc.pattern_id < 0:
                raise RulePackError("pack", exc.reason) from None
            rule_id, label = self._compiled.infos[exc.pattern_id].origin
            raise RulePackError.for_rule(rule_id, f"{label} is not supported by the matcher: {exc.reason}") from None

    @property
    def version(self) -> str:
        return self.pack.version

    @property
    def backend(self) -> str:
        return self._matcher.backend

    @property
    def pattern_count(self) -> int:
        return len(self._compiled.infos)

    def evaluate(self, transcript: Transcript, metadata: CallMetadata | None = None) -> list[Finding]:
        call = CallText(transcript, with_phonetic=self._compiled.has_phonetic)
        inputs = self._dispatch(call, self._matcher.scan(call.buffer), metadata)
        findings: list[Finding] = []
        for cr in self._compiled.rules:
            findings.extend(CHECKS[cr.rule.type](cr, inputs[cr.index]))
        findings.sort(key=lambda f: (f.start, f.rule_id))
        return findings

    def run(self, transcript: Transcript, metadata: CallMetadata | None = None) -> RuleRun:
        return RuleRun(self.version, self.backend, self.evaluate(transcript, metadata))

    def _dispatch(self, call: CallText, raw: list[Hit], metadata: CallMetadata | None) -> dict[int, RuleInput]:
        """Place each raw match in its segment and hand it to the rules that use its pattern."""
        infos = self._compiled.infos
        defaults = self.pack.defaults
        inputs: dict[int, RuleInput] = defaultdict(lambda: RuleInput(call, metadata, defaults, infos))
        text = call.text
        n = len(text)
        for pid, start, end in raw:
            info = infos[pid]
            if start > n:  # the phonetic layer, after the separator
                if not info.phonetic:
                    continue
                start, end = start - n - 1, end - n - 1
            elif info.phonetic or end > n:
                continue
            seg = call.seg_of(start)
            if seg < 0 or end > call.ends[seg] or end <= start:
                continue  # crosses a segment separator
            if info.bound_left and start > 0 and text[start - 1].isascii() and text[start - 1].isalnum():
                continue
            if info.bound_right and end < n and text[end].isascii() and text[end].isalnum():
                continue
            hit = RuleHit(pid, seg, start, end, info.phonetic)
            for target in info.targets:
                inp = inputs[target.rule]
                if target.role is PatternRole.GROUP:
                    inp.groups.setdefault(target.group, []).append(hit)
                else:
                    inp.hits.setdefault(target.role, []).append(hit)
        return inputs
