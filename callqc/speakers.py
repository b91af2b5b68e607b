"""Who spoke when: map channels (stereo) or diarized speakers (mono) to roles, merge in time order.

Stereo recordings are exact: each channel is one party. Mono recordings are diarized
(:mod:`callqc.diarization`); ASR segments are given to the speaker whose turns they overlap (cut at
word timestamps where the speaker changes), and roles come from what each speaker says, with a
confidence; a low one marks the call for review instead of guessing silently.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, Field

from callqc.asr_text import AsrSegment, AsrWord
from callqc.models import ChannelLayout, ConversationMetrics, Role, RoleAssignment, Segment, SpeakerTurn, Word

SPEAKERS_VERSION = "channel-split/1"


def channel_roles(layout: ChannelLayout) -> dict[int, Role]:
    """Which party each channel carries."""
    if layout == ChannelLayout.STEREO_AGENT_LEFT:
        return {0: Role.AGENT, 1: Role.CUSTOMER}
    if layout == ChannelLayout.STEREO_AGENT_RIGHT:
        return {0: Role.CUSTOMER, 1: Role.AGENT}
    return {0: Role.UNKNOWN}


def merge_channels(channel_segments: dict[int, list[AsrSegment]], layout: ChannelLayout) -> list[Segment]:
    """One time-ordered list of segments with roles and stable ids (s0001, s0002, ...).

    Overlapping speech is kept: both parties' segments stay, ordered by start time.
    """
    roles = channel_roles(layout)
    tagged = [(seg.start, channel, seg) for channel, segments in channel_segments.items() for seg in segments]
    tagged.sort(key=lambda item: (item[0], item[1]))
    merged: list[Segment] = []
    for index, (_start, channel, seg) in enumerate(tagged, start=1):
        merged.append(_to_segment(index, roles.get(channel, Role.UNKNOWN), channel, seg))
    return merged


# ---- mono calls: diarization turns → segments → roles --------------------------------------------

DIARIZED_VERSION = "diarized/1"

# (pattern, weight, reason): evidence that a speaker is the agent (positive) or the customer (negative)
_CUES: dict[str, list[tuple[re.Pattern[str], float, str]]] = {
    "zh": [
        (
            re.compile(r"我是.{0,16}(专员|客服|工作人员|催收|贷后|银行|金融|公司|中心|法务)"),
            3.0,
            "self-introduction 我是…",
        ),
        (re.compile(r"[工公]号"), 3.0, "gave a 工号"),
        (re.compile(r"(本次)?通话.{0,4}录音"), 2.0, "recording notice"),
        (re.compile(r"请问.{0,10}本人"), 2.0, "identity check 请问是…本人吗"),
        (re.compile(r"逾期|于七|欠款|还款|环款|贷款|账单|官方"), 1.0, "collection script words"),
        (re.compile(r"是我|我就是|你是谁|哪位|手头紧|过几天|没钱"), -1.5, "customer reply"),
    ],
    "en": [
        (
            re.compile(r"\b(this is|my name is)\b.{0,60}\b(from|with|at)\b", re.I),
            3.0,
            "self-introduction this is … from",
        ),
        (re.compile(r"\bagent\b.{0,20}\d|\bagent (number|id)\b", re.I), 2.0, "gave an agent number"),
        (
            re.compile(r"\b(calling|call) about your\b|\babout your (loan|account|debt)\b", re.I),
            2.0,
            "calling about your loan",
        ),
        (re.compile(r"\b(call|conversation) (is|will be|may be) recorded\b", re.I), 2.0, "recording notice"),
        (re.compile(r"\b(am i speaking (with|to)|is this \w+( \w+)?\?)", re.I), 2.0, "identity check"),
        (re.compile(r"\boverdue\b|\byou owe\b|\bofficial app\b|\bbalance\b", re.I), 1.0, "collection script words"),
        (re.compile(r"^\s*(yes|yeah|speaking|who is this)\b|\bi can('t| ?not)? pay\b", re.I), -1.5, "customer reply"),
    ],
}
_FIRST_SPEAKER_WEIGHT = 0.5  # outbound calls: the agent usually opens
_MOST_TALK_WEIGHT = 0.5  # the agent usually talks most
_CONFIDENCE_SCALE = 2.5  # score margin → confidence: 1 - exp(-margin / scale)


class SpeakerResult(BaseModel):
    """The Speakers stage's output: role-labelled segments, how roles were assigned, conversation metrics."""

    segments: list[Segment]
    roles: RoleAssignment
    conversation: ConversationMetrics
    turns: list[SpeakerTurn] = Field(default_factory=list)  # diarization output (mono calls)
    version: str = SPEAKERS_VERSION


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def speaker_at(start: float, end: float, turns: list[SpeakerTurn]) -> str | None:
    """The speaker whose turns cover most of [start, end]; the nearest turn's when none overlaps."""
    if not turns:
        return None
    cover: dict[str, float] = {}
    for turn in turns:
        cover[turn.speaker] = cover.get(turn.speaker, 0.0) + _overlap(start, end, turn.start, turn.end)
    best = max(cover.items(), key=lambda item: item[1])
    if best[1] > 0:
        return best[0]
    middle = (start + end) / 2
    return min(turns, key=lambda t: min(abs(middle - t.start), abs(middle - t.end))).speaker


