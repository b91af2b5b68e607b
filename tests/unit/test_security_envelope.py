"""Client-side envelope encryption: round trip, tamper detection, AAD binding, key rotation."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest

from callqc.security.envelope import (
    MAGIC,
    META_CONTENT_TYPE,
    META_KID,
    EncryptedObjectStore,
    Envelope,
    Keyring,
    NotEncryptedError,
    TamperedError,
    UnknownKeyError,
    generate_master_key,
)
from callqc.security.settings import EnvelopeSettings

try:
    from test_security_helpers import FakeObjectStore, ObjectNotFound
except ImportError:  # tests/unit imported as a package
    from tests.unit.test_security_helpers import FakeObjectStore, ObjectNotFound

AUDIO = b"RIFF....WAVEfmt " + "客户您好，这里是某某消费金融，关于您的逾期账单".encode() * 50


@pytest.fixture
def stores() -> tuple[FakeObjectStore, EncryptedObjectStore]:
    inner = FakeObjectStore()
    return inner, EncryptedObjectStore(inner, Keyring.generate("k1"))


@pytest.mark.parametrize("payload", [b"", b"x", AUDIO, os.urandom(100_000)])
def test_round_trip_and_no_plaintext_in_inner_store(stores, payload: bytes) -> None:
    inner, enc = stores
    enc.put_bytes("audio/b1/c1.wav", payload, metadata={"call-id": "c1"}, content_type="audio/wav")
    assert enc.get_bytes("audio/b1/c1.wav") == payload
    raw, md, ctype = inner.objects["audio/b1/c1.wav"]
    assert raw.startswith(MAGIC) and ctype == "application/octet-stream"
    assert md["call-id"] == "c1" and md[META_KID] == "k1" and md[META_CONTENT_TYPE] == "audio/wav"
    if len(payload) >= 16:  # a 1-byte payload can occur in random ciphertext by chance
        assert payload[:64] not in raw
    assert "客户".encode() not in raw
    assert len(raw) - len(payload) < 120  # header + tag overhead only


def test_each_object_gets_a_fresh_data_key_and_nonce(stores) -> None:
    inner, enc = stores
    enc.put_bytes("a", AUDIO)
    enc.put_bytes("b", AUDIO)
    ea, eb = Envelope.parse(inner.get_bytes("a")), Envelope.parse(inner.get_bytes("b"))
    assert ea.nonce != eb.nonce and ea.wrapped_key != eb.wrapped_key and ea.body != eb.body


def test_header_layout(stores) -> None:
    inner, enc = stores
    enc.put_bytes("k", b"hello")
    raw = inner.get_bytes("k")
    env = Envelope.parse(raw)
    assert raw[4] == 1 and raw[5] == 2 and raw[6:8] == b"k1"  # version, kid length, kid
    assert len(env.wrapped_key) == 12 + 32 + 16 and len(env.nonce) == 12 and len(env.body) == 5 + 16
    assert env.to_bytes() == raw


@pytest.mark.parametrize("where", ["body", "tag", "nonce", "wrapped_key"])
def test_tampering_is_detected(stores, where: str) -> None:
    inner, enc = stores
    enc.put_bytes("k", AUDIO)
    env = Envelope.parse(inner.get_bytes("k"))
    flip = {
        "body": lambda e: Envelope(e.key_id, e.wrapped_key, e.nonce, bytes([e.body[0] ^ 1]) + e.body[1:]),
        "tag": lambda e: Envelope(e.key_id, e.wrapped_key, e.nonce, e.body[:-1] + bytes([e.body[-1] ^ 1])),
        "nonce": lambda e: Envelope(e.key_id, e.wrapped_key, bytes([e.nonce[0] ^ 1]) + e.nonce[1:], e.body),
        "wrapped_key": lambda e: Envelope(e.key_id, e.wrapped_key[:-1] + b"\0", e.nonce, e.body),
    }[where]
    inner.put_bytes("k", flip(env).to_bytes())
    with pytest.raises(TamperedError):
        enc.get_bytes("k")


def test_object_moved_to_another_key_is_rejected(stores) -> None:
    inner, enc = stores
    enc.put_bytes("reports/b1/c1.json", b'{"score": 40}')
    enc.put_bytes("reports/b1/c2.json", b'{"score": 95}')
    inner.put_bytes("reports/b1/c2.json", inner.get_bytes("reports/b1/c1.json"))  # swap in another call's report
    with pytest.raises(TamperedError):
        enc.get_bytes("reports/b1/c2.json")


@pytest.mark.parametrize(
    "blob", [b"", b"plain text", MAGIC + b"\x02\x02k1", MAGIC + b"\x01\x02k1\x00", MAGIC + b"\x01"]
)
def test_unencrypted_or_truncated_objects(stores, blob: bytes) -> None:
    inner, enc = stores
    inner.put_bytes("k", blob)
    with pytest.raises(NotEncryptedError):
        enc.get_bytes("k")


def test_missing_object_raises_store_error(stores) -> None:
    _inner, enc = stores
    with pytest.raises(ObjectNotFound):
        enc.get_bytes("nope")


def test_passthrough_methods(stores) -> None:
    inner, enc = stores
    assert enc.put_if_absent("p/1", b"one") is True
    assert enc.put_if_absent("p/1", b"two") is False
    assert enc.get_bytes("p/1") == b"one"
    enc.put_bytes("p/2", b"x")
    assert enc.list_keys("p/") == ["p/1", "p/2"] and enc.exists("p/2")
    assert enc.stat("p/2").size == len(inner.get_bytes("p/2"))
    enc.delete("p/2")
    assert not enc.exists("p/2") and enc.stat("p/2") is None
    enc.put_json("j", {"评分": 88})
    assert enc.get_json("j") == {"评分": 88} and "评分".encode() not in inner.get_bytes("j")
    enc.put_stream("s", io.BytesIO(AUDIO), len(AUDIO), content_type="audio/wav")
    assert enc.get_bytes("s") == AUDIO
    with pytest.raises(ValueError):
        enc.put_stream("s2", io.BytesIO(b"abc"), 10)
    with pytest.raises(NotImplementedError):
        enc.presigned_get("s")


def test_rotation_rewraps_without_reencrypting_and_old_key_can_be_retired() -> None:
    inner = FakeObjectStore()
    k1 = Keyring.generate("k1")
    old = EncryptedObjectStore(inner, k1)
    for i in range(3):
        old.put_bytes(f"audio/{i}.wav", AUDIO + bytes([i]), metadata={"n": str(i)})
    old.put_bytes("other/x", b"not rotated")
    before = {k: Envelope.parse(inner.get_bytes(k)) for k in inner.list_keys("audio/")}

    k2 = k1.with_key("k2", generate_master_key())
    assert k2.active_key_id == "k2"
    rotating = EncryptedObjectStore(inner, k2)
    assert rotating.rewrap_prefix("audio/") == 3
    assert rotating.rewrap("audio/0.wav") is False  # already on k2
    for k, env in before.items():
        after = Envelope.parse(inner.get_bytes(k))
        assert after.key_id == "k2" and after.wrapped_key != env.wrapped_key
        assert (after.nonce, after.body) == (env.nonce, env.body)  # payload untouched
        assert inner.stat(k).metadata[META_KID] == "k2" and inner.stat(k).metadata["n"] == k[6]

    retired = EncryptedObjectStore(inner, k2.without_key("k1"))
    assert retired.get_bytes("audio/2.wav") == AUDIO + b"\x02"
    with pytest.raises(UnknownKeyError):
        retired.get_bytes("other/x")  # never re-wrapped: needs k1
    with pytest.raises(UnknownKeyError):
        EncryptedObjectStore(inner, Keyring.generate("k1")).get_bytes("audio/0.wav")
    with pytest.raises(TamperedError):  # same id, different key material
        EncryptedObjectStore(inner, Keyring.generate("k2")).get_bytes("audio/0.wav")


def test_keyring_validation_and_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError):
        Keyring({"k1": b"short"}, "k1")
    with pytest.raises(ValueError):
        Keyring({"k1": generate_master_key()}, "k2")
    with pytest.raises(ValueError):
        Keyring({"bad id!": generate_master_key()}, "bad id!")
    with pytest.raises(ValueError):
        Keyring.generate("k1").without_key("k1")
    ring = Keyring.generate("k1").with_key("k2", generate_master_key(), activate=False)
    assert ring.active_key_id == "k1" and ring.key_ids == ["k1", "k2"]
    text = ring.to_json()
    assert sorted(json.loads(text)["keys"]) == ["k1", "k2"]
    assert len(base64.b64decode(json.loads(text)["keys"]["k2"])) == 32

    path = tmp_path / "keyring.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, text.encode())
    os.close(fd)
    loaded = Keyring.from_settings(EnvelopeSettings(keyring_file=path))
    data = EncryptedObjectStore(FakeObjectStore(), ring)
    data.put_bytes("x", b"secret")
    assert EncryptedObjectStore(data.inner, loaded).get_bytes("x") == b"secret"
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError):
        Keyring.from_settings(EnvelopeSettings(keyring_file=path))
    monkeypatch.setenv("CALLQC_TEST_KEYRING", text)
    assert Keyring.from_settings(EnvelopeSettings(keyring_env="CALLQC_TEST_KEYRING")).key_ids == ["k1", "k2"]
    monkeypatch.delenv("CALLQC_TEST_KEYRING")
    with pytest.raises(LookupError):
        Keyring.from_settings(EnvelopeSettings(keyring_env="CALLQC_TEST_KEYRING"))
