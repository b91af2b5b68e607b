"""Audio made at test time: call-centre formats (PyAV encoders) and the hostile corpus (bytes built by hand).

Nothing here is committed audio: every file is generated deterministically by the test that needs it.
"""

from __future__ import annotations

import io
import struct
import wave

import av
import numpy as np

# ---- valid audio -----------------------------------------------------------------------------------


def tone(rate: int, seconds: float, freq: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    """A float sine in [-1, 1]."""
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def channels(rate: int, seconds: float, count: int) -> np.ndarray:
    """(count, samples): channel i carries 440·(i+1) Hz at 0.3/(i+1), so channels are told apart by level."""
    return np.stack([tone(rate, seconds, 440.0 * (i + 1), 0.3 / (i + 1)) for i in range(count)])


def make_wav(count: int, rate: int, seconds: float) -> bytes:
    """16-bit PCM WAV (the stdlib writer)."""
    frames = (channels(rate, seconds, count).T * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(count)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


def encode(container: str, codec: str, rate: int, count: int, seconds: float, bit_rate: int | None = None) -> bytes:
    """``seconds`` of :func:`channels` encoded with a PyAV (FFmpeg) encoder into ``container``."""
    layout = "mono" if count == 1 else "stereo"
    samples = channels(rate, seconds, count)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if bit_rate:
            stream.bit_rate = bit_rate
        ctx = stream.codec_context
        planar = ctx.format.is_planar
        size = ctx.frame_size or 1024
        for start in range(0, samples.shape[1], size):
            chunk = (samples[:, start : start + size] * 32767).astype(np.int16)
            if planar:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="s16p", layout=layout)
            else:
                frame = av.AudioFrame.from_ndarray(chunk.T.reshape(1, -1), format="s16", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


# what a call-centre recorder writes: name → (bytes factory, channels, source rate)
FORMATS = {
    "wav-pcm16-8k-stereo": (lambda: make_wav(2, 8000, 1.5), 2),
    "wav-pcm16-16k-stereo": (lambda: make_wav(2, 16000, 1.5), 2),
    "wav-pcm16-8k-mono": (lambda: make_wav(1, 8000, 1.5), 1),
    "wav-alaw-8k-stereo": (lambda: encode("wav", "pcm_alaw", 8000, 2, 1.5), 2),
    "wav-mulaw-8k-mono": (lambda: encode("wav", "pcm_mulaw", 8000, 1, 1.5), 1),
    "mp3-16k-stereo": (lambda: encode("mp3", "libmp3lame", 16000, 2, 1.5), 2),
    "ogg-opus-stereo": (lambda: encode("ogg", "libopus", 16000, 2, 1.5), 2),
    "flac-8k-stereo": (lambda: encode("flac", "flac", 8000, 2, 1.5), 2),
    "amr-nb-mono": (lambda: encode("amr", "libopencore_amrnb", 8000, 1, 1.5, bit_rate=12200), 1),
}


# ---- hand-built FLAC (six hours of silence in 40 KB) --------------------------------------------------


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return table


_CRC16 = _crc16_table()


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def _flac_number(n: int) -> bytes:
    """FLAC's UTF-8-style frame number."""
    if n < 0x80:
        return bytes([n])
    size = next(k for k, limit in ((2, 0x800), (3, 0x10000), (4, 0x200000), (5, 0x4000000), (6, 1 << 31)) if n < limit)
    tail = []
    for _ in range(size - 1):
        tail.append(0x80 | (n & 0x3F))
        n >>= 6
    return bytes([((0xFF << (8 - size)) & 0xFF) | n, *reversed(tail)])


def silent_flac(rate: int, seconds: float, declare_length: bool = True, block: int = 65535) -> bytes:
    """A complete, valid mono 16-bit FLAC of digital silence: one CONSTANT subframe per 65535 samples."""
    total = int(rate * seconds)
    info = struct.pack(">HH", block, block) + bytes(6)  # block sizes; frame sizes unknown
    info += ((rate << 44) | (15 << 36) | (total if declare_length else 0)).to_bytes(8, "big") + bytes(16)
    out = bytearray(b"fLaC" + bytes([0x80, 0, 0, len(info)]) + info)
    frame_number, done = 0, 0
    while done < total:
        size = min(block, total - done)
        header = bytes([0xFF, 0xF8, 0x70, 0x00]) + _flac_number(frame_number) + struct.pack(">H", size - 1)
        frame = header + bytes([_crc8(header)]) + b"\x00\x00\x00"  # CONSTANT subframe, value 0
        out += frame + struct.pack(">H", _crc16(frame))
        frame_number += 1
        done += size
    return bytes(out)


# ---- hostile bytes ------------------------------------------------------------------------------------


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def wav_header(channels_: int, rate: int, bits: int, data_bytes: int, tag: int = 1) -> bytes:
    """A canonical 44-byte RIFF/WAVE header declaring ``data_bytes`` of samples."""
    align = channels_ * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels_, rate, rate * align, align, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + (struct.pack("<I", data_bytes))
    )


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02\x00\x00\x00\x90\x91h6" + bytes(64)
