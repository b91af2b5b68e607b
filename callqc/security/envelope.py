"""Client-side envelope encryption (AES-256-GCM) in front of the object store.

Every object gets a fresh 256-bit data key. The payload is sealed with AES-GCM under that
key (random 96-bit nonce, AAD = domain tag + object key, so an object copied or moved to
another key no longer opens). The data key is wrapped with the active master key of a
``Keyring`` (AES-GCM, AAD = domain tag + key id + object key). Production can put a KMS
behind the same ``KeyWrapper`` protocol.

Chosen layout: a header **prepended to the ciphertext** (not S3 user metadata), so the key
material travels atomically with the bytes and survives copies and backups::

    magic   4  b"CQEN"
    version 1  0x01
    kid_len 1  n (1..64)
    kid     n  master key id, ASCII
    wk_len  2  m, big-endian
    wk      m  wrapped data key = wrap nonce(12) || AES-GCM(master, data key)(32+16)
    nonce  12  payload nonce
    body    *  AES-GCM(data key, payload) ciphertext || 16-byte tag

User metadata and the content type stay in clear text in S3: never put personal data there.
The store records ``callqc-enc`` / ``callqc-kid`` metadata only as a hint for rotation tooling.
``rewrap`` re-wraps the data key under the active master key and rewrites the header,
copying the payload ciphertext unchanged (key rotation without re-encryption).
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from callqc.security.keyfiles import read_private
from callqc.security.settings import EnvelopeSettings
from callqc.security.store import ObjectStoreLike

MAGIC = b"CQEN"
VERSION = 1
NONCE_LEN = 12
KEY_LEN = 32
_KID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PAYLOAD_AAD = b"callqc/envelope/v1/object\x00"
_WRAP_AAD = b"callqc/envelope/v1/dek\x00"
META_ENC = "callqc-enc"
META_KID = "callqc-kid"
META_CONTENT_TYPE = "callqc-content-type"


class EnvelopeError(Exception):
    """An object could not be decrypted or re-wrapped."""


class NotEncryptedError(EnvelopeError):
    """The stored bytes do not carry a (supported) envelope header."""


class UnknownKeyError(EnvelopeError):
    """The master key the object was wrapped with is not in the keyring (retired?)."""


class TamperedError(EnvelopeError):
    """Authentication failed: bytes changed, or the object sits under another key."""


class KeyWrapper(Protocol):
    """Wraps data keys; a ``Keyring`` here, a KMS client in production."""

    @property
    def active_key_id(self) -> str: ...

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]: ...

    def unwrap(self, key_id: str, wrapped: bytes, context: bytes) -> bytes: ...


def generate_master_key() -> bytes:
    """32 random bytes for a new master key."""
    return AESGCM.generate_key(bit_length=256)


class Keyring:
    """Master keys by id; exactly one is active (used for new wraps).

    JSON form (file or env var): ``{"active": "k2", "keys": {"k1": "<base64>", "k2": "<base64>"}}``.
    """

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        for kid, key in keys.items():
            if not _KID_RE.fullmatch(kid):
                raise ValueError(f"bad key id {kid!r}")
            if len(key) != KEY_LEN:
                raise ValueError(f"master key {kid!r} must be {KEY_LEN} bytes")
        if active not in keys:
            raise ValueError(f"active key {active!r} is not in the keyring")
        self._keys = dict(keys)
        self._active = active

    @property
    def active_key_id(self) -> str:
        return self._active

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    @classmethod
    def generate(cls, key_id: str = "k1") -> Keyring:
        return cls({key_id: generate_master_key()}, key_id)

    @classmethod
    def from_json(cls, text: str) -> Keyring:
        data = json.loads(text)
        keys = {kid: base64.b64decode(v, validate=True) for kid, v in data["keys"].items()}
        return cls(keys, data["active"])

    def to_json(self) -> str:
        keys = {kid: base64.b64encode(k).decode() for kid, k in self._keys.items()}
        return json.dumps({"active": self._active, "keys": keys}, sort_keys=True)

    @classmethod
    def from_settings(cls, settings: EnvelopeSettings) -> Keyring:
        """Load from ``keyring_file`` (mode must be 0600/0400) or the ``keyring_env`` variable."""
        if settings.keyring_file is not None:
            return cls.from_json(read_private(settings.keyring_file).decode("utf-8"))
        text = os.environ.get(settings.keyring_env)
        if not text:
            raise LookupError(f"no master keyring: set keyring_file or ${settings.keyring_env}")
        return cls.from_json(text)

    def with_key(self, key_id: str, key: bytes, activate: bool = True) -> Keyring:
        """A new keyring with ``key_id`` added (and made active by default)."""
        keys = {**self._keys, key_id: key}
        return Keyring(keys, key_id if activate else self._active)

    def without_key(self, key_id: str) -> Keyring:
        """A new keyring with ``key_id`` retired; the active key cannot be retired."""
        if key_id == self._active:
            raise ValueError("cannot retire the active key")
        return Keyring({k: v for k, v in self._keys.items() if k != key_id}, self._active)

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(NONCE_LEN)
        aad = _WRAP_AAD + self._active.encode() + b"\x00" + context
        return self._active, nonce + AESGCM(self._keys[self._active]).encrypt(nonce, data_key, aad)

    def unwrap(self, key_id: str, wrapped: bytes, context: bytes) -> bytes:
        master = self._keys.get(key_id)
        if master is None:
            raise UnknownKeyError(f"master key {key_id!r} is not in the keyring")
        aad = _WRAP_AAD + key_id.encode() + b"\x00" + context
        try:
            return AESGCM(master).decrypt(wrapped[:NONCE_LEN], wrapped[NONCE_LEN:], aad)
        except InvalidTag:
            raise TamperedError("wrapped data key does not authenticate") from None


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope: header fields and the untouched payload ciphertext."""

    key_id: str
    wrapped_key: bytes
    nonce: bytes
    body: bytes

    def to_bytes(self) -> bytes:
        kid = self.key_id.encode("ascii")
        return b"".join(
            [
                MAGIC,
                struct.pack(">BB", VERSION, len(kid)),
                kid,
                struct.pack(">H", len(self.wrapped_key)),
                self.wrapped_key,
                self.nonce,
                self.body,
            ]
        )

    @classmethod
    def parse(cls, blob: bytes) -> Envelope:
        try:
            if blob[:4] != MAGIC:
                raise NotEncryptedError("no envelope header (object is not client-side encrypted)")
            version, kid_len = struct.unpack_from(">BB", blob, 4)
            if version != VERSION:
                raise NotEncryptedError(f"unsupported envelope version {version}")
            pos = 6
            kid = blob[pos : pos + kid_len].decode("ascii")
            pos += kid_len
            (wk_len,) = struct.unpack_from(">H", blob, pos)
            pos += 2
            wrapped = blob[pos : pos + wk_len]
            pos += wk_len
            nonce = blob[pos : pos + NONCE_LEN]
            body = blob[pos + NONCE_LEN :]
        except (struct.error, UnicodeDecodeError):
            raise NotEncryptedError("truncated or corrupt envelope header") from None
        if not _KID_RE.fullmatch(kid) or len(wrapped) != wk_len or len(nonce) != NONCE_LEN or len(body) < 16:
            raise NotEncryptedError("truncated or corrupt envelope header")
        return cls(kid, wrapped, nonce, body)


