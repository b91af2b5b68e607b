"""Short-lived signed audio URLs, and HTTP Range parsing for the audio route.

Audio is envelope-encrypted in the bucket, so an S3 presigned URL would hand out ciphertext; the web
server decrypts and serves it itself. A URL names one call of one batch, the person it was issued to
(for the audit trail) and an expiry, under an HMAC-SHA256 signature::

    /audio/{batch_id}/{call_id}?sub=alice&exp=1764398400&sig=<hex>

Anyone holding the URL can play the call until it expires (as with a presigned URL), so the lifetime
is minutes and the URL is only issued to someone the permission table lets listen.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from callqc.security.keyfiles import read_private

_CONTEXT = b"callqc-audio-url-v1"
MIN_KEY_BYTES = 32


class SignatureInvalid(Exception):
    """The URL is forged, altered, for another call, or expired (``reason`` says which)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AudioGrant:
    """What a valid signed URL allows: ``subject`` may read this call's audio until ``expires``."""

    batch_id: str
    call_id: str
    subject: str
    expires: int


class AudioSigner:
    """Issues and checks signed audio URLs with one HMAC key."""

    def __init__(self, key: bytes, ttl_seconds: int = 120, clock: Callable[[], float] = time.time) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"audio signing key must be at least {MIN_KEY_BYTES} bytes")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._key = key
        self.ttl = ttl_seconds
        self._clock = clock

    @classmethod
    def from_file(cls, path: Path | None, ttl_seconds: int, clock: Callable[[], float] = time.time) -> AudioSigner:
        """Key from ``path`` (shared by replicas), else a random key for this process."""
        key = read_private(path) if path is not None else os.urandom(MIN_KEY_BYTES)
        return cls(key, ttl_seconds, clock)

    def _sig(self, batch_id: str, call_id: str, subject: str, expires: int) -> str:
        msg = b"\x1f".join([_CONTEXT, batch_id.encode(), call_id.encode(), subject.encode(), str(expires).encode()])
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def sign(self, batch_id: str, call_id: str, subject: str, ttl_seconds: int | None = None) -> tuple[str, int]:
        """The URL path + query for this call's audio, and its expiry (unix seconds)."""
        ttl = self.ttl if ttl_seconds is None else ttl_seconds
        if not 0 < ttl <= self.ttl:
            raise ValueError(f"ttl must be in (0, {self.ttl}]")
        expires = int(self._clock()) + ttl
        query = urlencode({"sub": subject, "exp": expires, "sig": self._sig(batch_id, call_id, subject, expires)})
        return f"/audio/{quote(batch_id, safe='')}/{quote(call_id, safe='')}?{query}", expires

    def verify(self, batch_id: str, call_id: str, subject: str, expires: str, signature: str) -> AudioGrant:
        """The grant of a URL's parts, or ``SignatureInvalid``. The signature is checked before the expiry,
        so a forged URL is never reported as merely expired."""
        if not subject or not expires.isdigit() or len(expires) > 12 or len(signature) != 64:
            raise SignatureInvalid("malformed")
        exp = int(expires)
        if not hmac.compare_digest(self._sig(batch_id, call_id, subject, exp), signature.lower()):
            raise SignatureInvalid("bad_signature")
        now = self._clock()
        if now >= exp:
            raise SignatureInvalid("expired")
        if exp - now > self.ttl + 5:  # signed with a longer lifetime than this server allows
            raise SignatureInvalid("lifetime_too_long")
        return AudioGrant(batch_id, call_id, subject, exp)


class RangeNotSatisfiable(ValueError):
    """The Range header asks for bytes outside the object (answer 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range ``(first, last)`` of a ``Range`` header, or None to send the whole object.

    One range only (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``); anything else is ignored, which RFC 9110
    allows (the full object is sent with 200).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    first_s, last_s = first_s.strip(), last_s.strip()
    if not dash or (first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()):
        return None
    if not first_s:  # suffix: the last n bytes
        if not last_s:
            return None
        n = int(last_s)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None  # invalid syntax: ignored
    if first >= size:
        raise RangeNotSatisfiable(header)
    return first, min(last, size - 1)
