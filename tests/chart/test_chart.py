"""The Helm chart, offline: helm lint + template per values profile, Kubernetes and KubeRay schema validation,
network isolation, secrets by reference only, and the Serve config kept equal to deployments/serve_*.yaml."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from operators.validate_config import app_deployments, check_config
from tests.chart.conftest import CHART, CRDS, PROFILES, REPO, render, values_args
from tests.chart.kube import CrdValidator, helm

ALL = list(PROFILES)
KUBERNETES_VERSIONS = ["1.29", "1.37"]  # the chart's kubeVersion floor and the newest schemas available
CUSTOM_KINDS = {"RayService", "RayCluster", "ServiceMonitor"}
CRD_SHA256 = {
    "ray.io_rayservices.yaml": "0a8fc325e6e22b9231c1f282b309555e2ecf94227ca20a03df3d1d9a403907ab",
    "ray.io_rayclusters.yaml": "c44704442eef0c6721ad40c1d66782c8bd3fdab9d3344306a5820910a679baa1",
}
SERVE_FILES = {
    "default": "serve_local.yaml",
    "gpu-single": "serve_gpu_single.yaml",
    "gpu-multi": "serve_gpu_multi.yaml",
}


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: tuple[dict[str, Any], ...], kind: str, suffix: str = "") -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{len(found)} {kind} named *{suffix}"
    return found[0]


def serve_config(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return yaml.safe_load(one(docs, "RayService")["spec"]["serveConfigV2"])


def containers(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """Every container of every pod template: workloads and the RayService's head and worker groups."""
    found = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            found += doc["spec"]["template"]["spec"]["containers"]
        if doc["kind"] == "RayService":
            cluster = doc["spec"]["rayClusterConfig"]
            found += cluster["headGroupSpec"]["template"]["spec"]["containers"]
            for group in cluster["workerGroupSpecs"]:
                found += group["template"]["spec"]["containers"]
    return found


# ---- helm itself --------------------------------------------------------------------------------------------


def test_helm_comes_from_the_pinned_wheel(helm_path: Path) -> None:
    assert helm_path.is_file()
    assert helm("version", "--short").stdout.startswith("v4.")


