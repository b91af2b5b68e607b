"""The judge: rule candidates and transcripts in, reviewed findings and a summary out.

All chunks of all calls given to :meth:`Judge.review_many` go to the engine in one ``complete_many``
(vLLM: one generate call; llama.cpp: all slots busy). Answers that are not valid JSON, do not fit the
schema, or cite segments the chunk does not hold are asked again once (with the reason); a call with a
chunk still invalid keeps its rule findings untouched and gets ``status: needs_review``. An engine
failure raises :class:`JudgeEngineError` for the whole batch: the calls are retried, never passed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from callqc.judge import JudgeSettings
from callqc.judge.engines import ChatRequest, Completion, JudgeEngine, JudgeEngineError
from callqc.judge.prompts import (
    RETRY_NOTE,
    Candidate,
    Chunk,
    RuleInfo,
    assign_candidates,
    chunk_transcript,
    judge_rules,
    prompt_version,
    reviewed,
    system_prompt,
    user_prompt,
)
from callqc.judge.schema import (
    CandidateVerdict,
    ChunkAnswer,
    InvalidJudgeOutput,
    output_schema,
    parse_answer,
)
from callqc.models import CallMetadata, EmotionStretch, Finding, JudgeSummary, Role, Transcript
from callqc.rules.pack import RulePack

log = logging.getLogger(__name__)

CallInput = tuple[Transcript, CallMetadata | None, list[Finding]]
EVIDENCE_CHARS = 200
CUT_SHORT = "answer cut at max_tokens"


@dataclass
class _Task:
    """One chunk of one call: its prompt, ids it may cite, and what came back."""

    call: int
    chunk: Chunk
    candidate_keys: list[str]
    request: ChatRequest
    answer: ChunkAnswer | None = None
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Plan:
    transcript: Transcript
    metadata: CallMetadata | None
    findings: list[Finding]
    candidates: list[Candidate] = field(default_factory=list)
    tasks: list[_Task] = field(default_factory=list)


class Judge:
    """Reviews calls with one engine and one rule pack (build a new ``Judge`` when the pack changes)."""

    def __init__(self, engine: JudgeEngine | None, pack: RulePack, settings: JudgeSettings | None = None) -> None:
        self.engine = engine
        self.pack = pack
        self.settings = settings or JudgeSettings()
        self.rules: dict[str, RuleInfo] = judge_rules(pack)
        self.system = system_prompt(pack)
        self.prompt_version = prompt_version(pack)
        self.raisable = [rid for rid in self.rules if _raisable(rid)]

    # ---- public -----------------------------------------------------------------------------------

    def review(
        self, transcript: Transcript, metadata: CallMetadata | None, findings: list[Finding]
    ) -> tuple[list[Finding], JudgeSummary]:
        return self.review_many([(transcript, metadata, findings)])[0]

    def review_many(self, calls: Sequence[CallInput]) -> list[tuple[list[Finding], JudgeSummary]]:
        """One ``(findings, summary)`` per call, in order. Raises ``JudgeEngineError`` (retryable)."""
        if self.engine is None:
            return [
                (list(f), JudgeSummary(status="skipped", prompt_version=self.prompt_version)) for _t, _m, f in calls
            ]
        plans = [self._plan(t, m, f, i) for i, (t, m, f) in enumerate(calls)]
        tasks = [task for plan in plans for task in plan.tasks]
        self._run(tasks, retry_note="")
        invalid = [t for t in tasks if t.answer is None]
        if invalid:
            log.info("judge: %d of %d answers invalid, asking again once", len(invalid), len(tasks))
            self._run(invalid, retry_note=RETRY_NOTE)
        return [self._merge(plan) for plan in plans]

    # ---- prompts ----------------------------------------------------------------------------------

    def _plan(self, transcript: Transcript, metadata: CallMetadata | None, findings: list[Finding], call: int) -> _Plan:
        plan = _Plan(transcript, metadata, list(findings))
        plan.candidates = [
            Candidate(f"k{n}", f) for n, f in enumerate((f for f in findings if reviewed(f, self.rules)), start=1)
        ]
        chunks = chunk_transcript(transcript, self.settings.chunk_chars, self.settings.chunk_overlap_segments)
        assign_candidates(plan.candidates, chunks)
        for chunk in chunks:
            mine = [c for c in plan.candidates if chunk.index in c.chunks]
            text = user_prompt(transcript, metadata, chunk, len(chunks), mine, self.rules)
            schema = output_schema([c.key for c in mine], chunk.segment_ids, self.raisable)
            request = ChatRequest(
                [{"role": "system", "content": self.system}, {"role": "user", "content": text}],
                schema,
                self.settings.max_tokens,
                self.settings.temperature,
            )
            plan.tasks.append(_Task(call, chunk, [c.key for c in mine], request))
        return plan

    def _run(self, tasks: list[_Task], retry_note: str) -> None:
        if not tasks:
            return
        requests = []
        for task in tasks:
            request = task.request
            if retry_note:
                messages = [*request.messages[:-1], dict(request.messages[-1])]
                messages[-1]["content"] += retry_note.format(reason=task.error[:200])
                # an answer cut short gets twice the room (within the context) on its one retry
                room = request.max_tokens * 2 if task.error.startswith(CUT_SHORT) else request.max_tokens
                room = min(room, max(request.max_tokens, self.settings.ctx_size - task.prompt_tokens - 16))
                request = ChatRequest(messages, request.schema, room, request.temperature)
            requests.append(request)
        assert self.engine is not None
        try:
            completions = self.engine.complete_many(requests)
        except JudgeEngineError:
            raise
        except Exception as err:  # anything else from the runtime is an engine failure too
            raise JudgeEngineError(f"{self.engine.name}: {type(err).__name__}: {err}") from err
        if len(completions) != len(tasks):
            raise JudgeEngineError(f"{self.engine.name} returned {len(completions)} answers for {len(tasks)} prompts")
        for task, completion in zip(tasks, completions, strict=True):
            self._accept(task, completion)

    def _accept(self, task: _Task, completion: Completion) -> None:
        task.prompt_tokens += completion.prompt_tokens
        task.completion_tokens += completion.completion_tokens
        if completion.error:
            task.error = completion.error
            return
        try:
            task.answer = parse_answer(completion.text, task.candidate_keys, task.chunk.segment_ids, self.raisable)
            task.error = ""
        except InvalidJudgeOutput as err:
            reason = str(err)
            if completion.finish_reason == "length":
                reason = f"{CUT_SHORT} ({reason})"
            task.error = reason

    # ---- merge ------------------------------------------------------------------------------------

    def _merge(self, plan: _Plan) -> tuple[list[Finding], JudgeSummary]:
        summary = JudgeSummary(
            status="ok",
            engine=self.engine.name if self.engine else "",
            model=self.engine.model_version if self.engine else "",
            prompt_version=self.prompt_version,
            chunks=len(plan.tasks),
            prompt_tokens=sum(t.prompt_tokens for t in plan.tasks),
            completion_tokens=sum(t.completion_tokens for t in plan.tasks),
        )
        failed = [t for t in plan.tasks if t.answer is None]
        if failed:
            summary.status = "needs_review"
            summary.error = "; ".join(f"chunk {t.chunk.index + 1}: {t.error}" for t in failed)[:1000]
            return list(plan.findings), summary
        answers = [(t, t.answer) for t in plan.tasks if t.answer is not None]
        return merge_answers(plan.transcript, plan.findings, plan.candidates, answers, self, summary)


def _raisable(rule_id: str) -> bool:
    from callqc.judge.prompts import JUDGE_RULE_IDS

    return rule_id in JUDGE_RULE_IDS


def _span(transcript: Transcript, ids: Sequence[str], default: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """Audio span of the cited segments (citations are checked before; unknown ids are ignored)."""
    wanted = set(ids)
    segments = [s for s in transcript.segments if s.id in wanted]
    if not segments:
        return default
    return min(s.start for s in segments), max(s.end for s in segments)


def _combine(verdicts: list[CandidateVerdict]) -> CandidateVerdict:
    """A candidate seen in several (overlapping) chunks: any violation wins, then uncertain."""
    for kind in ("violation", "uncertain"):
        hits = [v for v in verdicts if v.verdict == kind]
        if hits:
            best = max(hits, key=lambda v: v.confidence)
            cites = list(dict.fromkeys(s for v in hits for s in v.segment_ids))
            return best.model_copy(update={"segment_ids": cites})
    return max(verdicts, key=lambda v: v.confidence)


def _doubted(original: Finding, judge: Judge, mark: str, verdict: CandidateVerdict) -> Finding:
    """The rule finding kept at ``uncertain_factor`` of its confidence, the judge's doubt in its rationale."""
    return original.model_copy(
        update={
            "confidence": round(original.confidence * judge.settings.uncertain_factor, 3),
            "rationale": f"{mark}{verdict.rationale}",
        }
    )


