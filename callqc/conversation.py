"""Conversation metrics per role: talk time, silences, overlaps and interruptions, speech rate, loudness.

Everything is computed from the role-labelled segments (stereo: exact channels; mono: diarized) and,
for loudness, from each role's audio restricted to that role's segments (its own channel on stereo
calls, the mono track on mono calls), in windows of ``loudness_window_seconds`` (1 s), as dBFS.
A raised-voice episode is a run of windows at least ``raised_voice_db`` above the role's own median
for at least ``raised_voice_min_seconds``: agent shouting is an intimidation signal for the rules.
"""

from __future__ import annotations

import re
from itertools import pairwise

import numpy as np

from callqc.diarization.base import DiarizationSettings
from callqc.models import ConversationMetrics, LoudnessPoint, RaisedVoice, Role, RoleMetrics, Segment

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")
_MIN_WINDOW_SPEECH = 0.25  # a loudness window needs this much of the role's speech (seconds)
_FLOOR_DB = -100.0

Interval = tuple[float, float]


def _union(spans: list[Interval]) -> list[Interval]:
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _length(spans: list[Interval]) -> float:
    return sum(b - a for a, b in spans)


def _intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi > lo:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def speech_units(text: str) -> int:
    """Characters of Chinese text plus words of Latin text (chars/min for zh, words/min for en)."""
    return len(_CJK.findall(text)) + len(_LATIN_WORD.findall(_CJK.sub(" ", text)))


def _interruptions(segments: list[Segment], min_overlap: float) -> dict[Role, int]:
    """Times a role started speaking while another role's segment still had ``min_overlap`` s to run."""
    counts: dict[Role, int] = {}
    for seg in segments:
        for other in segments:
            if other.role == seg.role or other is seg:
                continue
            if other.start < seg.start < other.end and min(other.end, seg.end) - seg.start >= min_overlap:
                counts[seg.role] = counts.get(seg.role, 0) + 1
                break
    return counts


def _loudness(
    audio: np.ndarray, spans: list[Interval], duration: float, rate: int, window: float
) -> list[tuple[float, float]]:
    """(window start, dBFS) of the audio inside ``spans``, per window with enough of it."""
    mask = np.zeros(len(audio), dtype=bool)
    for start, end in spans:
        mask[int(start * rate) : int(end * rate)] = True
    points = []
    step = int(window * rate)
    for at in range(0, min(len(audio), int(np.ceil(duration * rate))), step):
        chunk, keep = audio[at : at + step], mask[at : at + step]
        if keep.sum() < _MIN_WINDOW_SPEECH * rate:
            continue
        rms = float(np.sqrt(np.mean(np.square(chunk[keep], dtype=np.float64))))
        points.append((at / rate, max(_FLOOR_DB, 20 * np.log10(rms)) if rms > 0 else _FLOOR_DB))
    return points


def _raised(
    role: Role, points: list[tuple[float, float]], median: float, window: float, s: DiarizationSettings
) -> list[RaisedVoice]:
    """Runs of adjacent windows at least ``raised_voice_db`` above the median, long enough to count."""
    threshold = median + s.raised_voice_db
    runs: list[list[tuple[float, float]]] = []
    for at, db in points:
        if db < threshold:
            continue
        if runs and at - runs[-1][-1][0] <= window + 1e-6:
            runs[-1].append((at, db))
        else:
            runs.append([(at, db)])
    episodes = []
    for run in runs:
        start, end = run[0][0], run[-1][0] + window
        if end - start + 1e-6 < s.raised_voice_min_seconds:
            continue
        peak = max(db for _at, db in run)
        episodes.append(
            RaisedVoice(
                role=role,
                start=round(start, 3),
                end=round(end, 3),
                peak_db=round(peak, 2),
                above_median_db=round(peak - median, 2),
            )
        )
    return episodes


def conversation_metrics(
    segments: list[Segment],
    duration: float,
    channel_audio: dict[Role, np.ndarray] | None,
    sample_rate: int = 16000,
    settings: DiarizationSettings | None = None,
) -> ConversationMetrics:
    """Per-role talk, silence, overlap, interruptions, speech rate and loudness of one call.

    Silence is the time inside the conversation (first speech to last speech) when nobody speaks.
    ``channel_audio`` maps a role to the audio its loudness is measured on (None: no loudness).
    """
    s = settings or DiarizationSettings()
    spans_by_role: dict[Role, list[Interval]] = {}
    for seg in segments:
        spans_by_role.setdefault(seg.role, []).append((seg.start, seg.end))
    unions = {role: _union(spans) for role, spans in spans_by_role.items()}
    everyone = _union([span for spans in unions.values() for span in spans])
    gaps = [b[0] - a[1] for a, b in pairwise(everyone)]
    roles = list(unions)
    overlap = _union(
        [span for i, r in enumerate(roles) for q in roles[i + 1 :] for span in _intersect(unions[r], unions[q])]
    )
    interruptions = _interruptions(segments, s.interruption_min_overlap_seconds)

    loudness: list[LoudnessPoint] = []
    raised: list[RaisedVoice] = []
    medians: dict[Role, float] = {}
    for role, spans in unions.items():
        audio = (channel_audio or {}).get(role)
        if audio is None:
            continue
        points = _loudness(audio, spans, duration, sample_rate, s.loudness_window_seconds)
        if not points:
            continue
        medians[role] = float(np.median([db for _t, db in points]))
        loudness.extend(LoudnessPoint(role=role, time=round(t, 3), db=round(db, 2)) for t, db in points)
        raised.extend(_raised(role, points, medians[role], s.loudness_window_seconds, s))

    metrics = []
    for role, spans in unions.items():
        talk = _length(spans)
        units = sum(speech_units(seg.text) for seg in segments if seg.role == role)
        metrics.append(
            RoleMetrics(
                role=role,
                talk_seconds=round(talk, 3),
                segments=sum(1 for seg in segments if seg.role == role),
                speech_rate_cpm=round(units / (talk / 60), 1) if talk > 0 else 0.0,
                interruptions=interruptions.get(role, 0),
                median_db=round(medians[role], 2) if role in medians else None,
            )
        )
    agent = _length(unions.get(Role.AGENT, []))
    customer = _length(unions.get(Role.CUSTOMER, []))
    return ConversationMetrics(
        duration=round(duration, 3),
        silence_seconds=round(sum(gaps), 3),
        longest_silence_seconds=round(max(gaps, default=0.0), 3),
        overlap_seconds=round(_length(overlap), 3),
        agent_customer_talk_ratio=round(agent / customer, 3) if customer > 0 else None,
        roles=sorted(metrics, key=lambda m: list(Role).index(m.role)),
        loudness=sorted(loudness, key=lambda p: (p.time, list(Role).index(p.role))),
        raised_voice=sorted(raised, key=lambda r: r.start),
    )
