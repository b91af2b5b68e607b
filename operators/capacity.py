"""Capacity plan: replicas, CPUs and GPUs per stage for a call volume, from measured stage throughputs.

A pure function (``plan_capacity``) over a workload and a profile of stage figures (``capacity.yaml``):

    demand per minute  = calls/day x peak factor x (avg minutes | avg minutes x channels | 1) / (hours x 60)
    replicas per stage = max(min_replicas, ceil(demand / (one replica's throughput x target utilisation)))

``pipeline_throughput`` answers the converse question for a given deployment: the calls/min it clears,
the least of each stage's bound (replicas x throughput / per-call demand) and the dispatcher's bound
(Little's law: calls in flight / seconds one call spends in the stages), on the stage figures alone.

``processing_hours`` is the time allowed to inspect one day's calls (24: around the clock, the evening
backlog drains overnight). ``peak_factor`` scales the daily volume (e.g. 1.8 for month-end collections).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field

DEFAULT_FIGURES = Path(__file__).with_name("capacity.yaml")
Unit = Literal["call_minutes", "channel_minutes", "calls"]


class StageFigure(BaseModel):
    """What one replica of a stage processes per wall-clock minute, and what it occupies."""

    unit: Unit
    per_replica_per_minute: float = Field(gt=0)
    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    min_replicas: int = Field(default=1, ge=0)
    source: str = ""


class Profile(BaseModel):
    """Stage figures measured (or estimated) on one kind of node."""

    hardware: str
    cpus_per_node: float = Field(gt=0)
    gpus_per_node: float = Field(default=0, ge=0)
    stages: dict[str, StageFigure]


class Workload(BaseModel):
    """The call volume to inspect completely."""

    calls_per_day: int = Field(gt=0)
    avg_minutes: float = Field(gt=0)
    peak_factor: float = Field(default=1.0, ge=1.0)
    channels_per_call: int = Field(default=2, ge=1)
    processing_hours: float = Field(default=24.0, gt=0, le=24)
    target_utilization: float = Field(default=0.7, gt=0, le=1)


@dataclass(frozen=True)
class StagePlan:
    stage: str
    unit: Unit
    demand_per_minute: float  # units per minute the stage must process at peak
    replicas: int
    cpus: float
    gpus: float
    utilization: float  # demand / capacity of the planned replicas
    source: str


@dataclass(frozen=True)
class CapacityPlan:
    workload: Workload
    hardware: str
    stages: list[StagePlan] = field(default_factory=list)
    call_seconds: float = 0.0  # one call through every stage, no queueing

    @property
    def in_flight_needed(self) -> int:
        """Calls the dispatcher must keep in flight to sustain the peak (Little's law, at the target load)."""
        busy = peak_calls_per_minute(self.workload) * self.call_seconds / 60
        return max(1, math.ceil(busy / self.workload.target_utilization - 1e-9))

    @property
    def gpus(self) -> float:
        return sum(s.gpus for s in self.stages)

    @property
    def cpus(self) -> float:
        return sum(s.cpus for s in self.stages)

    @property
    def audio_minutes_per_day(self) -> float:
        return self.workload.calls_per_day * self.workload.peak_factor * self.workload.avg_minutes

    def nodes(self, profile: Profile) -> int:
        """Nodes of the profile's kind needed for the GPUs and the CPUs of the plan."""
        by_gpu = math.ceil(self.gpus / profile.gpus_per_node - 1e-9) if profile.gpus_per_node else 0
        return max(1, by_gpu, math.ceil(self.cpus / profile.cpus_per_node - 1e-9))


def load_profiles(path: Path = DEFAULT_FIGURES) -> dict[str, Profile]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    return {name: Profile.model_validate(body) for name, body in (data.get("profiles") or {}).items()}


def peak_calls_per_minute(workload: Workload) -> float:
    return workload.calls_per_day * workload.peak_factor / (workload.processing_hours * 60)


def demand_per_minute(workload: Workload, unit: Unit) -> float:
    """Units per wall-clock minute the stage must process so a peak day is inspected within the window."""
    return peak_calls_per_minute(workload) * units_per_call(unit, workload.avg_minutes, workload.channels_per_call)


def units_per_call(unit: Unit, avg_minutes: float, channels: int) -> float:
    """What one call asks of a stage measured in ``unit``."""
    return {"calls": 1.0, "call_minutes": avg_minutes, "channel_minutes": avg_minutes * channels}[unit]


def call_seconds(profile: Profile, avg_minutes: float, channels: int, skip: Collection[str] = ()) -> float:
    """Seconds one call spends being processed, stage after stage, with no queueing."""
    return sum(
        60 * units_per_call(f.unit, avg_minutes, channels) / f.per_replica_per_minute
        for name, f in profile.stages.items()
        if name not in skip
    )


@dataclass(frozen=True)
class StageBound:
    """One stage of a deployment (``Throughput.stages`` is keyed by its name)."""

    replicas: int
    unit: Unit
    per_replica_per_minute: float
    calls_per_minute: float  # what the stage's replicas clear at most
    source: str


@dataclass(frozen=True)
class Throughput:
    """Calls/min a deployment clears, and what limits it."""

    stages: dict[str, StageBound]
    call_seconds: float  # one call through every stage, no queueing
    max_in_flight: int | None  # the dispatcher's calls in flight (None: not modelled)
    in_flight_calls_per_minute: float | None  # Little's law: max_in_flight / call_seconds
    bottleneck: str  # a stage name, or "in flight"
    calls_per_minute: float


def pipeline_throughput(
    profile: Profile,
    replicas: Mapping[str, int],
    avg_minutes: float,
    channels: int = 2,
    max_in_flight: int | None = None,
    skip: Collection[str] = (),
) -> Throughput:
    """Calls/min that ``replicas`` of each stage (1 when not named) clear on ``profile``'s hardware.

    ``skip``: stages the deployment passes calls straight through (e.g. the Judge with ``judge.engine=none``).
    """
    stages = {}
    for name, figure in profile.stages.items():
        if name in skip:
            continue
        count = replicas.get(name, 1)
        per_call = units_per_call(figure.unit, avg_minutes, channels)
        stages[name] = StageBound(
            count,
            figure.unit,
            figure.per_replica_per_minute,
            count * figure.per_replica_per_minute / per_call,
            figure.source,
        )
    latency = call_seconds(profile, avg_minutes, channels, skip)
    in_flight = 60 * max_in_flight / latency if max_in_flight and latency > 0 else None
    bottleneck = min(stages, key=lambda s: stages[s].calls_per_minute)
    rate = stages[bottleneck].calls_per_minute
    if in_flight is not None and in_flight < rate:
        bottleneck, rate = "in flight", in_flight
    return Throughput(stages, latency, max_in_flight, in_flight, bottleneck, rate)


def plan_capacity(workload: Workload, profile: Profile) -> CapacityPlan:
    """Replicas and resources per stage for ``workload`` on ``profile``'s hardware."""
    stages = []
    for name, figure in profile.stages.items():
        demand = demand_per_minute(workload, figure.unit)
        usable = figure.per_replica_per_minute * workload.target_utilization
        replicas = max(figure.min_replicas, math.ceil(demand / usable - 1e-9))
        capacity = replicas * figure.per_replica_per_minute
        stages.append(
            StagePlan(
                stage=name,
                unit=figure.unit,
                demand_per_minute=demand,
                replicas=replicas,
                cpus=replicas * figure.num_cpus,
                gpus=replicas * figure.num_gpus,
                utilization=demand / capacity if capacity else 0.0,
                source=figure.source,
            )
        )
    latency = call_seconds(profile, workload.avg_minutes, workload.channels_per_call)
    return CapacityPlan(workload=workload, hardware=profile.hardware, stages=stages, call_seconds=latency)
