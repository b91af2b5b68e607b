"""Who spoke when: map channels to roles and merge the per-channel transcripts in time order.

Stereo recordings are exact: each channel is one party. Mono recordings are labelled ``unknown``
until a diarization backend assigns speakers.
"""

from __future__ import annotations

from callqc.asr import AsrSegment
from callqc.models import ChannelLayout, Role, Segment, Word

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
        merged.append(
            Segment(
                id=f"s{index:04d}",
                role=roles.get(channel, Role.UNKNOWN),
                channel=channel,
                start=round(seg.start, 3),
                end=round(seg.end, 3),
                text=seg.text,
                words=[
                    Word(text=w.text, start=round(w.start, 3), end=round(w.end, 3), probability=round(w.probability, 3))
                    for w in seg.words
                ],
            )
        )
    return merged
