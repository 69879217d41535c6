"""The shipped benchmark configs plan the v2 matrix (CPU dry runs; no training)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from falsecl.benchmark.cells import Method, panel_methods
from falsecl.cli.benchmark import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["cpu_dubai", "gpu_dubai"])
def test_config_dry_run_plans_3_x_3_seeds_with_the_primary_endpoint(name, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    config = yaml.safe_load((REPO / f"configs/benchmark/{name}.yaml").read_text())
    assert config["primary_endpoint"]["method"] == "simclr_false"
    assert config["primary_endpoint"]["reference"] == "simclr_ntxent"
    assert config["pretrain_seeds"] == [0, 1, 2] and config["seeds"] == [0, 1, 2]
    steps = int(config["pretrain_args"][config["pretrain_args"].index("--trainer.max_steps") + 1])
    assert steps >= 500 and "bf16-mixed" in config["pretrain_args"]
    tier1 = [m["name"] for m in config["methods"] if m.get("priority", 1) == 1]
    assert tier1 == ["random_init", "random_init_bn", "simclr_ntxent", "simclr_false"]
    assert main(["--config", f"configs/benchmark/{name}.yaml", "--dry_run", "true"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "/probe/" in line]
    assert len([line for line in lines if not line.startswith("repro/")]) == len(config["methods"]) * 3 * 3 * 4
    # Tier 1 at every seed comes before any tier-2 cell.
    first_late = next(i for i, line in enumerate(lines) if line.startswith("simclr_false_t097/"))
    assert all(not line.startswith(tuple(f"{m}/" for m in tier1)) for line in lines[first_late:]
               if not line.startswith("repro/"))


def test_gpu_pretraining_arguments_parse(tmp_path):
    """The GPU config's pretraining arguments are accepted by ``falsecl pretrain`` (printed, not run)."""
    config = yaml.safe_load((REPO / "configs/benchmark/gpu_dubai.yaml").read_text())
    method = next(m for m in config["methods"] if m["name"] == "moco_v2_false")
    args = [sys.executable, "-m", "falsecl.cli", "pretrain", "--config", method["pretrain_config"],
            *config["pretrain_args"], *method["pretrain_args"], "--print_config"]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = yaml.safe_load(done.stdout)
    assert printed["model"]["init_args"]["gate"] == "quantile" and printed["trainer"]["max_steps"] == 935


def test_panel_shows_random_init_simclr_and_simclr_false():
    # random_init_bn has a base (random_init) but is a control: the panel's third column is the first pretrained
    # method that modifies another, SimCLR + FALSE.
    config = yaml.safe_load((REPO / "configs/benchmark/cpu_dubai.yaml").read_text())
    methods = [Method(**m) for m in config["methods"]]
    assert panel_methods(methods) == ["random_init", "simclr_ntxent", "simclr_false"]
