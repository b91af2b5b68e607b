"""operators.cli without a cluster: pure helpers, `plan`, `scale --dry-run`, and a light import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from operators.cli import NodeRow, find_node, node_rows, ops_app, scaled_config

REPO = Path(__file__).resolve().parents[2]
SINGLE = REPO / "deployments" / "serve_gpu_single.yaml"
runner = CliRunner()


def test_importing_the_cli_loads_no_ray_or_s3_client() -> None:
    code = "import sys, operators.cli; print(sorted(m for m in ('ray', 'minio', 'grpc') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_scaled_config_sets_bounds_and_keeps_the_rest() -> None:
    config = yaml.safe_load(SINGLE.read_text())
    changed = scaled_config(config, "callqc", "ASR", 2, 5)
    asr = next(d for d in changed["applications"][0]["deployments"] if d["name"] == "ASR")
    assert asr["autoscaling_config"]["min_replicas"] == 2 and asr["autoscaling_config"]["max_replicas"] == 5
    assert asr["autoscaling_config"]["upscale_delay_s"] == 30  # untouched
    assert asr["ray_actor_options"]["num_gpus"] == 0.25
    assert config != changed and yaml.safe_load(SINGLE.read_text()) == config  # the input is not modified


def test_scaled_config_turns_fixed_replicas_into_autoscaling() -> None:
    config = yaml.safe_load((REPO / "deployments" / "serve_local.yaml").read_text())
    asr = next(
        d for d in scaled_config(config, "callqc", "ASR", 1, 2)["applications"][0]["deployments"] if d["name"] == "ASR"
    )
    assert "num_replicas" not in asr and asr["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 2}
    with pytest.raises(KeyError, match="'Nope' is not in application 'callqc'"):
        scaled_config(config, "callqc", "Nope", 1, 2)


def test_scale_dry_run_validates_and_writes_the_changed_config(tmp_path: Path) -> None:
    out = tmp_path / "scaled.yaml"
    result = runner.invoke(
        ops_app, ["scale", "ASR", "--min", "1", "--max", "4", "--config", str(SINGLE), "--out", str(out), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output
    asr = next(d for d in yaml.safe_load(out.read_text())["applications"][0]["deployments"] if d["name"] == "ASR")
    assert asr["autoscaling_config"]["max_replicas"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Dispatcher", "--min", "1", "--max", "2"], "only reader of the open-batch markers"),
        (["ASR", "--min", "3", "--max", "2"], "min_replicas (3) is greater than max_replicas (2)"),
        (["Diarizer", "--min", "1", "--max", "2"], "'Diarizer' is not in application 'callqc'"),
    ],
)
def test_scale_refuses_bad_requests(args: list[str], message: str) -> None:
    result = runner.invoke(ops_app, ["scale", *args, "--config", str(SINGLE), "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())


def test_plan_prints_gpus_per_stage_as_json() -> None:
    result = runner.invoke(
        ops_app, ["plan", "--calls-per-day", "100000", "--avg-minutes", "4", "--peak-factor", "1.5", "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    stages = {s["stage"]: s for s in body["stages"]}
    assert stages["ASR"]["gpus"] > 0 and body["gpus"] == pytest.approx(sum(s["gpus"] for s in body["stages"]))
    assert body["workload"]["peak_factor"] == 1.5


def test_plan_table_flags_estimates_and_rejects_bad_input() -> None:
    ok = runner.invoke(ops_app, ["plan", "--calls-per-day", "5000", "--avg-minutes", "3"], env={"COLUMNS": "200"})
    assert ok.exit_code == 0 and "not measured on this hardware" in ok.output
    bad = runner.invoke(ops_app, ["plan", "--calls-per-day", "5000", "--avg-minutes", "3", "--peak-factor", "0.5"])
    assert bad.exit_code == 1 and "peak_factor" in bad.output
    unknown = runner.invoke(ops_app, ["plan", "--calls-per-day", "5", "--avg-minutes", "3", "--profile", "tpu"])
    assert unknown.exit_code == 1 and "no profile 'tpu'" in unknown.output


NODES = [
    {
        "NodeID": "aa11",
        "NodeManagerAddress": "10.0.0.1",
        "Alive": True,
        "Resources": {"CPU": 16.0, "node:__internal_head__": 1.0},
    },
    {
        "NodeID": "bb22",
        "NodeManagerAddress": "10.0.0.2",
        "Alive": True,
        "Resources": {"CPU": 32.0, "GPU": 4.0, "callqc_pool_asr": 1000.0},
    },
    {"NodeID": "cc33", "NodeManagerAddress": "10.0.0.3", "Alive": False, "Resources": {"CPU": 32.0, "GPU": 4.0}},
]


def test_node_rows_show_reserved_gpus_pools_and_draining() -> None:
    rows = node_rows(NODES, {"aa11": {"CPU": 15.0}, "bb22": {"CPU": 20.0, "GPU": 1.5}}, draining={"bb22"})
    head, gpu, dead = rows
    assert head.head and head.cpus_used == 1.0
    assert (gpu.gpus, gpu.gpus_used, gpu.pools, gpu.draining) == (4.0, 2.5, ["asr"], True)
    assert not dead.alive


def test_find_node_by_id_prefix_or_address() -> None:
    rows = node_rows(NODES, {}, set())
    assert find_node(rows, "bb").node_id == "bb22"
    assert find_node(rows, "10.0.0.1").head
    with pytest.raises(LookupError, match="0 alive nodes match 'cc33'"):
        find_node(rows, "cc33")  # dead nodes cannot be drained
    assert isinstance(rows[0], NodeRow)
