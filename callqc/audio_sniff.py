"""Identify an upload by its bytes (never by its name) and check a WAV header, in pure Python.

This runs in the serving process before anything touches FFmpeg, so it only reads a few header
bytes: the magic number picks the one demuxer the isolated decoder may use (FFmpeg's own probing,
which can follow playlists and concat lists, is never used), and a RIFF/WAVE header's declared
channels, rate and length are checked against the caps and against the bytes actually present.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from callqc.errors import CallErrorCode, CallProcessingError

# demuxer name → what it is; the only containers the decoder will open
ACCEPTED = {"wav": "WAV", "mp3": "MP3", "ogg": "Ogg (Opus/Vorbis)", "flac": "FLAC", "amr": "AMR"}
_NOT_AUDIO = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable"),
    (b"#EXTM3U", "an HLS playlist"),
    (b"ffconcat", "an FFmpeg concat list"),
    (b"\x1a\x45\xdf\xa3", "a Matroska/WebM container"),
    (b"<", "markup text"),
    (b"{", "JSON text"),
]
_WAV_TAGS = {
    0x0001: "PCM",
    0x0003: "IEEE float",
    0x0006: "G.711 A-law",
    0x0007: "G.711 mu-law",
    0x0002: "MS ADPCM",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0055: "MP3",
    0xFFFE: "extensible",
}
_UNSIZED = (0xFFFFFFFF,)  # streaming recorders write this before they know the length
_MAX_CHUNKS = 256
MIN_RATE, MAX_RATE = 4000, 192000


class AudioError(CallProcessingError):
    """The audio cannot be inspected; not worth retrying."""


@dataclass(frozen=True)
class WavHeader:
    format_tag: int
    channels: int
    sample_rate: int
    byte_rate: int
    block_align: int
    bits: int
    data_offset: int
    declared_bytes: int  # what the data chunk header claims
    present_bytes: int  # what the file really holds after the data chunk header

    @property
    def duration(self) -> float:
        """Seconds of audio present (never the header's claim)."""
        return self.present_bytes / self.byte_rate


@dataclass(frozen=True)
class Sniffed:
    demuxer: str  # one of ACCEPTED
    wav: WavHeader | None = None


def _mp3_frame_header(head: bytes) -> bool:
    """An MPEG audio frame sync with a legal version, layer, bitrate and sample-rate index."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3


def sniff(head: bytes) -> str:
    """The demuxer for these leading bytes, or AUDIO_UNSUPPORTED_FORMAT naming what they are."""
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith((b"#!AMR\n", b"#!AMR-WB\n")):
        return "amr"
    if head.startswith(b"ID3") or _mp3_frame_header(head):
        return "mp3"
    if head[4:8] == b"ftyp":
        what = "an MP4/M4A container"
    else:
        what = next((name for magic, name in _NOT_AUDIO if head.startswith(magic)), "")
    if not what:
        what = "unrecognised content (first bytes " + head[:8].hex(" ") + ")"
    allowed = ", ".join(ACCEPTED.values())
    raise AudioError(CallErrorCode.AUDIO_UNSUPPORTED_FORMAT, f"{what}, not an accepted audio format ({allowed})")


def _corrupt(detail: str) -> AudioError:
    return AudioError(CallErrorCode.AUDIO_UNDECODABLE, f"corrupt WAV header: {detail}")


def parse_wav(head: bytes, file_size: int) -> WavHeader:
    """Walk the RIFF chunks up to ``data``; ``head`` must hold at least the chunks before it."""
    if head[:4] == b"RF64":
        raise AudioError(CallErrorCode.AUDIO_UNSUPPORTED_FORMAT, "RF64 (64-bit WAV) is not accepted; export as WAV")
    pos, fmt, chunks = 12, None, 0
    while True:
        chunks += 1
        if chunks > _MAX_CHUNKS:
            raise _corrupt(f"more than {_MAX_CHUNKS} chunks before the audio data")
        if pos + 8 > file_size:
            if fmt is None:
                raise _corrupt("the file ends before the fmt chunk")
            raise AudioError(CallErrorCode.AUDIO_EMPTY, "WAV file has no data chunk (header only, no samples)")
        if pos + 8 > len(head):
            raise _corrupt("the chunks before the audio data are too large")
        chunk_id, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"data":
            break
        if body + size > file_size:
            raise _corrupt(f"chunk {chunk_id!r} declares {size} bytes but only {file_size - body} remain")
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(head):
                raise _corrupt(f"fmt chunk is {size} bytes, at least 16 are needed")
            fmt = struct.unpack_from("<HHIIHH", head, body)
        pos = body + size + (size & 1)
    if fmt is None:
        raise _corrupt("the data chunk comes before any fmt chunk")
    tag, channels, rate, byte_rate, block_align, bits = fmt
    present = min(size, file_size - body)  # chunks may follow the data
    if tag not in _WAV_TAGS:
        raise AudioError(
            CallErrorCode.AUDIO_UNSUPPORTED_FORMAT,
            f"WAV codec tag 0x{tag:04x} is not accepted (accepted: {', '.join(sorted(set(_WAV_TAGS.values())))})",
        )
    if channels == 0:
        raise _corrupt("it declares 0 channels")
    if rate == 0:
        raise _corrupt("it declares a sample rate of 0 Hz")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise _corrupt(f"sample rate {rate} Hz is outside {MIN_RATE}–{MAX_RATE} Hz")
    if byte_rate == 0 or block_align == 0:
        raise _corrupt(f"it declares byte rate {byte_rate} and block align {block_align}")
    return WavHeader(tag, channels, rate, byte_rate, block_align, bits, body, size, present)


def check_wav(wav: WavHeader, max_channels: int, max_duration: float, accept_damaged: bool) -> None:
    """Caps and length, from the header and the file size alone (nothing is decoded)."""
    if wav.channels > max_channels:
        raise AudioError(
            CallErrorCode.AUDIO_TOO_MANY_CHANNELS, f"WAV declares {wav.channels} channels; the cap is {max_channels}"
        )
    if wav.present_bytes < wav.block_align:
        raise AudioError(CallErrorCode.AUDIO_EMPTY, "WAV data chunk holds no samples")
    if wav.duration > max_duration:
        raise AudioError(
            CallErrorCode.AUDIO_TOO_LONG, f"audio lasts {wav.duration:.0f}s; the cap is {max_duration:.0f}s"
        )
    if wav.declared_bytes > wav.present_bytes and not accept_damaged:  # present == what the file holds
        claim = " (0xFFFFFFFF, the placeholder of an unfinished recording)" if wav.declared_bytes in _UNSIZED else ""
        raise AudioError(
            CallErrorCode.AUDIO_TRUNCATED,
            f"WAV data chunk declares {wav.declared_bytes} bytes{claim} but the file holds {wav.present_bytes} "
            f"({wav.present_bytes / wav.byte_rate:.3f}s of {wav.declared_bytes / wav.byte_rate:.3f}s)",
        )


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
        table.append(crc)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_page_ok(page: bytes) -> bool:
    crc = 0
    for i, byte in enumerate(page):
        byte = 0 if 22 <= i < 26 else byte  # the CRC field counts as zeros
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ byte]
    return crc == struct.unpack_from("<I", page, 22)[0]


def check_ogg_tail(tail: bytes) -> None:
    """An Ogg file must end with a complete page flagged end-of-stream; otherwise it was cut off."""
    at = len(tail)
    while (at := tail.rfind(b"OggS", 0, at)) >= 0:
        if at + 27 > len(tail):
            continue
        segments = tail[at + 26]
        table = tail[at + 27 : at + 27 + segments]
        end = at + 27 + segments + sum(table)
        if len(table) == segments and end == len(tail) and _ogg_page_ok(tail[at:end]):
            if not tail[at + 5] & 0x04:
                raise AudioError(CallErrorCode.AUDIO_TRUNCATED, "the Ogg stream ends without its end-of-stream page")
            return
    raise AudioError(CallErrorCode.AUDIO_TRUNCATED, "the Ogg stream is cut off inside its last page")


def inspect_head(head: bytes, file_size: int, max_channels: int, max_duration: float, accept_damaged: bool) -> Sniffed:
    """Sniff the format; for WAV also validate the header (the decoder's probe covers the rest)."""
    if file_size == 0:
        raise AudioError(CallErrorCode.AUDIO_EMPTY, "audio object is empty (0 bytes)")
    demuxer = sniff(head)
    if demuxer != "wav":
        return Sniffed(demuxer)
    wav = parse_wav(head, file_size)
    check_wav(wav, max_channels, max_duration, accept_damaged)
    return Sniffed(demuxer, wav)
