"""Hash-chained audit trail: layout, verification, tampering (edit, delete, reorder), threads."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from callqc.security.audit import GENESIS_HASH, AuditLog, AuditWriteError, Outcome

try:
    from test_security_helpers import FakeObjectStore
except ImportError:  # tests/unit imported as a package
    from tests.unit.test_security_helpers import FakeObjectStore


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 3, 31, 23, 59, 58, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


def fill(log: AuditLog, n: int = 5) -> list:
    return [
        log.append(f"user{i}", "reviewer", "GetReport", f"batch/b{i}", Outcome.SUCCESS, {"call": f"c{i}"})
        for i in range(n)
    ]


@pytest.fixture
def store() -> FakeObjectStore:
    return FakeObjectStore()


def test_layout_and_chain(store: FakeObjectStore) -> None:
    log = AuditLog(store, clock=Clock())
    recs = fill(log)
    assert [r.key for r in recs[:2]] == ["audit/2026/03/31/000000000001.json", "audit/2026/04/01/000000000002.json"]
    assert recs[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in pairwise(recs))
    stored = json.loads(store.get_bytes(recs[2].key))
    assert stored["actor"] == "user2" and stored["outcome"] == "success" and stored["hash"] == recs[2].hash
    assert [r.seq for r in log.records()] == [1, 2, 3, 4, 5]
    result = log.verify()
    assert result.ok and result.records_checked == 5 and result.last_seq == 5 and result.last_hash == recs[-1].hash


def test_empty_log_verifies(store: FakeObjectStore) -> None:
    assert AuditLog(store).verify().ok


def test_edit_is_caught(store: FakeObjectStore) -> None:
    log = AuditLog(store, clock=Clock())
    recs = fill(log)
    rec = json.loads(store.get_bytes(recs[2].key))
    rec["outcome"] = "denied"
    store.put_bytes(recs[2].key, json.dumps(rec).encode())
    result = log.verify()
    assert not result.ok and result.first_broken_seq == 3 and result.first_broken_key == recs[2].key
    assert "edited" in (result.reason or "") and result.records_checked == 2


def test_edit_with_recomputed_hash_breaks_the_next_link(store: FakeObjectStore) -> None:
    log = AuditLog(store, clock=Clock())
    recs = fill(log)
    rec = json.loads(store.get_bytes(recs[1].key))
    rec["actor"] = "someone-else"
    body = {k: v for k, v in rec.items() if k != "hash"}
    rec["hash"] = log._hash(body)  # what an attacker can do without an HMAC key
    store.put_bytes(recs[1].key, json.dumps(rec).encode())
    result = log.verify()
    assert not result.ok and result.first_broken_seq == 3 and "chain broken" in (result.reason or "")


def test_hmac_chain_catches_recomputed_hash_at_the_edited_record(store: FakeObjectStore) -> None:
    log = AuditLog(store, hmac_key=b"k" * 32, clock=Clock())
    recs = fill(log)
    rec = json.loads(store.get_bytes(recs[1].key))
    rec["actor"] = "someone-else"
    rec["hash"] = AuditLog(FakeObjectStore())._hash({k: v for k, v in rec.items() if k != "hash"})
    store.put_bytes(recs[1].key, json.dumps(rec).encode())
    result = log.verify()
    assert not result.ok and result.first_broken_seq == 2
    assert not AuditLog(store, hmac_key=b"x" * 32).verify().ok  # wrong key: nothing verifies


def test_delete_middle_is_caught(store: FakeObjectStore) -> None:
    log = AuditLog(store, clock=Clock())
    recs = fill(log)
    store.delete(recs[2].key)
    result = log.verify()
    assert not result.ok and result.first_broken_seq == 3 and "missing" in (result.reason or "")


def test_delete_first_is_caught(store: FakeObjectStore) -> None:
    log = AuditLog(store, clock=Clock())
    recs = fill(log)
    store.delete(recs[0].key)
    assert log.verify().first_broken_seq == 1


def test_truncated_tail_is_caught_by_the_head(store: FakeObjectStore) -> None:
    log = AuditLog(store, clock=Clock())
    recs = fill(log)
    store.delete(recs[-1].key)
    result = log.verify()
    assert not result.ok and result.first_broken_seq == 5


def test_reorder_is_caught(store: FakeObjectStore) -> None:
    log = AuditLog(store, clock=Clock())
    recs = fill(log)
    a, b = store.get_bytes(recs[2].key), store.get_bytes(recs[3].key)
    store.put_bytes(recs[2].key, b)
    store.put_bytes(recs[3].key, a)
    result = log.verify()
    assert not result.ok and result.first_broken_seq == 3 and "reordered" in (result.reason or "")


def test_record_moved_to_another_day_is_caught(store: FakeObjectStore) -> None:
    log = AuditLog(store, clock=Clock())
    recs = fill(log)
    moved = recs[1].key.replace("2026/04/01", "2026/04/02")
    store.put_bytes(moved, store.get_bytes(recs[1].key))
    store.delete(recs[1].key)
    result = log.verify()
    assert not result.ok and result.first_broken_seq == 2 and "wrong date" in (result.reason or "")


def test_unreadable_record_is_caught(store: FakeObjectStore) -> None:
    log = AuditLog(store, clock=Clock())
    recs = fill(log, 2)
    store.put_bytes(recs[1].key, b"{not json")
    assert log.verify().first_broken_seq == 2


def test_restart_continues_the_chain(store: FakeObjectStore) -> None:
    clock = Clock()
    fill(AuditLog(store, clock=clock), 3)
    rec = AuditLog(store, clock=clock).append("ops", "operator", "ScaleDeployment", "asr", "success")
    assert rec.seq == 4
    store.delete("audit/head.json")  # lost hint: full listing still finds the tail
    assert AuditLog(store, clock=clock).append("a", "auditor", "VerifyAuditLog", "audit", "success").seq == 5
    assert AuditLog(store).verify().ok


def test_no_overwrite_between_two_writers(store: FakeObjectStore) -> None:
    clock = Clock()
    a, b = AuditLog(store, clock=clock), AuditLog(store, clock=clock)
    for i in range(4):
        (a if i % 2 else b).append("x", "auditor", "act", f"r{i}", "success")
    assert len(store.list_keys("audit/20")) == 4
    result = a.verify()
    assert result.ok and result.last_seq == 4


def test_append_gives_up_after_persistent_conflicts(store: FakeObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog(store, max_retries=2)
    monkeypatch.setattr(store, "put_if_absent", lambda *a, **k: False)
    with pytest.raises(AuditWriteError):
        log.append("x", "auditor", "act", "r", "success")


def test_thread_safe_append(store: FakeObjectStore) -> None:
    log = AuditLog(store)

    def worker(n: int) -> None:
        for i in range(25):
            log.append(f"t{n}", "call_system", "SubmitBatch", f"b{n}-{i}", Outcome.SUCCESS)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = log.verify()
    assert result.ok and result.records_checked == 200
    assert sorted(r.seq for r in log.records()) == list(range(1, 201))


def test_outcome_is_validated(store: FakeObjectStore) -> None:
    with pytest.raises(ValueError):
        AuditLog(store).append("x", "auditor", "act", "r", "maybe")