@pytest.mark.parametrize("profile", ALL)
def test_helm_lint_strict(profile: str) -> None:
    result = helm("lint", "--strict", str(CHART), *values_args(profile), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profile", ALL)
def test_template_renders_the_expected_objects(profile: str) -> None:
    kinds = sorted(d["kind"] for d in render(profile))
    expected = {"RayService", "Deployment", "Service", "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"}
    assert expected <= set(kinds)
    assert ("StatefulSet" in kinds) == ("external-s3" not in profile)
    assert one(render(profile), "ConfigMap", "-dashboard")


def test_external_s3_without_an_endpoint_fails_clearly() -> None:
    result = helm("template", "rel", str(CHART), "--set", "minio.enabled=false", check=False)
    assert result.returncode != 0 and "s3.endpoint is required when minio.enabled=false" in result.stderr


# ---- schema validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("profile", ALL)
def test_builtin_objects_validate_strictly(profile: str, version: str) -> None:
    for doc in render(profile):
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("profile", ALL)
def test_rayservice_validates_against_the_kuberay_crd(profile: str, rayservice_validator: CrdValidator) -> None:
    rayservice = one(render(profile), "RayService")
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert rayservice_validator.errors(rayservice) == []


def test_crd_validation_catches_a_typo(rayservice_validator: CrdValidator) -> None:
    broken = json.loads(json.dumps(one(render("gpu-multi"), "RayService")))
    group = broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    group["maxReplica"] = group.pop("maxReplicas")
    group["replicas"] = "two"
    errors = rayservice_validator.errors(broken)
    assert any("'maxReplica' was unexpected" in e for e in errors), errors
    assert any(e.startswith("spec.rayClusterConfig.workerGroupSpecs.0.replicas: 'two'") for e in errors), errors


def test_servicemonitor_shape() -> None:
    monitor = one(render("default"), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selected = monitor["spec"]["selector"]["matchLabels"]
    scraped = [s for s in of_kind(render("default"), "Service") if selected.items() <= s["metadata"]["labels"].items()]
    assert sorted(s["metadata"]["name"] for s in scraped) == ["rel-callqc-gateway", "rel-callqc-ray-metrics"]
    assert all(any(p["name"] == "metrics" for p in s["spec"]["ports"]) for s in scraped)


def test_vendored_crds_are_the_pinned_kuberay_ones() -> None:
    for name, digest in CRD_SHA256.items():
        assert hashlib.sha256((CRDS / name).read_bytes()).hexdigest() == digest, name


# ---- the Serve application ----------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ALL)
def test_serve_config_passes_the_validator(profile: str) -> None:
    config = serve_config(render(profile))
    assert config["proxy_location"] == "Disabled"
    assert check_config(config, app_deployments) == []


@pytest.mark.parametrize("profile", list(SERVE_FILES))
def test_serve_config_equals_the_deployments_file(profile: str) -> None:
    rendered = serve_config(render(profile))["applications"][0]
    expected = yaml.safe_load((REPO / "deployments" / SERVE_FILES[profile]).read_text())["applications"][0]
    assert rendered["deployments"] == expected["deployments"]
    assert rendered["runtime_env"]["env_vars"] == (expected.get("runtime_env") or {}).get(
        "env_vars", rendered["runtime_env"]["env_vars"]
    )
    assert rendered["import_path"] == expected["import_path"]


@pytest.mark.parametrize("profile", ["gpu-single", "gpu-multi"])
def test_gpu_workers_request_gpus_and_tolerate_the_gpu_taint(profile: str) -> None:
    cluster = one(render(profile), "RayService")["spec"]["rayClusterConfig"]
    gpu_groups = [
        g
        for g in cluster["workerGroupSpecs"]
        if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    assert gpu_groups
    for group in gpu_groups:
        pod = group["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["nodeSelector"]


def test_every_pool_a_deployment_asks_for_is_advertised_by_a_worker_group() -> None:
    docs = render("gpu-multi")
    advertised: dict[str, str] = {}
    for group in one(docs, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        raw = group["rayStartParams"].get("resources")
        if raw:  # KubeRay passes it to the shell: '"{\"name\": n}"'
            assert raw.startswith('"') and raw.endswith('"')
            for name in json.loads(raw[1:-1].replace('\\"', '"')):
                advertised[name] = group["groupName"]
    asked = {
        name
        for dep in serve_config(docs)["applications"][0]["deployments"]
        for name in (dep.get("ray_actor_options") or {}).get("resources", {})
    }
    assert asked and asked <= set(advertised)
    assert advertised["callqc_pool_asr"] == "gpu-asr" and advertised["callqc_pool_judge"] == "gpu-judge"


def test_worker_readiness_does_not_wait_for_the_disabled_serve_proxy() -> None:
    for group in one(render("gpu-multi"), "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        command = " ".join(group["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"])
        assert "local_raylet_healthz" in command and "-/healthz" not in command


# ---- isolation and secrets ----------------------------------------------------------------------------------


def policies(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"].removeprefix("rel-callqc-"): d for d in of_kind(docs, "NetworkPolicy")}


@pytest.mark.parametrize("profile", ALL)
def test_network_policies_isolate_everything_but_the_gateway(profile: str) -> None:
    docs = render(profile)
    found = policies(docs)
    assert {"default-deny", "gateway", "ray"} <= set(found)
    assert ("minio" in found) == ("external-s3" not in profile)
    deny = found["default-deny"]["spec"]
    assert deny["podSelector"] == {"matchLabels": {"app.kubernetes.io/instance": "rel"}}
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    allowed_namespaces = {"kuberay-system", "monitoring"}
    for name, policy in found.items():
        for rule in policy["spec"].get("ingress", []):
            if "from" not in rule:  # open to any source: only the gateway's gRPC port
                assert name == "gateway" and rule["ports"] == [{"protocol": "TCP", "port": 50051}], (name, rule)
                continue
            for peer in rule["from"]:
                namespace = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                assert "ipBlock" not in peer and (namespace in allowed_namespaces or "namespaceSelector" not in peer)


def test_ray_dashboard_is_reachable_only_by_the_kuberay_operator() -> None:
    ray = policies(render("default"))["ray"]["spec"]
    assert ray["podSelector"]["matchLabels"]["callqc.io/role"] == "ray"
    rules = ray["ingress"]
    dashboard = [r for r in rules if r.get("ports") == [{"protocol": "TCP", "port": 8265}]]
    assert dashboard and dashboard[0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}}}
    ]
    portless = [r for r in rules if "ports" not in r]
    assert portless == [
        {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "rel", "callqc.io/role": "ray"}}}]}
    ]