def split_by_speaker(segments: list[AsrSegment], turns: list[SpeakerTurn]) -> list[tuple[str | None, AsrSegment]]:
    """Each ASR segment with its speaker; a segment is cut at word boundaries where the speaker changes."""
    out: list[tuple[str | None, AsrSegment]] = []
    for seg in segments:
        if not seg.words:
            out.append((speaker_at(seg.start, seg.end, turns), seg))
            continue
        runs: list[tuple[str | None, list[AsrWord]]] = []
        for word in seg.words:
            speaker = speaker_at(word.start, word.end, turns)
            if runs and runs[-1][0] == speaker:
                runs[-1][1].append(word)
            else:
                runs.append((speaker, [word]))
        if len(runs) == 1:
            out.append((runs[0][0], seg))
            continue
        for speaker, words in runs:
            text = "".join(w.text for w in words).strip()
            piece = AsrSegment(words[0].start, words[-1].end, text, words, seg.avg_logprob, seg.no_speech_prob)
            out.append((speaker, piece))
    return out


def assign_roles(
    segments: list[Segment], turns: list[SpeakerTurn], language: str, min_confidence: float = 0.6
) -> RoleAssignment:
    """Which diarization speaker is the agent, the customer, a third party — from what they say.

    Cues (self-introduction, 工号 / agent number, recording notice, identity check, collection words;
    customer-style replies count against) are scored per speaker, plus small weights for opening the call
    and for talking most. The top scorer is the agent, the next-most-talkative the customer, any others
    third parties. Confidence grows with the agent's lead over the runner-up; below ``min_confidence``
    the assignment is marked ``needs_review``.
    """
    speakers = list(dict.fromkeys(t.speaker for t in sorted(turns, key=lambda t: t.start)))
    if not speakers:
        return RoleAssignment(method="none", confidence=0.0, needs_review=True, cues=["no speech found"])
    lang = "zh" if language.lower().startswith(("zh", "cmn", "yue")) else "en"
    score = dict.fromkeys(speakers, 0.0)
    talk = dict.fromkeys(speakers, 0.0)
    for turn in turns:
        talk[turn.speaker] += turn.end - turn.start
    cues: list[str] = []
    for seg in segments:
        speaker = speaker_at(seg.start, seg.end, turns)
        if speaker is None:
            continue
        for pattern, weight, reason in _CUES[lang]:
            found = pattern.search(seg.text)
            if found:
                score[speaker] += weight
                cues.append(f"{speaker} {reason}: {found.group(0)!r} at {seg.start:.1f}s ({weight:+g})")
    score[speakers[0]] += _FIRST_SPEAKER_WEIGHT
    cues.append(f"{speakers[0]} spoke first ({_FIRST_SPEAKER_WEIGHT:+g})")
    most = max(speakers, key=lambda s: talk[s])
    score[most] += _MOST_TALK_WEIGHT
    cues.append(f"{most} talked most, {talk[most]:.1f}s ({_MOST_TALK_WEIGHT:+g})")

    ranked = sorted(speakers, key=lambda s: score[s], reverse=True)
    agent = ranked[0]
    roles = {agent: Role.AGENT}
    others = sorted(ranked[1:], key=lambda s: talk[s], reverse=True)
    for index, speaker in enumerate(others):
        roles[speaker] = Role.CUSTOMER if index == 0 else Role.THIRD_PARTY
    runner_up = score[ranked[1]] if len(ranked) > 1 else 0.0
    margin = max(0.0, score[agent] - runner_up)
    confidence = round(1 - math.exp(-margin / _CONFIDENCE_SCALE), 3)
    return RoleAssignment(
        method="cues",
        speaker_roles=roles,
        confidence=confidence,
        needs_review=confidence < min_confidence,
        cues=cues,
    )


def _to_segment(index: int, role: Role, channel: int, seg: AsrSegment) -> Segment:
    return Segment(
        id=f"s{index:04d}",
        role=role,
        channel=channel,
        start=round(seg.start, 3),
        end=round(seg.end, 3),
        text=seg.text,
        words=[
            Word(text=w.text, start=round(w.start, 3), end=round(w.end, 3), probability=round(w.probability, 3))
            for w in seg.words
        ],
    )


def label_speakers(
    channel_segments: dict[int, list[AsrSegment]],
    layout: ChannelLayout,
    language: str,
    turns: list[SpeakerTurn] | None = None,
    min_confidence: float = 0.6,
) -> tuple[list[Segment], RoleAssignment]:
    """Role-labelled segments of a call, time-ordered with ids, and how the roles were decided.

    Stereo: the channel map (exact). Mono with diarization ``turns``: segments split by speaker and
    roles from cues. Mono without turns (no diarizer): roles ``unknown``, marked for review.
    """
    if layout != ChannelLayout.MONO:
        return merge_channels(channel_segments, layout), RoleAssignment(method="channel", confidence=1.0)
    if not turns:
        segments = merge_channels(channel_segments, layout)
        reason = "mono call without diarization" if turns is None else "diarization found no speech"
        return segments, RoleAssignment(method="none", confidence=0.0, needs_review=bool(segments), cues=[reason])
    pieces = [
        (channel, speaker, piece)
        for channel, segs in channel_segments.items()
        for speaker, piece in split_by_speaker(segs, turns)
    ]
    pieces.sort(key=lambda item: (item[2].start, item[0]))
    unlabelled = [_to_segment(i, Role.UNKNOWN, ch, piece) for i, (ch, _spk, piece) in enumerate(pieces, start=1)]
    roles = assign_roles(unlabelled, turns, language, min_confidence)
    segments = [
        seg.model_copy(update={"role": roles.speaker_roles.get(speaker or "", Role.UNKNOWN)})
        for seg, (_ch, speaker, _piece) in zip(unlabelled, pieces, strict=True)
    ]
    return segments, roles
