"""Check a Serve config before it is deployed, with messages an operator can act on.

    python -m operators.validate_config CONFIG.yaml [--gpus N] [--cpus N]

Ray's own schema (``ServeDeploySchema``) runs first. Then what Ray does not check until deploy time, or
not at all: deployment names against the application graph (``import_path``), unknown keys (Ray ignores
typos such as ``max_replica``), ``autoscaling_config`` bounds, the single Dispatcher, string env vars,
``max_queued_requests`` guards below what the Dispatcher can send, and (with ``--gpus/--cpus``) whether the
deployments fit the node at their maximum replicas. Exit 0 when valid; 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

SINGLETONS = {"Dispatcher": "it is the only reader of the open-batch markers: exactly 1 replica, no autoscaling"}
REQUESTS_PER_CALL = {"ASR": 2}  # one transcription per channel of a stereo call; other stages: 1
MAX_IN_FLIGHT_ENV = "CALLQC_DISPATCHER__MAX_IN_FLIGHT"


class ConfigError(ValueError):
    """The config is not deployable; ``problems`` holds one message each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def load_config(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["the file is not a YAML mapping"])
    return data


def graph_deployments(app: Any) -> set[str]:
    """Names of every deployment bound into a Serve ``Application`` (the ingress and its arguments)."""
    from ray.serve import Application

    names: set[str] = set()
    todo = [app]
    while todo:
        node = todo.pop()
        bound = node._bound_deployment  # the Deployment that .bind() captured, with its init arguments
        names.add(bound.name)
        args = [*bound.init_args, *bound.init_kwargs.values()]
        todo.extend(arg for arg in args if isinstance(arg, Application))
    return names


def app_deployments(import_path: str) -> set[str]:
    """Deployment names of the application at ``module:attribute`` (imports it; binds, starts nothing)."""
    from ray.serve import Application

    module_name, _, attr = import_path.replace(":", ".").rpartition(".")
    target = getattr(importlib.import_module(module_name), attr)
    if not isinstance(target, Application):
        target = target({})  # an application builder, like deployments.app:build_app
    return graph_deployments(target)


def _fields(model: Any) -> set[str]:
    return set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}


def _unknown(where: str, data: Any, model: Any) -> Iterator[str]:
    if isinstance(data, dict):
        for key in sorted(set(data) - _fields(model)):
            yield f"{where}: unknown key {key!r} (Ray would silently ignore it)"