def test_s3_is_reachable_only_from_the_gateway_and_ray() -> None:
    minio = policies(render("default"))["minio"]["spec"]
    assert minio["podSelector"]["matchLabels"]["callqc.io/role"] == "s3"
    (rule,) = minio["ingress"]
    roles = sorted(p["podSelector"]["matchLabels"]["callqc.io/role"] for p in rule["from"])
    assert roles == ["gateway", "ray"] and rule["ports"] == [{"protocol": "TCP", "port": 9000}]


@pytest.mark.parametrize("profile", ALL)
def test_dashboard_and_gcs_are_never_exposed(profile: str) -> None:
    docs = render(profile)
    assert not of_kind(docs, "Ingress")
    cluster = one(docs, "RayService")["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"
    assert cluster["authOptions"]["mode"] == "token"
    for service in of_kind(docs, "Service"):
        ports = {p["port"] for p in service["spec"]["ports"]}
        assert not ports & {8265, 6379, 10001, 52365}, service["metadata"]["name"]
        if service["spec"].get("type", "ClusterIP") in ("NodePort", "LoadBalancer"):
            assert service["metadata"]["name"].endswith("-gateway")


def test_exposing_the_gateway_exposes_nothing_else() -> None:
    docs = render("default", "--set", "gateway.service.type=LoadBalancer")
    public = [s["metadata"]["name"] for s in of_kind(docs, "Service") if s["spec"].get("type") == "LoadBalancer"]
    assert public == ["rel-callqc-gateway"]


@pytest.mark.parametrize("profile", ALL)
def test_secrets_are_referenced_never_rendered(profile: str) -> None:
    docs = render(profile)
    assert not of_kind(docs, "Secret")
    referenced = set()
    for container in containers(docs):
        for env in container.get("env", []):
            is_path = env["name"].endswith("_FILE") or str(env.get("value", "")).startswith("/")  # a file, no secret
            if re.search(r"KEY|SECRET|PASSWORD|TOKEN|KEYRING", env["name"]) and not is_path:
                assert "value" not in env, f"{env['name']} has a literal value"
                referenced.add(env["valueFrom"]["secretKeyRef"]["name"])
    assert {"callqc-s3", "callqc-keyring", "callqc-token-signing"} <= referenced
    gateway = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    tls = next(v for v in gateway["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == "callqc-gateway-tls" and tls["secret"]["defaultMode"] == 0o440


def test_gateway_listens_on_all_interfaces_with_tls_and_autoscales() -> None:
    docs = render("default")
    container = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CALLQC_GATEWAY__HOST"] == "0.0.0.0" and env["CALLQC_GATEWAY__TLS_MODE"] == "tls"
    assert env["CALLQC_SECURITY__TLS__CERT_FILE"] == "/etc/callqc/tls/tls.crt"
    assert "tcpSocket" in container["readinessProbe"]  # k8s gRPC probes cannot speak TLS
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "rel-callqc-gateway" and hpa["spec"]["minReplicas"] >= 2
    mtls = one(render("default", "--set", "gateway.tlsMode=mtls"), "Deployment", "-gateway")
    mtls_env = {e["name"]: e.get("value") for e in mtls["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert mtls_env["CALLQC_SECURITY__TLS__CLIENT_CA_FILE"] == "/etc/callqc/tls/ca.crt"


def test_external_s3_points_every_component_at_the_bank_endpoint() -> None:
    docs = render("external-s3")
    for container in containers(docs):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["CALLQC_S3__ENDPOINT"] == "minio.storage.svc.cluster.local:9000"
        assert env["CALLQC_S3__SECURE"] == "true"


# ---- dashboard ------------------------------------------------------------------------------------------------


def test_grafana_dashboard_covers_throughput_backlog_coverage_gpu_and_latency() -> None:
    configmap = one(render("default"), "ConfigMap", "-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["callqc.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "callqc_calls_processed_total",
        "callqc_calls_failed_total",
        "callqc_stage_seconds_bucket",
        "callqc_queue_depth",
        "callqc_calls_accepted_total",
        "DCGM_FI_DEV_GPU_UTIL",
    ):
        assert metric in exprs, metric
    assert "by (le, stage)" in exprs
    from callqc import telemetry

    exported = {
        sample
        for metric in (
            telemetry.CALLS_PROCESSED,
            telemetry.CALLS_FAILED,
            telemetry.STAGE_SECONDS,
            telemetry.QUEUE_DEPTH,
            telemetry.IN_FLIGHT,
            telemetry.CALLS_ACCEPTED,
        )
        for family in metric.describe()
        for sample in (
            family.name,
            f"{family.name}_total",
            f"{family.name}_bucket",
            f"{family.name}_count",
            f"{family.name}_sum",
        )
    }
    used = set(re.findall(r"callqc_[a-z_]+", exprs))
    assert used <= exported, f"dashboard uses metrics callqc does not export: {sorted(used - exported)}"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


# ---- values hygiene -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["values.yaml", *sorted({f for files in PROFILES.values() for f in files})])
def test_every_value_is_commented(name: str) -> None:
    """Every key has a comment above it (or inline), unless an ancestor's ``# --`` comment documents its whole
    subtree as one value (e.g. ``resources``); items of a list are documented by the key holding the list."""
    lines = (CHART / name).read_text().splitlines()
    missing = []
    stack: list[tuple[int, bool]] = []  # (indent, subtree documented) of the enclosing keys
    list_indent: int | None = None
    for number, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if list_indent is not None and (not stripped or indent > list_indent or stripped.startswith("- ")):
            continue
        list_indent = None
        match = re.match(r"([A-Za-z0-9_.-]+):(.*)$", stripped)
        if not match:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        covered = any(documented for _indent, documented in stack)
        previous = lines[number - 1].strip() if number else ""
        inline = "#" in match.group(2)
        if not (covered or inline or previous.startswith("#")):
            missing.append(f"{name}:{number + 1}: {stripped}")
        stack.append((indent, covered or inline or previous.startswith("# --")))
        if match.group(2).strip() == "" and number + 1 < len(lines) and lines[number + 1].lstrip().startswith("- "):
            list_indent = indent
    assert missing == []


@pytest.mark.parametrize("profile", ALL)
def test_every_ray_pod_speaks_mutual_tls_with_a_certificate_issued_at_start(profile: str) -> None:
    """ray.tls: an init container issues the pod's certificate (SAN = pod IP) from the CA Secret; every Ray
    container has RAY_USE_TLS and the RAY_TLS_* files; the CA key never reaches the Ray containers."""
    spec = one(render(profile), "RayService", "")["spec"]["rayClusterConfig"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        (init,) = pod["initContainers"]
        assert "callqc.security.node_cert" in init["command"][-1] and "$POD_IP" in init["command"][-1]
        assert init["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["ray-ca"]["secret"]["secretName"] == "callqc-ray-ca"
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["RAY_USE_TLS"] == "1" and env["RAY_TLS_SERVER_CERT"] == "/etc/ray/tls/node.crt"
            mounts = {m["name"] for m in container["volumeMounts"]}
            assert "ray-tls" in mounts and "ray-ca" not in mounts
    off = one(render("default", "--set", "ray.tls.enabled=false"), "RayService", "")["spec"]["rayClusterConfig"]
    head = off["headGroupSpec"]["template"]["spec"]
    assert "initContainers" not in head and "RAY_USE_TLS" not in {e["name"] for e in head["containers"][0]["env"]}
