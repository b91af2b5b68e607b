"""Append-only audit trail in the object store, linked by a hash chain.

Each record is one JSON object at ``{prefix}{yyyy}/{mm}/{dd}/{seq:012d}.json`` (UTC date),
created with ``put_if_absent`` so nothing is overwritten, and carries the previous record's
hash. ``verify`` walks the chain and names the first record that was edited, deleted,
duplicated or moved. With an ``hmac_key`` (kept outside the store) the chain is an HMAC
chain, so someone who can write the bucket still cannot recompute it after an edit.
``{prefix}head.json`` is a hint (last seq and hash) that speeds up start-up and lets
``verify`` notice a truncated tail. For regulators, also put the prefix under S3 Object
Lock (WORM) in production.

One writer per prefix is the intended use (one ``AuditLog`` per process, thread-safe);
a second process racing on the same prefix is detected by ``put_if_absent`` and retried.
Never put transcript text or other personal data into ``details``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from callqc.security.keyfiles import read_private
from callqc.security.settings import AuditSettings
from callqc.security.store import ObjectStoreLike, get_or_none

GENESIS_HASH = "0" * 64


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


class AuditWriteError(Exception):
    """The record could not be appended (persistent conflicts with another writer)."""


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: datetime
    actor: str
    role: str
    action: str
    resource: str
    outcome: Outcome
    details: dict[str, Any]
    prev_hash: str
    hash: str
    key: str


@dataclass(frozen=True)
class VerifyResult:
    """``ok`` or the first broken record (``first_broken_seq``/``_key``) and why."""

    ok: bool
    records_checked: int
    last_seq: int
    last_hash: str
    first_broken_seq: int | None = None
    first_broken_key: str | None = None
    reason: str | None = None


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class AuditLog:
    """Hash-chained audit records under ``prefix`` in an object store."""

    def __init__(
        self,
        store: ObjectStoreLike,
        prefix: str = "audit/",
        hmac_key: bytes | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_retries: int = 5,
    ) -> None:
        self._store = store
        self._prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._hmac_key = hmac_key
        self._clock = clock
        self._max_retries = max_retries
        self._lock = threading.Lock()
        self._tail: tuple[int, str] | None = None
        self._key_re = re.compile(re.escape(self._prefix) + r"(\d{4})/(\d{2})/(\d{2})/(\d{12})\.json")

    @classmethod
    def from_settings(cls, store: ObjectStoreLike, settings: AuditSettings) -> AuditLog:
        key = read_private(settings.hmac_key_file) if settings.hmac_key_file else None
        return cls(store, settings.prefix, hmac_key=key)

    # ---- writing -------------------------------------------------------------------------
    def append(
        self,
        actor: str,
        role: str,
        action: str,
        resource: str,
        outcome: Outcome | str,
        details: dict[str, Any] | None = None,
    ) -> AuditRecord:
        """Append one record and return it (with its seq, hash and object key)."""
        outcome = Outcome(outcome)
        with self._lock:
            if self._tail is None:
                self._tail = self._recover_tail()
            for _ in range(self._max_retries):
                seq, prev = self._tail[0] + 1, self._tail[1]
                ts = self._clock().astimezone(UTC)
                fields = {
                    "seq": seq,
                    "ts": ts.isoformat(),
                    "actor": actor,
                    "role": str(role),
                    "action": action,
                    "resource": resource,
                    "outcome": outcome.value,
                    "details": details or {},
                    "prev_hash": prev,
                }
                digest = self._hash(fields)
                key = self._record_key(ts, seq)
                body = _canonical({**fields, "hash": digest})
                if self._store.put_if_absent(key, body, metadata=None):
                    self._tail = (seq, digest)
                    self._write_head(seq, digest, key)
                    return AuditRecord(
                        seq, ts, actor, str(role), action, resource, outcome, fields["details"], prev, digest, key
                    )
                self._tail = self._recover_tail()  # someone else wrote this seq: catch up
            raise AuditWriteError(f"could not append after {self._max_retries} conflicts")

    def _hash(self, fields: dict[str, Any]) -> str:
        data = _canonical(fields)
        if self._hmac_key is not None:
            return hmac.new(self._hmac_key, data, hashlib.sha256).hexdigest()
        return hashlib.sha256(data).hexdigest()

    def _record_key(self, ts: datetime, seq: int) -> str:
        return f"{self._prefix}{ts:%Y/%m/%d}/{seq:012d}.json"

    def _write_head(self, seq: int, digest: str, key: str) -> None:
        head = {"seq": seq, "hash": digest, "key": key}
        self._store.put_bytes(self._prefix + "head.json", _canonical(head), content_type="application/json")

    def _read_head(self) -> dict[str, Any] | None:
        raw = get_or_none(self._store, self._prefix + "head.json")
        try:
            head = json.loads(raw) if raw else None
        except ValueError:
            return None
        return head if isinstance(head, dict) else None

    def _record_keys(self, prefix: str | None = None) -> list[tuple[int, str]]:
        out = []
        for k in self._store.list_keys(prefix or self._prefix):
            m = self._key_re.fullmatch(k)
            if m:
                out.append((int(m.group(4)), k))
        return sorted(out)

    def _recover_tail(self) -> tuple[int, str]:
        """Find the last record: from the head hint's day up to today, else a full listing."""
        keys: list[tuple[int, str]] = []
        head = self._read_head()
        m = self._key_re.fullmatch(str(head.get("key"))) if head else None
        if m:
            day = datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)), tzinfo=UTC)
            today = self._clock().astimezone(UTC)
            if (today - day).days <= 62:
                while day.date() <= today.date() + timedelta(days=1):
                    keys += self._record_keys(f"{self._prefix}{day:%Y/%m/%d}/")
                    day += timedelta(days=1)
            keys = [k for k in keys if k[0] >= int(head["seq"])]  # type: ignore[index]
        if not keys:
            keys = self._record_keys()
        if not keys:
            return 0, GENESIS_HASH
        seq, key = max(keys)
        rec = json.loads(self._store.get_bytes(key))
        return seq, str(rec["hash"])

    # ---- reading -------------------------------------------------------------------------
    def records(self) -> Iterator[AuditRecord]:
        """All records in seq order (unverified; use ``verify`` for integrity)."""
        for _, key in self._record_keys():
            r = json.loads(self._store.get_bytes(key))
            yield AuditRecord(
                r["seq"], datetime.fromisoformat(r["ts"]), r["actor"], r["role"], r["action"],
                r["resource"], Outcome(r["outcome"]), r["details"], r["prev_hash"], r["hash"], key,
            )  # fmt: skip

    def verify(self) -> VerifyResult:
        """Walk the chain from seq 1; report the first edited, missing, duplicated or moved record."""
        prev_hash, expected, checked = GENESIS_HASH, 1, 0

        def broken(seq: int, key: str | None, reason: str) -> VerifyResult:
            return VerifyResult(False, checked, expected - 1, prev_hash, seq, key, reason)

        for seq, key in self._record_keys():
            if seq < expected:
                return broken(seq, key, "duplicate sequence number")
            if seq > expected:
                return broken(expected, None, f"record {expected} is missing")
            raw = get_or_none(self._store, key)
            try:
                rec = json.loads(raw) if raw is not None else None
                fields = {k: v for k, v in rec.items() if k != "hash"} if isinstance(rec, dict) else None
            except ValueError:
                fields = None
            if fields is None:
                return broken(seq, key, "record is unreadable")
            if fields.get("seq") != seq:
                return broken(seq, key, f"key holds record {fields.get('seq')} (records reordered/moved)")
            try:
                ts = datetime.fromisoformat(str(fields.get("ts"))).astimezone(UTC)
            except ValueError:
                return broken(seq, key, "bad timestamp")
            if self._record_key(ts, seq) != key:
                return broken(seq, key, "record is filed under the wrong date")
            if not hmac.compare_digest(str(fields.get("prev_hash")), prev_hash):
                return broken(seq, key, "prev_hash does not match the previous record (chain broken)")
            digest = self._hash(fields)
            if not hmac.compare_digest(str(rec.get("hash")), digest):
                return broken(seq, key, "record content does not match its hash (edited)")
            prev_hash, expected, checked = digest, expected + 1, checked + 1

        head = self._read_head()
        if head and isinstance(head.get("seq"), int) and head["seq"] > expected - 1:
            return broken(expected, None, f"records {expected}..{head['seq']} missing (head says {head['seq']})")
        return VerifyResult(True, checked, expected - 1, prev_hash)