def _schema_problems(config: dict[str, Any]) -> list[str]:
    """Ray's schema errors, located by application / deployment name instead of list index."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(config)
    except ValidationError as err:
        seen: dict[str, str] = {}
        for error in err.errors():
            where = _locate(config, [p for p in error["loc"] if p not in ("constrained-int", "str", "int")])
            seen.setdefault(where, error["msg"])
        return [f"{where}: {msg}" for where, msg in seen.items()]
    return []


def _locate(config: dict[str, Any], loc: list[Any]) -> str:
    """``applications.0.deployments.2.num_replicas`` -> ``callqc/ASR.num_replicas``."""
    rest = list(loc)
    where = "config"
    apps = config.get("applications")
    if rest[:1] == ["applications"] and len(rest) > 1 and isinstance(apps, list) and rest[1] < len(apps):
        app = apps[rest[1]] if isinstance(apps[rest[1]], dict) else {}
        where, rest = str(app.get("name", f"applications[{rest[1]}]")), rest[2:]
        deps = app.get("deployments")
        if rest[:1] == ["deployments"] and len(rest) > 1 and isinstance(deps, list) and rest[1] < len(deps):
            dep = deps[rest[1]] if isinstance(deps[rest[1]], dict) else {}
            where, rest = f"{where}/{dep.get('name', rest[1])}", rest[2:]
    return ".".join([where, *map(str, rest)])


def _env_vars(runtime_env: Any) -> dict[str, Any]:
    return (runtime_env or {}).get("env_vars") or {} if isinstance(runtime_env, dict) else {}


def max_replicas(deployment: dict[str, Any]) -> int:
    """Replicas the deployment can reach: autoscaling max, else num_replicas (default 1)."""
    autoscaling = deployment.get("autoscaling_config")
    if isinstance(autoscaling, dict):
        return int(autoscaling.get("max_replicas", 1))
    replicas = deployment.get("num_replicas", 1)
    return replicas if isinstance(replicas, int) else 1


def resource_demand(config: dict[str, Any]) -> dict[str, float]:
    """CPUs, GPUs and custom resources all deployments ask for at their maximum replicas."""
    total: dict[str, float] = {}
    for app in config.get("applications") or []:
        for dep in app.get("deployments") or []:
            opts = dep.get("ray_actor_options") or {}
            count = max_replicas(dep)
            asks = {"CPU": opts.get("num_cpus", 1), "GPU": opts.get("num_gpus", 0), **(opts.get("resources") or {})}
            for name, amount in asks.items():
                total[name] = total.get(name, 0.0) + count * float(amount or 0)
    return total


def _deployment_problems(app_name: str, dep: dict[str, Any], max_in_flight: int) -> Iterator[str]:
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import DeploymentSchema, RayActorOptionsSchema

    name = dep.get("name", "?")
    where = f"{app_name}/{name}"
    yield from _unknown(where, dep, DeploymentSchema)
    yield from _unknown(f"{where}.ray_actor_options", dep.get("ray_actor_options"), RayActorOptionsSchema)
    autoscaling = dep.get("autoscaling_config")
    if isinstance(autoscaling, dict):
        yield from _unknown(f"{where}.autoscaling_config", autoscaling, AutoscalingConfig)
        low, high = autoscaling.get("min_replicas", 1), autoscaling.get("max_replicas", 1)
        if isinstance(low, int) and isinstance(high, int) and low > high:
            yield f"{where}.autoscaling_config: min_replicas ({low}) is greater than max_replicas ({high})"
        else:
            try:
                AutoscalingConfig(**autoscaling)
            except Exception as err:  # pydantic's message names the field and the bound
                yield f"{where}.autoscaling_config: {_first_line(err)}"
    if name in SINGLETONS and (autoscaling is not None or dep.get("num_replicas", 1) != 1):
        yield f"{where}: {SINGLETONS[name]}"
    for key, value in _env_vars((dep.get("ray_actor_options") or {}).get("runtime_env")).items():
        if not isinstance(value, str):
            yield f"{where}.ray_actor_options.runtime_env.env_vars.{key}: must be a string (quote it), got {value!r}"
    guard = dep.get("max_queued_requests", -1)
    needed = max_in_flight * REQUESTS_PER_CALL.get(name, 1)
    if isinstance(guard, int) and guard != -1 and name not in SINGLETONS and guard < needed:
        yield (
            f"{where}: max_queued_requests ({guard}) is below what the Dispatcher can send ({MAX_IN_FLIGHT_ENV}="
            f"{max_in_flight} x {REQUESTS_PER_CALL.get(name, 1)} per call = {needed}): calls would fail with "
            "BackPressureError; raise it to -1 (no limit) or >= that"
        )


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and "errors.pydantic.dev" not in line]
    text = ": ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else type(err).__name__)
    return text.split(" [type=", 1)[0]


def check_config(
    config: dict[str, Any],
    deployments_of: Callable[[str], set[str]] = app_deployments,
    *,
    gpus: float | None = None,
    cpus: float | None = None,
) -> list[str]:
    """Every problem found in ``config``; empty when it is deployable."""
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    from callqc.settings import DispatcherSettings

    problems = _schema_problems(config)
    problems += _unknown("config", config, ServeDeploySchema)
    for index, app in enumerate(config.get("applications") or []):
        if not isinstance(app, dict):
            continue
        app_name = app.get("name", f"applications[{index}]")
        problems += _unknown(app_name, app, ServeApplicationSchema)
        env = _env_vars(app.get("runtime_env"))
        problems += [
            f"{app_name}.runtime_env.env_vars.{key}: must be a string (quote it), got {value!r}"
            for key, value in env.items()
            if not isinstance(value, str)
        ]
        try:
            max_in_flight = int(env.get(MAX_IN_FLIGHT_ENV, DispatcherSettings().max_in_flight))
        except ValueError:
            problems.append(f"{app_name}: {MAX_IN_FLIGHT_ENV} must be an integer")
            max_in_flight = DispatcherSettings().max_in_flight
        import_path = app.get("import_path", "")
        try:
            known = deployments_of(import_path)
        except Exception as err:
            problems.append(f"{app_name}: cannot import {import_path!r}: {type(err).__name__}: {err}")
            known = None
        names = [dep.get("name") for dep in app.get("deployments") or [] if isinstance(dep, dict)]
        problems += [f"{app_name}: deployment {n!r} is listed twice" for n in sorted(set(names)) if names.count(n) > 1]
        if known is not None:
            problems += [
                f"{app_name}: deployment {n!r} is not in {import_path} (it has: {', '.join(sorted(known))})"
                for n in names
                if n not in known
            ]
        for dep in app.get("deployments") or []:
            if isinstance(dep, dict):
                problems += _deployment_problems(app_name, dep, max_in_flight)
    demand = resource_demand(config)
    for resource, budget in (("GPU", gpus), ("CPU", cpus)):
        if budget is not None and demand.get(resource, 0.0) > budget + 1e-9:
            problems.append(
                f"at max replicas the deployments ask for {demand[resource]:g} {resource}s; the node has {budget:g}"
            )
    return problems


def validate_config(config: dict[str, Any], source: str = "config", **kwargs: Any) -> None:
    """Raise ConfigError listing every problem (see check_config for the arguments)."""
    problems = check_config(config, **kwargs)
    if problems:
        raise ConfigError(source, problems)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, nargs="+")
    parser.add_argument("--gpus", type=float, default=None, help="GPUs the config must fit in (single node)")
    parser.add_argument("--cpus", type=float, default=None, help="CPUs the config must fit in (single node)")
    args = parser.parse_args(argv)
    status = 0
    for path in args.config:
        try:
            validate_config(load_config(path), str(path), gpus=args.gpus, cpus=args.cpus)
        except ConfigError as err:
            print(err, file=sys.stderr)
            status = 1
            continue
        demand = resource_demand(load_config(path))
        print(f"{path}: ok (at max replicas: " + ", ".join(f"{k} {v:g}" for k, v in sorted(demand.items())) + ")")
    return status


if __name__ == "__main__":
    sys.exit(main())