def merge_answers(
    transcript: Transcript,
    findings: list[Finding],
    candidates: list[Candidate],
    answers: list[tuple[_Task, ChunkAnswer]],
    judge: Judge,
    summary: JudgeSummary,
) -> tuple[list[Finding], JudgeSummary]:
    """Confirmed candidates → ``source=both``; rejected → dropped (``rejected_candidates``) unless the rule hit
    was at least ``protected_confidence`` sure (then kept at lowered confidence for a reviewer); uncertain →
    kept with lowered confidence; new judge findings → ``source=judge`` (merged into an overlapping
    finding of the same rule instead of duplicating it)."""
    by_key: dict[str, list[CandidateVerdict]] = {}
    for _task, answer in answers:
        for key, verdict in answer.candidates.items():
            by_key.setdefault(key, []).append(verdict)
    replaced: dict[int, Finding | None] = {}
    for cand in candidates:
        verdicts = by_key.get(cand.key)
        if not verdicts:
            continue
        verdict = _combine(verdicts)
        original = cand.finding
        if verdict.verdict == "not_violation":
            summary.rejected_candidates.append(original.rule_id)
            protected = judge.settings.protected_confidence
            if protected is None or original.confidence < protected:
                replaced[id(original)] = None
                continue
            protected_mark = "（模型判定不违规，规则命中置信度高，需人工复核）"  # too sure a rule hit to drop
            replaced[id(original)] = _doubted(original, judge, protected_mark, verdict)
            continue
        if verdict.verdict == "violation":
            cites = verdict.segment_ids or original.segment_ids
            start, end = _span(transcript, cites, (original.start, original.end))
            replaced[id(original)] = original.model_copy(
                update={
                    "source": "both",
                    "segment_ids": list(cites),
                    "start": start,
                    "end": end,
                    "confidence": round(verdict.confidence, 3),
                    "rationale": verdict.rationale,
                }
            )
        else:
            replaced[id(original)] = _doubted(original, judge, "（判定不确定）", verdict)
    merged: list[Finding] = []
    for finding in findings:
        if id(finding) in replaced:
            new = replaced[id(finding)]
            if new is not None:
                merged.append(new)
        else:
            merged.append(finding)

    for _task, answer in answers:
        for found in answer.findings:
            start, end = _span(transcript, found.segment_ids)
            same = next(
                (
                    f
                    for f in merged
                    if f.rule_id == found.rule_id
                    and (set(f.segment_ids) & set(found.segment_ids) or not (f.segment_ids or found.segment_ids))
                ),
                None,
            )
            if same is not None:
                if same.source == "rule":
                    index = merged.index(same)
                    merged[index] = same.model_copy(
                        update={
                            "source": "both",
                            "confidence": round(max(same.confidence, found.confidence), 3),
                            "rationale": same.rationale or found.rationale,
                        }
                    )
                continue
            info = judge.rules[found.rule_id]
            evidence = " / ".join(transcript.segment(s).text for s in found.segment_ids)[:EVIDENCE_CHARS]
            merged.append(
                Finding(
                    rule_id=found.rule_id,
                    name=info.name,
                    severity=info.severity,
                    category=info.category,
                    source="judge",
                    segment_ids=list(found.segment_ids),
                    start=start,
                    end=end,
                    evidence=evidence,
                    confidence=round(found.confidence, 3),
                    rationale=found.rationale,
                )
            )

    seen: set[tuple[str, tuple[str, ...]]] = set()
    for _task, answer in answers:
        for emo in answer.emotions:
            key = (emo.role, tuple(emo.segment_ids))
            if key in seen:
                continue
            seen.add(key)
            start, end = _span(transcript, emo.segment_ids)
            role = Role(emo.role)
            summary.emotions.append(
                EmotionStretch(
                    role=role,
                    start=start,
                    end=end,
                    state=emo.state,
                    hostile=emo.hostile and role == Role.AGENT,
                    segment_ids=list(emo.segment_ids),
                )
            )
    summary.emotions.sort(key=lambda e: (e.start, e.role.value))
    return merged, summary
