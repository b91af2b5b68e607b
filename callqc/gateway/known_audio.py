"""Sizes of content-addressed audio objects the gateway has already seen, so intake need not HEAD them again.

``audio/uploads/<sha256>`` keys are written once by ``UploadAudio`` and never change: once the gateway has
stored or stat'ed one, its size is known. Keys of other shapes (a call system's own paths, which it may
overwrite) are always checked against S3. Entries expire after a TTL, so an object removed by retention is
noticed again within that time; if it goes in between, AudioPrep fails the call with ``AUDIO_NOT_FOUND``.
"""

from __future__ import annotations

import threading

from cachetools import TTLCache


class KnownAudio:
    """A bounded, expiring, thread-safe map of immutable audio key → size in bytes."""

    def __init__(self, immutable_prefix: str, max_entries: int, ttl_seconds: float) -> None:
        self.immutable_prefix = immutable_prefix
        self._sizes: TTLCache[str, int] | None = TTLCache(max_entries, ttl_seconds) if max_entries else None
        self._lock = threading.Lock()

    def cacheable(self, key: str) -> bool:
        return self._sizes is not None and key.startswith(self.immutable_prefix)

    def size_of(self, key: str) -> int | None:
        """The known size of ``key``, or None when it must be checked against S3."""
        if not self.cacheable(key):
            return None
        with self._lock:
            return self._sizes.get(key)  # type: ignore[union-attr]

    def remember(self, key: str, size: int) -> None:
        if self.cacheable(key):
            with self._lock:
                self._sizes[key] = size  # type: ignore[index]
