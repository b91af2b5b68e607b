"""Every Serve config in deployments/ parses with Ray's schema and passes operators.validate_config; bad ones fail
with a message that names the deployment and the problem."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from operators.validate_config import (
    ConfigError,
    app_deployments,
    check_config,
    load_config,
    main,
    resource_demand,
    validate_config,
)

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"
CONFIGS = sorted(DEPLOYMENTS.glob("serve_*.yaml"))
GPU_CONFIGS = [DEPLOYMENTS / "serve_gpu_single.yaml", DEPLOYMENTS / "serve_gpu_multi.yaml"]


@cache
def graph(import_path: str) -> frozenset[str]:
    return frozenset(app_deployments(import_path))


def known(import_path: str) -> set[str]:
    return set(graph(import_path))


def deployment(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in config["applications"][0]["deployments"] if d["name"] == name)


def test_the_three_environments_have_configs() -> None:
    assert {p.name for p in CONFIGS} >= {"serve_local.yaml", "serve_gpu_single.yaml", "serve_gpu_multi.yaml"}


def test_app_graph_is_read_from_deployments_app() -> None:
    assert known("deployments.app:app") == {
        "Dispatcher",
        "AudioPrep",
        "ASR",
        "Speakers",
        "Rules",
        "Judge",
        "ReportWriter",
    }
    assert known("deployments.app:build_app") == known("deployments.app:app")  # a builder works too


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_with_rays_schema(path: Path) -> None:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    assert [app.name for app in schema.applications] == ["callqc"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_passes_the_validator_and_names_only_real_deployments(path: Path) -> None:
    config = load_config(path)
    assert check_config(config, known) == []
    names = {d["name"] for d in config["applications"][0]["deployments"]}
    assert names <= known(config["applications"][0]["import_path"])
    dispatcher = deployment(config, "Dispatcher")
    assert dispatcher.get("num_replicas", 1) == 1 and "autoscaling_config" not in dispatcher


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.name)
def test_gpu_configs_run_asr_on_cuda_fp16_with_fractional_gpus_and_backpressure(path: Path) -> None:
    config = load_config(path)
    env = config["applications"][0]["runtime_env"]["env_vars"]
    assert env["CALLQC_ASR__DEVICE"] == "cuda" and env["CALLQC_ASR__COMPUTE_TYPE"] == "float16"
    asr = deployment(config, "ASR")
    assert 0 < asr["ray_actor_options"]["num_gpus"] < 1
    for dep in config["applications"][0]["deployments"]:
        if dep["name"] == "Dispatcher":
            continue
        fixed = {"min_replicas": dep.get("num_replicas", 0), "max_replicas": dep.get("num_replicas", 0)}
        scaling = dep.get("autoscaling_config") or {**fixed, "target_ongoing_requests": 1}  # or a fixed count
        assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"], dep["name"]
        assert scaling["target_ongoing_requests"] > 0 and dep["max_ongoing_requests"] > 0
        assert dep["max_queued_requests"] > 0, f"{dep['name']}: backpressure guard missing"


def test_single_gpu_config_fits_one_gpu_node_at_max_replicas() -> None:
    config = load_config(DEPLOYMENTS / "serve_gpu_single.yaml")
    assert check_config(config, known, gpus=1, cpus=16) == []
    demand = resource_demand(config)
    assert demand["GPU"] <= 1  # ASR, the NeMo diarizer and the vLLM judge share the one GPU
    assert deployment(config, "Judge")["ray_actor_options"]["num_gpus"] < 1
    assert not any(k.startswith("callqc_pool_") for k in demand)


def test_multi_gpu_config_pins_asr_to_its_gpu_pool() -> None:
    config = load_config(DEPLOYMENTS / "serve_gpu_multi.yaml")
    asr = deployment(config, "ASR")
    assert asr["ray_actor_options"]["resources"] == {"callqc_pool_asr": 1}
    assert deployment(config, "Judge")["ray_actor_options"]["resources"] == {"callqc_pool_judge": 1}
    assert deployment(config, "Speakers")["ray_actor_options"]["resources"] == {"callqc_pool_asr": 1}
    gpu_stages = {"ASR", "Speakers", "Judge"}
    cpu_stages = [d for d in config["applications"][0]["deployments"] if d["name"] not in gpu_stages]
    assert all(not (d.get("ray_actor_options") or {}).get("num_gpus") for d in cpu_stages)
    assert resource_demand(config)["GPU"] > 1  # really needs several GPUs


def test_local_config_is_cpu_only() -> None:
    assert resource_demand(load_config(DEPLOYMENTS / "serve_local.yaml"))["GPU"] == 0


# ---- bad configs ---------------------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _unknown_deployment(c: dict[str, Any]) -> None:
    c["applications"][0]["deployments"].append({"name": "Diarizer", "num_replicas": 1})


def _negative_replicas(c: dict[str, Any]) -> None:
    rules = deployment(c, "Rules")
    del rules["autoscaling_config"]
    rules["num_replicas"] = -1


def _min_above_max(c: dict[str, Any]) -> None:
    deployment(c, "ASR")["autoscaling_config"] = {"min_replicas": 3, "max_replicas": 1}


def _typo(c: dict[str, Any]) -> None:
    deployment(c, "ASR")["autoscaling_config"]["max_replica"] = 9


def _scaled_dispatcher(c: dict[str, Any]) -> None:
    deployment(c, "Dispatcher")["num_replicas"] = 2


def _guard_too_small(c: dict[str, Any]) -> None:
    deployment(c, "ASR")["max_queued_requests"] = 8


def _number_env(c: dict[str, Any]) -> None:
    c["applications"][0]["runtime_env"]["env_vars"]["CALLQC_ASR__NUM_WORKERS"] = 2


def _replicas_and_autoscaling(c: dict[str, Any]) -> None:
    deployment(c, "ASR")["num_replicas"] = 2


def _negative_delay(c: dict[str, Any]) -> None:
    deployment(c, "Rules")["autoscaling_config"]["upscale_delay_s"] = -1


def _bad_import(c: dict[str, Any]) -> None:
    c["applications"][0]["import_path"] = "deployments.nosuch:app"


BAD: list[tuple[str, Mutation, str]] = [
    ("unknown deployment", _unknown_deployment, "deployment 'Diarizer' is not in deployments.app:app (it has: ASR,"),
    ("negative replicas", _negative_replicas, "callqc/Rules.num_replicas: Input should be greater than 0"),
    (
        "min above max",
        _min_above_max,
        "callqc/ASR.autoscaling_config: min_replicas (3) is greater than max_replicas (1)",
    ),
    ("typo", _typo, "callqc/ASR.autoscaling_config: unknown key 'max_replica'"),
    ("two dispatchers", _scaled_dispatcher, "callqc/Dispatcher: it is the only reader of the open-batch markers"),
    ("guard below in-flight", _guard_too_small, "callqc/ASR: max_queued_requests (8) is below what the Dispatcher"),
    ("env var not a string", _number_env, "env_vars.CALLQC_ASR__NUM_WORKERS: must be a string"),
    ("replicas and autoscaling", _replicas_and_autoscaling, "num_replicas is not allowed when autoscaling_config"),
    ("negative delay", _negative_delay, "callqc/Rules.autoscaling_config: upscale_delay_s: Input should be greater"),
    ("unimportable app", _bad_import, "cannot import 'deployments.nosuch:app'"),
]


@pytest.mark.parametrize(("mutate", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_is_rejected_with_a_clear_message(mutate: Mutation, message: str) -> None:
    config = copy.deepcopy(load_config(DEPLOYMENTS / "serve_gpu_single.yaml"))
    mutate(config)
    deployments_of = app_deployments if mutate is _bad_import else known
    with pytest.raises(ConfigError) as caught:
        validate_config(config, "bad.yaml", deployments_of=deployments_of)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems
    assert str(caught.value).startswith("bad.yaml: ")


def test_too_big_for_the_node_is_reported() -> None:
    config = load_config(DEPLOYMENTS / "serve_gpu_multi.yaml")
    problems = check_config(config, known, gpus=1)
    assert problems == ["at max replicas the deployments ask for 12.4 GPUs; the node has 1"]


def test_command_line_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = copy.deepcopy(load_config(DEPLOYMENTS / "serve_local.yaml"))
    deployment(bad, "ASR")["num_replicas"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main([str(DEPLOYMENTS / "serve_local.yaml")]) == 0
    assert "serve_local.yaml: ok" in capsys.readouterr().out
    assert main([str(path)]) == 1
    assert "callqc/ASR.num_replicas: Input should be greater than 0" in capsys.readouterr().err
