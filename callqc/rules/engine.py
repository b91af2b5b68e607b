"""The rule engine: compile a pack once, then one scan per call and dispatch of hits to rules."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from callqc.models import CallMetadata, Finding, Transcript
from callqc.rules.checks import CHECKS, RuleInput
from callqc.rules.compiler import CompiledPack, PatternRole, compile_pack
from callqc.rules.context import CallText, RuleHit
from callqc.rules.matcher import MatcherError, build_matcher
from callqc.rules.pack import RulePack, RulePackError

_NEED_HITS = frozenset({"keyword", "sequence", "ledger"})  # rule types that say nothing without a hit


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
        infos = self._compiled.infos
        self._is_phonetic = np.array([i.phonetic for i in infos] or [False], dtype=bool)
        self._bound_left = np.array([i.bound_left for i in infos] or [False], dtype=bool)
        self._bound_right = np.array([i.bound_right for i in infos] or [False], dtype=bool)
        self._end_only = np.array([not i.pattern.needs_start for i in infos] or [False], dtype=bool)

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
        inputs = self._dispatch(call, self._matcher.scan(call.buffer, call.buffer_byte_offsets()), metadata)
        findings: list[Finding] = []
        for cr in self._compiled.rules:
            inp = inputs.get(cr.index)
            if inp is None:
                if cr.rule.type in _NEED_HITS:
                    continue  # no hit, nothing to report
                inp = RuleInput(call, metadata, self.pack.defaults, self._compiled.infos)
            findings.extend(CHECKS[cr.rule.type](cr, inp))
        findings.sort(key=lambda f: (f.start, f.rule_id))
        return findings

    def run(self, transcript: Transcript, metadata: CallMetadata | None = None) -> RuleRun:
        return RuleRun(self.version, self.backend, self.evaluate(transcript, metadata))

    def _valid_hits(self, call: CallText, raw: np.ndarray) -> tuple[np.ndarray, ...]:
        """Vectorised filtering: right text layer, inside one segment, English word boundaries."""
        pid = raw[:, 0]
        start, end, in_phon, inside = call.buffer_to_text(raw[:, 1], raw[:, 2])
        start = np.where(self._end_only[pid], end - 1, start)  # same for every back-end
        phon = self._is_phonetic[pid]
        # A phonetic pattern found in the plain layer is a real (phonetic) match there too:
        # representative characters are their own phonetic form. Plain patterns only count in plain text.
        ok = inside & (end > start) & (phon | ~in_phon)
        seg = call.segs_of(start)
        ok &= end <= call.ends[seg]
        n = len(call.text)
        bounded = ok & (self._bound_left[pid] | self._bound_right[pid])
        if bounded.any():
            alnum = np.append(call.norm.ascii_alnum(), False)  # index n (past the end) is no letter
            left = self._bound_left[pid] & (start > 0) & alnum[np.maximum(start - 1, 0)]
            right = self._bound_right[pid] & alnum[np.minimum(end, n)]
            ok &= ~(bounded & (left | right))
        keep = np.flatnonzero(ok)
        return pid[keep], seg[keep], start[keep], end[keep], phon[keep]

    def _dispatch(self, call: CallText, raw: np.ndarray, metadata: CallMetadata | None) -> dict[int, RuleInput]:
        """Place each match in its segment and hand it to the rules that use its pattern."""
        inputs: dict[int, RuleInput] = {}
        if not len(raw):
            return inputs
        infos = self._compiled.infos
        defaults = self.pack.defaults
        text = call.text
        columns = (c.tolist() for c in self._valid_hits(call, raw))
        seen: set[tuple[int, int, int]] = set()
        for pid, seg, start, end, phon in zip(*columns, strict=True):
            if (pid, start, end) in seen:
                continue  # the same phonetic match found in both layers
            seen.add((pid, start, end))
            info = infos[pid]
            if phon and info.is_exact(text, start, end):
                phon = False  # the phrase as written, not a homophone
            hit = RuleHit(pid, seg, start, end, phon)
            for target in info.targets:
                inp = inputs.get(target.rule)
                if inp is None:
                    inp = inputs[target.rule] = RuleInput(call, metadata, defaults, infos)
                if target.role is PatternRole.GROUP:
                    inp.groups.setdefault(target.group, []).append(hit)
                else:
                    inp.hits.setdefault(target.role, []).append(hit)
        return inputs
