"""Speakers stage: channel → role, segments of both parties merged in time order."""

from __future__ import annotations

from ray import serve

from callqc.asr import AsrSegment
from callqc.models import ChannelLayout, Segment
from callqc.speakers import merge_channels


@serve.deployment(name="Speakers")
class Speakers:
    async def assign(self, channel_segments: dict[int, list[AsrSegment]], layout: ChannelLayout) -> list[Segment]:
        return merge_channels(channel_segments, layout)
