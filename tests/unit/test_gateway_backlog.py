"""BacklogMonitor admission: reservations make concurrent submissions respect the cap; refreshes keep
calls accepted while they listed. Uses a fake queue depth (no S3)."""

from __future__ import annotations

import asyncio

import pytest

from callqc.gateway import backlog as backlog_module
from callqc.gateway.backlog import BacklogMonitor
from callqc.operations import QueueDepth


def monitor(limit: int = 2) -> BacklogMonitor:
    return BacklogMonitor(jobs=None, limit=limit, refresh_seconds=1.0)  # type: ignore[arg-type]


def test_an_admitted_batch_holds_its_calls_until_settled() -> None:
    m = monitor(limit=2)
    assert m.admit(2) == (True, "")
    admitted, reason = m.admit(1)  # the first batch is still being stored
    assert not admitted and "backlog is full: 2 accepted calls unfinished, limit 2" in reason
    m.settle(reserved=2, accepted=2)
    assert (m.reserved, m.unfinished) == (0, 2)
    assert not m.admit(1)[0]


def test_a_refused_or_failed_store_gives_the_reservation_back() -> None:
    m = monitor(limit=2)
    assert m.admit(2)[0]
    m.settle(reserved=2, accepted=0)  # e.g. ALREADY_EXISTS, or S3 failed while storing the manifest
    assert (m.reserved, m.unfinished) == (0, 0)
    assert m.admit(2)[0]


def test_rejected_calls_do_not_count_against_the_backlog() -> None:
    m = monitor(limit=3)
    assert m.admit(3)[0]
    m.settle(reserved=3, accepted=1)  # two calls rejected at intake (bad audio)
    assert m.unfinished == 1 and m.admit(2)[0]


def test_no_limit_admits_everything() -> None:
    m = monitor(limit=0)
    assert all(m.admit(1000)[0] for _ in range(5))


def test_a_refresh_keeps_calls_accepted_while_it_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    m = monitor(limit=4)

    def listing_that_misses_the_new_batch(jobs: object) -> QueueDepth:
        # A batch is admitted and stored while the listing runs; the listing does not see it.
        assert m.admit(2)[0]
        m.settle(reserved=2, accepted=2)
        return QueueDepth(open_batches=1, queued_calls=1, running_calls=0)

    monkeypatch.setattr(backlog_module, "queue_depth", listing_that_misses_the_new_batch)
    assert asyncio.run(m.refresh()) == 3  # 1 listed + 2 accepted during the listing
    monkeypatch.setattr(backlog_module, "queue_depth", lambda jobs: QueueDepth(1, 0, 1))
    assert asyncio.run(m.refresh()) == 1  # the next refresh is exact again
