"""Per-call error codes (the proto's ``CallError`` enum, without its prefix)."""

from __future__ import annotations

from enum import StrEnum


class CallErrorCode(StrEnum):
    INVALID_CALL = "INVALID_CALL"
    AUDIO_NOT_FOUND = "AUDIO_NOT_FOUND"
    AUDIO_TOO_LARGE = "AUDIO_TOO_LARGE"
    AUDIO_UNDECODABLE = "AUDIO_UNDECODABLE"
    AUDIO_EMPTY = "AUDIO_EMPTY"
    AUDIO_TOO_LONG = "AUDIO_TOO_LONG"
    CHANNEL_MISMATCH = "CHANNEL_MISMATCH"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    INVALID_METADATA = "INVALID_METADATA"
    PROCESSING_FAILED = "PROCESSING_FAILED"
    AUDIO_UNSUPPORTED_FORMAT = "AUDIO_UNSUPPORTED_FORMAT"
    AUDIO_TRUNCATED = "AUDIO_TRUNCATED"
    AUDIO_TOO_MANY_CHANNELS = "AUDIO_TOO_MANY_CHANNELS"
    AUDIO_DECODE_LIMIT = "AUDIO_DECODE_LIMIT"


class CallProcessingError(Exception):
    """A call cannot be inspected for a reason the caller must be told; retrying will not help."""

    def __init__(self, code: CallErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[CallErrorCode, str]]:  # survives pickling across Ray
        return (type(self), (self.code, self.message))
