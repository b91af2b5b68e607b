"""Signed audio URLs, Range parsing, the audio cache and the batch ordering of the reviewer page."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from callqc.security.keyfiles import write_private
from callqc.web.app import AudioCache, _safe_next, audio_type
from callqc.web.signing import AudioSigner, RangeNotSatisfiable, SignatureInvalid, parse_range
from callqc.web.views import batch_sort_key

KEY = bytes(range(32))
NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _parts(url: str) -> tuple[str, str, dict[str, str]]:
    split = urlsplit(url)
    _, kind, batch, call = split.path.split("/")
    assert kind == "audio"
    return unquote(batch), unquote(call), {k: v[0] for k, v in parse_qs(split.query).items()}


def test_signed_url_round_trip() -> None:
    signer = AudioSigner(KEY, ttl_seconds=120, clock=Clock())
    url, expires = signer.sign("b1", "call-1", "alice")
    assert expires == NOW + 120
    batch, call, q = _parts(url)
    grant = signer.verify(batch, call, q["sub"], q["exp"], q["sig"])
    assert (grant.batch_id, grant.call_id, grant.subject, grant.expires) == ("b1", "call-1", "alice", NOW + 120)


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch", "b2"), ("call", "call-2"), ("sub", "mallory"), ("exp", str(int(NOW) + 100)), ("sig", "0" * 64)],
)
def test_any_altered_part_is_refused(field: str, value: str) -> None:
    signer = AudioSigner(KEY, clock=Clock())
    batch, call, q = _parts(signer.sign("b1", "call-1", "alice")[0])
    parts = {"batch": batch, "call": call, **q}
    parts[field] = value
    with pytest.raises(SignatureInvalid) as err:
        signer.verify(parts["batch"], parts["call"], parts["sub"], parts["exp"], parts["sig"])
    assert err.value.reason == "bad_signature"


def test_another_key_is_refused() -> None:
    url, _ = AudioSigner(KEY, clock=Clock()).sign("b1", "c", "alice")
    batch, call, q = _parts(url)
    with pytest.raises(SignatureInvalid, match="bad_signature"):
        AudioSigner(b"x" * 32, clock=Clock()).verify(batch, call, q["sub"], q["exp"], q["sig"])


def test_expiry() -> None:
    clock = Clock()
    signer = AudioSigner(KEY, ttl_seconds=60, clock=clock)
    batch, call, q = _parts(signer.sign("b1", "c", "alice")[0])
    clock.now += 59
    signer.verify(batch, call, q["sub"], q["exp"], q["sig"])
    clock.now += 1
    with pytest.raises(SignatureInvalid) as err:
        signer.verify(batch, call, q["sub"], q["exp"], q["sig"])
    assert err.value.reason == "expired"


def test_a_lifetime_longer_than_the_server_allows_is_refused() -> None:
    long_lived = AudioSigner(KEY, ttl_seconds=900, clock=Clock())
    batch, call, q = _parts(long_lived.sign("b1", "c", "alice")[0])
    with pytest.raises(SignatureInvalid, match="lifetime_too_long"):
        AudioSigner(KEY, ttl_seconds=60, clock=Clock()).verify(batch, call, q["sub"], q["exp"], q["sig"])


@pytest.mark.parametrize(("sub", "exp", "sig"), [("", "1", "a" * 64), ("a", "x1", "a" * 64), ("a", "1", "abc")])
def test_malformed_parts(sub: str, exp: str, sig: str) -> None:
    with pytest.raises(SignatureInvalid, match="malformed"):
        AudioSigner(KEY).verify("b", "c", sub, exp, sig)


def test_key_and_ttl_rules(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        AudioSigner(b"short")
    signer = AudioSigner(KEY, ttl_seconds=60)
    with pytest.raises(ValueError):
        signer.sign("b", "c", "a", ttl_seconds=61)
    path = tmp_path / "audio.key"
    write_private(path, KEY)
    url, _ = AudioSigner.from_file(path, 60, clock=Clock()).sign("b", "c", "a")
    assert url == AudioSigner(KEY, 60, clock=Clock()).sign("b", "c", "a")[0]  # replicas share the key
    assert AudioSigner.from_file(None, 60)._key != AudioSigner.from_file(None, 60)._key


def test_ids_are_quoted_in_the_path() -> None:
    url, _ = AudioSigner(KEY, clock=Clock()).sign("b:1", "call.2", "li.si")
    assert url.startswith("/audio/b%3A1/call.2?sub=li.si&exp=")


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("", 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=90-500", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-500", 100, (0, 99)),
        ("bytes=0-0", 1, (0, 0)),
        ("bytes=5-2", 100, None),  # invalid: ignored, whole object
        ("bytes=0-9,20-29", 100, None),  # several ranges: whole object (allowed by RFC 9110)
        ("items=0-9", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=-", 100, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100)])
def test_unsatisfiable_range(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_audio_cache_is_bounded_in_bytes_and_time() -> None:
    clock = Clock(0)
    cache = AudioCache(max_bytes=10, ttl_seconds=5, clock=clock)
    cache.put("a", b"12345")
    cache.put("b", b"12345")
    assert cache.get("a") == b"12345"  # now most recently used
    cache.put("c", b"1")
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None
    clock.now = 6
    assert cache.get("a") is None


def test_audio_type_from_bytes() -> None:
    assert audio_type(b"RIFF\x00\x00\x00\x00WAVE") == "audio/wav"
    assert audio_type(b"ID3\x04") == "audio/mpeg"
    assert audio_type(b"OggS") == "audio/ogg"
    assert audio_type(b"<html>") == "application/octet-stream"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("/batches/b1", "/batches/b1"), ("//evil.example/", "/"), ("https://evil.example/", "/"), ("/\\evil", "/")],
)
def test_login_redirect_stays_on_site(value: str, expected: str) -> None:
    assert _safe_next(value) == expected


def test_batch_rows_sort_by_verdict_then_severity() -> None:
    rows = [
        {"call_id": "c-pass", "verdict": "pass", "top_severity": ""},
        {"call_id": "c-queued", "verdict": "", "top_severity": ""},
        {"call_id": "c-review-s1", "verdict": "needs_review", "top_severity": "S1"},
        {"call_id": "c-fail-s1", "verdict": "fail", "top_severity": "S1"},
        {"call_id": "c-review-s0", "verdict": "needs_review", "top_severity": "S0"},
        {"call_id": "c-fail-s0", "verdict": "fail", "top_severity": "S0"},
    ]
    assert [r["call_id"] for r in sorted(rows, key=batch_sort_key)] == [
        "c-fail-s0",
        "c-fail-s1",
        "c-review-s0",
        "c-review-s1",
        "c-pass",
        "c-queued",
    ]


def test_server_refuses_plaintext_off_loopback_and_tls_without_a_certificate() -> None:
    from callqc.settings import load_settings
    from callqc.web.server import uvicorn_config

    settings = load_settings()
    with pytest.raises(ValueError, match="cert_file"):
        uvicorn_config(settings.model_copy(update={"web": settings.web.model_copy(update={"tls_mode": "tls"})}), None)
    public_plain = settings.web.model_copy(update={"tls_mode": "plain", "host": "0.0.0.0"})
    with pytest.raises(ValueError, match="loopback"):
        uvicorn_config(settings.model_copy(update={"web": public_plain}), None)
    local_plain = settings.web.model_copy(update={"tls_mode": "plain"})
    assert uvicorn_config(settings.model_copy(update={"web": local_plain}), None).ssl_certfile is None
