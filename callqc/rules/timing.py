"""Map a character span of a segment's text to audio time using the word timestamps."""

from __future__ import annotations

from callqc.models import Segment

WordSpan = tuple[int, int, float, float]  # char start, char end, time start, time end


def word_char_spans(segment: Segment) -> list[WordSpan]:
    """``(char_start, char_end, time_start, time_end)`` of each word found in order in the text."""
    spans = []
    cursor = 0
    for word in segment.words:
        token = word.text.strip()
        if not token:
            continue
        at = segment.text.find(token, cursor)
        if at < 0:
            continue  # a word the text does not spell the same way: skip it, keep the rest aligned
        spans.append((at, at + len(token), word.start, word.end))
        cursor = at + len(token)
    return spans


def time_span(segment: Segment, start: int, end: int, spans: list[WordSpan]) -> tuple[float, float]:
    """Audio span of ``segment.text[start:end]``: the words it overlaps, else the whole segment."""
    hit = [(t0, t1) for c0, c1, t0, t1 in spans if c0 < end and c1 > start]
    if not hit:
        return segment.start, segment.end
    return min(t0 for t0, _ in hit), max(t1 for _, t1 in hit)
