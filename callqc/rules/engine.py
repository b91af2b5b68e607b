"""The rule engine: compile a pack once, then one scan per batch of calls and dispatch of hits to rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from callqc.models import CallMetadata, Finding, Transcript
from callqc.rules.batch import BatchText, PatternFlags, Recall
from callqc.rules.checks import CHECKS, RuleInput
from callqc.rules.compiler import CompiledPack, PatternRole, compile_pack
from callqc.rules.context import CallText, RuleHit
from callqc.rules.matcher import MatcherError
from callqc.rules.native import NativeMatcher, build_matcher
from callqc.rules.pack import RulePack, RulePackError

_NO_AGENT = np.zeros((0, 2), dtype=np.int64)
_NEED_HITS = frozenset({"keyword", "sequence", "ledger"})  # rule types that say nothing without a hit


@dataclass(frozen=True)
class RuleRun:
    """Findings of one call with the pack version and matcher that produced them (for the report)."""

    pack_version: str
    backend: str
    findings: list[Finding]


class RuleEngine:
    """``RuleEngine(pack).evaluate(transcript, metadata)`` → findings. Thread-safe after construction.

    ``evaluate_many`` scans a whole batch of calls with one matcher pass per layer (cheaper per call);
    ``evaluate`` is a batch of one. ``recall`` is the scan alone, from normalised calls to hits.
    """

    def __init__(self, pack: RulePack, backend: str = "auto") -> None:
        self.pack = pack
        self._compiled: CompiledPack = compile_pack(pack)
        self.flags = PatternFlags.build(self._compiled.infos)
        try:
            self._matcher = build_matcher(self._compiled.patterns, backend, self.flags)
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

    def prepare(self, transcript: Transcript) -> CallText:
        """Normalise one call (and fold its phonetic layer when the pack needs it)."""
        return CallText(transcript, with_phonetic=self._compiled.has_phonetic)

    def recall(self, calls: Sequence[CallText]) -> Recall:
        """One scan of a batch of normalised calls → validated candidate hits per call."""
        if isinstance(self._matcher, NativeMatcher):
            return self._matcher.recall(calls)
        batch = BatchText(calls, self._compiled.has_phonetic)
        agent = batch.agent if self._matcher.per_call else _NO_AGENT
        return batch.recall(self._matcher.scan(batch.plain, batch.phon, agent), self.flags)

    def evaluate(self, transcript: Transcript, metadata: CallMetadata | None = None) -> list[Finding]:
        return self.evaluate_many([transcript], [metadata])[0]

    def evaluate_many(
        self, transcripts: Sequence[Transcript], metadatas: Sequence[CallMetadata | None] | None = None
    ) -> list[list[Finding]]:
        """Findings of each call, in order; ``metadatas`` (same length) defaults to none."""
        metas = list(metadatas) if metadatas is not None else [None] * len(transcripts)
        if len(metas) != len(transcripts):
            raise ValueError(f"{len(transcripts)} transcripts but {len(metas)} metadata entries")
        calls = [self.prepare(t) for t in transcripts]
        recall = self.recall(calls)
        return [
            self._findings(call, recall.rows_of(k), meta)
            for k, (call, meta) in enumerate(zip(calls, metas, strict=True))
        ]

    def run(self, transcript: Transcript, metadata: CallMetadata | None = None) -> RuleRun:
        return RuleRun(self.version, self.backend, self.evaluate(transcript, metadata))

    def _findings(self, call: CallText, rows: tuple[list[int], ...], metadata: CallMetadata | None) -> list[Finding]:
        inputs = self._dispatch(call, rows, metadata)
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

    def _dispatch(
        self, call: CallText, rows: tuple[list[int], ...], metadata: CallMetadata | None
    ) -> dict[int, RuleInput]:
        """Hand each hit of one call to the rules that use its pattern."""
        inputs: dict[int, RuleInput] = {}
        infos = self._compiled.infos
        defaults = self.pack.defaults
        text = call.text
        seen: set[tuple[int, int, int]] = set()
        for pid, seg, start, end, phon in zip(*rows, strict=True):
            if (pid, start, end) in seen:
                continue  # the same phonetic match found in both layers
            seen.add((pid, start, end))
            info = infos[pid]
            if phon and info.is_exact(text, start, end):
                phon = False  # the phrase as written, not a homophone
            hit = RuleHit(pid, seg, start, end, bool(phon))
            for target in info.targets:
                inp = inputs.get(target.rule)
                if inp is None:
                    inp = inputs[target.rule] = RuleInput(call, metadata, defaults, infos)
                if target.role is PatternRole.GROUP:
                    inp.groups.setdefault(target.group, []).append(hit)
                else:
                    inp.hits.setdefault(target.role, []).append(hit)
        return inputs
