"""The load test's pure parts: profiles, sample pool, audio lengthening, the coverage verdict.

locust itself is never imported here (it monkey-patches the standard library with gevent); the locustfile is
loaded with stand-ins for locust, gevent and grpc's gevent hook.
"""

from __future__ import annotations

import importlib.util
import io
import sys
import wave
from pathlib import Path
from types import ModuleType
from unittest.mock import MagicMock, patch

import pytest

from ..conftest import REPO_ROOT, SAMPLES

PROFILES = REPO_ROOT / "perf" / "profiles"


@pytest.fixture(scope="module")
def lf() -> ModuleType:
    importlib.import_module("grpc.experimental")  # the real package; only its gevent hook is stood in for
    fakes = {name: MagicMock(name=name) for name in ("locust", "locust.env", "gevent", "grpc.experimental.gevent")}
    fakes["locust"].User = object
    with patch.dict(sys.modules, fakes):
        spec = importlib.util.spec_from_file_location("callqc_locustfile", REPO_ROOT / "perf" / "locustfile.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["local-small", "bank-100k"])
def test_profiles_load_and_their_distribution_matches_the_average(lf: ModuleType, name: str) -> None:
    profile = lf.load_profile(PROFILES / f"{name}.yaml")
    assert profile.name == name and profile.batch_size >= 1 and profile.sla_seconds > 0
    buckets = profile.duration_distribution
    mean = sum(b.seconds * b.weight for b in buckets) / sum(b.weight for b in buckets)
    assert mean == pytest.approx(profile.avg_duration_seconds, rel=0.1)


def test_bank_profile_arrival_rate_is_the_peak_of_100k_calls_a_day(lf: ModuleType) -> None:
    profile = lf.load_profile(PROFILES / "bank-100k.yaml")
    assert profile.calls_per_second == pytest.approx(100_000 * 1.8 / 86_400)
    assert lf.load_profile(PROFILES / "bank-100k.yaml", rate_scale=10).calls_per_second == pytest.approx(
        10 * profile.calls_per_second
    )


def test_a_bad_profile_is_refused(lf: ModuleType, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (PROFILES / "local-small.yaml").read_text().replace("violation_rate: 0.5", "violation_rate: 1.5")
    bad.write_text(text)
    with pytest.raises(ValueError, match="violation_rate"):
        lf.load_profile(bad)


def test_samples_split_into_violation_and_compliant_calls(lf: ModuleType) -> None:
    samples = lf.load_samples(SAMPLES / "batch.yaml")
    assert {s.name for s in samples if s.violation} == {"zh_violation", "en_violation"}
    assert {s.name for s in samples if not s.violation} == {"zh_compliant", "en_compliant"}
    zh = next(s for s in samples if s.name == "zh_violation")
    assert zh.metadata.ledger.amount_due == "35000" and zh.metadata.call_started_at.endswith("+08:00")


def test_long_calls_are_made_by_repeating_a_sample(lf: ModuleType) -> None:
    path = SAMPLES / "calls" / "en_compliant.wav"
    assert lf.audio_of_duration(path, 5) == path.read_bytes()
    with wave.open(str(path)) as w:
        frames, channels = w.getnframes(), w.getnchannels()
    with wave.open(io.BytesIO(lf.audio_of_duration(path, 60))) as w:
        assert w.getnchannels() == channels and w.getnframes() == 3 * frames


def test_the_verdict_counts_only_calls_inspected_within_the_sla(lf: ModuleType) -> None:
    profile = lf.load_profile(PROFILES / "local-small.yaml")
    tracker = lf.Tracker()
    done, failed = lf.pb.CALL_STATE_DONE, lf.pb.CALL_STATE_FAILED
    tracker.submitted = {"b/a": 0.0, "b/b": 0.0, "b/c": 0.0}
    tracker.finished = {"b/a": (done, 10.0), "b/b": (done, 20.0), "b/c": (done, 30.0)}
    tracker.backlog = [(0.0, 3), (5.0, 0)]
    verdict = lf.verdict(tracker, profile)
    assert verdict["ok"] and verdict["coverage"] == 1.0 and verdict["latency_p50_s"] == 20.0
    assert "coverage=100.0%" in lf.format_verdict(verdict)

    tracker.finished["b/c"] = (done, profile.sla_seconds + 1)  # late
    tracker.finished["b/b"] = (failed, 20.0)
    tracker.rejected = 1
    verdict = lf.verdict(tracker, profile)
    assert not verdict["ok"]
    assert (verdict["submitted"], verdict["inspected"], verdict["inspected_late"], verdict["failed"]) == (4, 1, 1, 2)
    assert "FAIL" in lf.format_verdict(verdict)


def test_nothing_submitted_is_not_a_pass(lf: ModuleType) -> None:
    assert not lf.verdict(lf.Tracker(), lf.load_profile(PROFILES / "local-small.yaml"))["ok"]


def test_total_calls_caps_what_users_may_submit(lf: ModuleType) -> None:
    tracker = lf.Tracker()
    assert [tracker.reserve(3, 7) for _ in range(4)] == [3, 3, 1, 0]
    assert lf.Tracker().reserve(50, 0) == 50


def test_connection_defaults_to_the_local_stack(lf: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    for name in ("ca.crt", "client-callqc-cli.crt", "client-callqc-cli.key"):
        (tmp_path / "pki" / name).write_text("x")
    (tmp_path / "stack.json").write_text('{"gateway_port": 61234}')
    conn = lf.connection_from_env({"CALLQC_HOME": str(tmp_path)})
    assert conn.target == "127.0.0.1:61234" and conn.ca == tmp_path / "pki" / "ca.crt" and not conn.local
    conn = lf.connection_from_env({"CALLQC_LOAD_TARGET": "gw:443", "CALLQC_LOAD_LOCAL": "1", "CALLQC_LOAD_TOKEN": "t"})
    assert (conn.target, conn.local, conn.token) == ("gw:443", True, "t")
