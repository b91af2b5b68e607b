"""Capacity plan: replicas, CPUs and GPUs per stage for a call volume, from measured stage throughputs.

A pure function (``plan_capacity``) over a workload and a profile of stage figures (``capacity.yaml``):

    demand per minute  = calls/day x peak factor x (avg minutes | avg minutes x channels | 1) / (hours x 60)
    replicas per stage = max(min_replicas, ceil(demand / (one replica's throughput x target utilisation)))

``processing_hours`` is the time allowed to inspect one day's calls (24: around the clock, the evening
backlog drains overnight). ``peak_factor`` scales the daily volume (e.g. 1.8 for month-end collections).
"""

from __future__ import annotations

import math
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


def demand_per_minute(workload: Workload, unit: Unit) -> float:
    """Units per wall-clock minute the stage must process so a peak day is inspected within the window."""
    calls_per_minute = workload.calls_per_day * workload.peak_factor / (workload.processing_hours * 60)
    per_call = {
        "calls": 1.0,
        "call_minutes": workload.avg_minutes,
        "channel_minutes": workload.avg_minutes * workload.channels_per_call,
    }[unit]
    return calls_per_minute * per_call


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
    return CapacityPlan(workload=workload, hardware=profile.hardware, stages=stages)