def encrypt(wrapper: KeyWrapper, object_key: str, plaintext: bytes) -> bytes:
    """Seal ``plaintext`` for storage under ``object_key``."""
    ctx = object_key.encode()
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_LEN)
    body = AESGCM(data_key).encrypt(nonce, plaintext, _PAYLOAD_AAD + ctx)
    kid, wrapped = wrapper.wrap(data_key, ctx)
    return Envelope(kid, wrapped, nonce, body).to_bytes()


def decrypt(wrapper: KeyWrapper, object_key: str, blob: bytes) -> bytes:
    """Open a blob stored under ``object_key``; raises an ``EnvelopeError`` subclass."""
    env = Envelope.parse(blob)
    ctx = object_key.encode()
    data_key = wrapper.unwrap(env.key_id, env.wrapped_key, ctx)
    try:
        return AESGCM(data_key).decrypt(env.nonce, env.body, _PAYLOAD_AAD + ctx)
    except InvalidTag:
        raise TamperedError(f"object {object_key!r} failed authentication") from None


class EncryptedObjectStore:
    """``ObjectStore`` look-alike that encrypts on put and decrypts on get.

    Mirrors ``callqc.storage.ObjectStore`` (bytes, stream, JSON helpers). ``stat`` passes
    through: its size is the stored (encrypted) size. ``presigned_get`` is refused.
    """

    def __init__(self, inner: ObjectStoreLike, keyring: KeyWrapper) -> None:
        self.inner = inner
        self.keyring = keyring

    def _meta(self, blob: bytes, metadata: dict[str, str] | None, content_type: str | None) -> dict[str, str]:
        md = dict(metadata or {})
        md[META_ENC] = f"aes256gcm-v{VERSION}"
        md[META_KID] = Envelope.parse(blob).key_id
        if content_type is not None:
            md[META_CONTENT_TYPE] = content_type
        return md

    def put_bytes(
        self,
        key: str,
        data: bytes,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
    ) -> None:
        blob = encrypt(self.keyring, key, data)
        self.inner.put_bytes(key, blob, metadata=self._meta(blob, metadata, content_type))

    def put_if_absent(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> bool:
        blob = encrypt(self.keyring, key, data)
        return self.inner.put_if_absent(key, blob, metadata=self._meta(blob, metadata, None))

    def get_bytes(self, key: str) -> bytes:
        return decrypt(self.keyring, key, self.inner.get_bytes(key))

    def stat(self, key: str) -> Any | None:
        return self.inner.stat(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list_keys(self, prefix: str) -> list[str]:
        return self.inner.list_keys(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def put_stream(
        self,
        key: str,
        stream: BinaryIO,
        length: int,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
    ) -> None:
        """Reads the whole stream (AES-GCM seals one message in memory), then ``put_bytes``."""
        data = stream.read(length)
        if len(data) != length:
            raise ValueError(f"stream ended after {len(data)} of {length} bytes")
        self.put_bytes(key, data, metadata, content_type)

    def put_json(self, key: str, value: Any) -> None:
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        self.put_bytes(key, data, content_type="application/json")

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def presigned_get(self, key: str, expires_seconds: int = 300) -> str:
        """Not offered: a presigned URL would hand out ciphertext. Serve the bytes through the gateway."""
        raise NotImplementedError("presigned URLs are not available for client-side encrypted objects")

    def rewrap(self, key: str) -> bool:
        """Re-wrap ``key``'s data key under the active master key; payload bytes are copied as-is.

        Returns False when it is already wrapped with the active key.
        """
        blob = self.inner.get_bytes(key)
        env = Envelope.parse(blob)
        if env.key_id == self.keyring.active_key_id:
            return False
        ctx = key.encode()
        data_key = self.keyring.unwrap(env.key_id, env.wrapped_key, ctx)
        kid, wrapped = self.keyring.wrap(data_key, ctx)
        new_blob = Envelope(kid, wrapped, env.nonce, env.body).to_bytes()
        info = self.inner.stat(key)
        md = dict(getattr(info, "metadata", None) or {})
        md[META_ENC] = f"aes256gcm-v{VERSION}"
        md[META_KID] = kid
        self.inner.put_bytes(key, new_blob, metadata=md)
        return True

    def rewrap_prefix(self, prefix: str) -> int:
        """Re-wrap every object under ``prefix``; returns how many changed."""
        return sum(self.rewrap(k) for k in self.inner.list_keys(prefix))
