"""End to end on the vendored Dubai data: finetune with configs/finetune/smoke.yaml, then evaluate."""

import json
from pathlib import Path

import pytest

from falsecl.cli.finetune import main as finetune_main
from falsecl.cli.inference import evaluate_main

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "dubai_aerial"


@pytest.mark.skipif(not (DATA / "Tile 1").is_dir(), reason="vendored Dubai data not present")
def test_smoke_config_finetune_then_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the config's data root is relative to the repository
    runs = tmp_path / "runs"
    argv = [
        "--config",
        "configs/finetune/smoke.yaml",
        "--runs_dir",
        str(runs),
        "--data.stats_path",
        str(tmp_path / "stats.json"),
    ]
    assert finetune_main(argv) == 0
    last = runs / "smoke" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    out = tmp_path / "eval"
    argv = [
        "--checkpoint",
        str(last),
        "--split",
        "val",
        "--max_images",
        "1",
        "--window",
        "256",
        "--device",
        "cpu",
        "--output_dir",
        str(out),
    ]
    assert evaluate_main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_names"] == ["building", "land", "road", "vegetation", "water"]
    assert metrics["pixels"] > 100_000 and metrics["settings"]["images"] == 1
    assert 0.0 <= metrics["OA"] <= 1.0
