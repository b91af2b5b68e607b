"""cluster/: the KubeRay RayCluster against the KubeRay CRD, the on-prem launcher config against Ray's own schema."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import yaml

from tests.chart.conftest import REPO
from tests.chart.kube import CrdValidator

CLUSTER = REPO / "cluster"


def raycluster() -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())


def onprem() -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / "onprem" / "cluster.yaml").read_text())


def pool_markers(raw: str) -> set[str]:
    """Names in a KubeRay rayStartParams `resources` value ('"{\\"name\\": n}"')."""
    return set(json.loads(raw.strip("'").strip('"').replace('\\"', '"')))


# ---- KubeRay ----------------------------------------------------------------------------------------------------


def test_raycluster_validates_against_the_kuberay_crd(raycluster_validator: CrdValidator) -> None:
    manifest = raycluster()
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert raycluster_validator.errors(manifest) == []


def test_raycluster_keeps_ray_private_and_authenticated() -> None:
    spec = raycluster()["spec"]
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"


def test_gpu_groups_select_gpu_nodes_and_tolerate_their_taint() -> None:
    groups = {g["groupName"]: g for g in raycluster()["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"gpu-asr", "gpu-judge", "cpu"}
    for name in ("gpu-asr", "gpu-judge"):
        pod = groups[name]["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["nodeSelector"]["callqc.io/pool"] == name.replace("gpu-", "") + "-gpu"
    assert "tolerations" not in groups["cpu"]["template"]["spec"]


def test_raycluster_advertises_the_pools_the_multi_gpu_serve_config_asks_for() -> None:
    advertised = set()
    for group in raycluster()["spec"]["workerGroupSpecs"]:
        if "resources" in group["rayStartParams"]:
            advertised |= pool_markers(group["rayStartParams"]["resources"])
    serve = yaml.safe_load((REPO / "deployments" / "serve_gpu_multi.yaml").read_text())
    asked = {
        name
        for dep in serve["applications"][0]["deployments"]
        for name in (dep.get("ray_actor_options") or {}).get("resources", {})
    }
    assert asked <= advertised == {"callqc_pool_asr", "callqc_pool_judge"}


# ---- on-prem launcher -------------------------------------------------------------------------------------------


def test_onprem_config_passes_rays_cluster_launcher_checks() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = onprem()
    assert config["provider"]["type"] == "local"
    prepared = prepare_config(config)  # what `ray up` does first: defaults, node types from the IP list
    validate_config(prepared)  # Ray's ray-schema.json
    node_type = prepared["available_node_types"]["local.cluster.node"]
    assert node_type["min_workers"] == node_type["max_workers"] == len(config["provider"]["worker_ips"])


def test_onprem_commands_are_valid_shell_and_start_ray_safely() -> None:
    config = onprem()
    commands = config["setup_commands"] + config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for command in commands:
        result = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert result.returncode == 0, (command, result.stderr)
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    for start in (head, workers):
        assert "RAY_AUTH_MODE=token" in start
        assert '--num-gpus="$CALLQC_NUM_GPUS"' in start and '--resources="$CALLQC_RAY_RESOURCES"' in start
    setup = " ".join(config["setup_commands"])
    assert "-r requirements.txt -c constraints.txt" in setup  # the pinned environment, as CI has it
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_node_env_example_is_sourceable_and_names_a_pool() -> None:
    script = f'set -a && . {CLUSTER / "onprem" / "node.env.example"} && printf %s "$CALLQC_RAY_RESOURCES"'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == {"callqc_pool_asr": 1000}
