"""operators.capacity: the capacity model is a pure function over a workload and stage figures."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from operators.capacity import (
    Profile,
    StageFigure,
    Workload,
    demand_per_minute,
    load_profiles,
    pipeline_throughput,
    plan_capacity,
)


def profile(**stages: StageFigure) -> Profile:
    return Profile(hardware="test box", cpus_per_node=16, gpus_per_node=2, stages=stages)


ASR = StageFigure(unit="channel_minutes", per_replica_per_minute=10, num_cpus=2, num_gpus=0.5, source="measured: x")
RULES = StageFigure(unit="calls", per_replica_per_minute=1000, num_cpus=1, source="measured: y")


def test_demand_per_unit() -> None:
    w = Workload(calls_per_day=14_400, avg_minutes=3, peak_factor=2, processing_hours=24)
    assert demand_per_minute(w, "calls") == pytest.approx(20)  # 14,400 x 2 / 1,440 min
    assert demand_per_minute(w, "call_minutes") == pytest.approx(60)
    assert demand_per_minute(w, "channel_minutes") == pytest.approx(120)  # stereo: both channels transcribed


def test_replicas_cover_peak_demand_at_target_utilisation() -> None:
    w = Workload(calls_per_day=14_400, avg_minutes=3, peak_factor=2, target_utilization=0.8)
    plan = plan_capacity(w, profile(ASR=ASR, Rules=RULES))
    asr, rules = plan.stages
    assert asr.replicas == math.ceil(120 / (10 * 0.8)) == 15
    assert asr.gpus == pytest.approx(7.5) and asr.cpus == 30
    assert asr.utilization == pytest.approx(120 / 150)
    assert rules.replicas == 1 and rules.gpus == 0
    assert plan.gpus == pytest.approx(7.5)
    assert plan.nodes(profile(ASR=ASR)) == 4  # 7.5 GPUs on 2-GPU nodes; 31 CPUs fit in 4 x 16


def test_exact_fit_does_not_round_up_an_extra_replica() -> None:
    w = Workload(calls_per_day=1440, avg_minutes=1, channels_per_call=1, target_utilization=1.0)
    plan = plan_capacity(w, profile(ASR=ASR.model_copy(update={"per_replica_per_minute": 1.0})))
    assert plan.stages[0].replicas == 1 and plan.stages[0].utilization == pytest.approx(1.0)


def test_shorter_window_and_peak_need_proportionally_more() -> None:
    base = plan_capacity(Workload(calls_per_day=50_000, avg_minutes=4), profile(ASR=ASR)).stages[0].replicas
    peak = plan_capacity(Workload(calls_per_day=50_000, avg_minutes=4, peak_factor=2), profile(ASR=ASR))
    day_only = plan_capacity(Workload(calls_per_day=50_000, avg_minutes=4, processing_hours=12), profile(ASR=ASR))
    assert peak.stages[0].replicas == day_only.stages[0].replicas
    assert 2 * base - 1 <= peak.stages[0].replicas <= 2 * base


def test_min_replicas_hold_even_without_load() -> None:
    figure = RULES.model_copy(update={"min_replicas": 2})
    assert plan_capacity(Workload(calls_per_day=1, avg_minutes=1), profile(Rules=figure)).stages[0].replicas == 2


def test_throughput_is_the_slowest_stage_when_enough_calls_are_in_flight() -> None:
    # a 1-minute stereo call: ASR needs 2 channel-minutes (12 s on one replica), Rules 0.06 s
    model = pipeline_throughput(profile(ASR=ASR, Rules=RULES), {"ASR": 2}, avg_minutes=1, max_in_flight=8)
    assert model.stages["ASR"].calls_per_minute == pytest.approx(10)  # 2 replicas x 10 / 2
    assert model.call_seconds == pytest.approx(12 + 0.06)
    assert model.bottleneck == "ASR" and model.calls_per_minute == pytest.approx(10)


def test_too_few_calls_in_flight_bound_the_pipeline_by_littles_law() -> None:
    model = pipeline_throughput(profile(ASR=ASR, Rules=RULES), {"ASR": 4}, avg_minutes=1, max_in_flight=2)
    assert model.stages["ASR"].calls_per_minute == pytest.approx(20)
    assert model.in_flight_calls_per_minute == pytest.approx(2 * 60 / 12.06)  # < 20: the dispatcher limits
    assert model.bottleneck == "in flight" and model.calls_per_minute == pytest.approx(9.95, abs=0.01)
    skipped = pipeline_throughput(profile(ASR=ASR, Rules=RULES), {}, avg_minutes=1, skip=("ASR",))
    assert set(skipped.stages) == {"Rules"} and skipped.in_flight_calls_per_minute is None


def test_plan_says_how_many_calls_the_dispatcher_must_keep_in_flight() -> None:
    # 20 calls/min at peak x 36 s each (3-min stereo calls: 6 channel-min at 10/min) = 12 busy; / 0.8 -> 15
    w = Workload(calls_per_day=14_400, avg_minutes=3, peak_factor=2, target_utilization=0.8)
    plan = plan_capacity(w, profile(ASR=ASR))
    assert plan.call_seconds == pytest.approx(36)
    assert plan.in_flight_needed == 15


@pytest.mark.parametrize(
    "bad",
    [
        {"calls_per_day": 0, "avg_minutes": 3},
        {"calls_per_day": 10, "avg_minutes": -1},
        {"calls_per_day": 10, "avg_minutes": 3, "peak_factor": 0.5},
        {"calls_per_day": 10, "avg_minutes": 3, "processing_hours": 25},
        {"calls_per_day": 10, "avg_minutes": 3, "target_utilization": 1.5},
    ],
)
def test_workload_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        Workload(**bad)


def test_shipped_figures_name_their_hardware_and_source() -> None:
    profiles = load_profiles()
    assert {"cpu", "gpu"} <= set(profiles)
    for name, prof in profiles.items():
        assert prof.hardware, name
        assert {"AudioPrep", "ASR", "Rules"} <= set(prof.stages), name
        for stage, figure in prof.stages.items():
            assert figure.source.split(":")[0].split()[0] in ("measured", "estimate"), (name, stage)
    assert profiles["gpu"].stages["ASR"].num_gpus > 0
    assert profiles["cpu"].stages["ASR"].source.startswith("measured")
