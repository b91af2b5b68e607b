"""KnownAudio: only immutable (content-addressed) keys are remembered, bounded and expiring."""

from __future__ import annotations

import time

from callqc.gateway.known_audio import KnownAudio

PREFIX = "audio/uploads/"


def test_content_addressed_keys_are_remembered() -> None:
    known = KnownAudio(PREFIX, max_entries=10, ttl_seconds=60)
    assert known.size_of(f"{PREFIX}abc") is None
    known.remember(f"{PREFIX}abc", 2048)
    assert known.size_of(f"{PREFIX}abc") == 2048


def test_keys_a_call_system_may_overwrite_are_never_remembered() -> None:
    known = KnownAudio(PREFIX, max_entries=10, ttl_seconds=60)
    known.remember("audio/crm/2026/11/call-1.wav", 2048)
    assert known.size_of("audio/crm/2026/11/call-1.wav") is None


def test_entries_expire() -> None:
    known = KnownAudio(PREFIX, max_entries=10, ttl_seconds=0.05)
    known.remember(f"{PREFIX}abc", 1)
    time.sleep(0.1)  # waiting out the TTL, not timing anything
    assert known.size_of(f"{PREFIX}abc") is None


def test_the_map_is_bounded_and_zero_entries_turns_it_off() -> None:
    known = KnownAudio(PREFIX, max_entries=2, ttl_seconds=60)
    for i in range(5):
        known.remember(f"{PREFIX}{i}", i)
    assert sum(known.size_of(f"{PREFIX}{i}") is not None for i in range(5)) == 2
    off = KnownAudio(PREFIX, max_entries=0, ttl_seconds=60)
    off.remember(f"{PREFIX}abc", 1)
    assert off.size_of(f"{PREFIX}abc") is None
