"""The benchmark runner driving the real sub-commands (tiny configs, real Dubai data, one test image)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from falsecl.benchmark import run_benchmark
from falsecl.benchmark.runner import Method

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (REPO / "data/dubai_aerial/Tile 1").is_dir(), reason="vendored Dubai data missing")
def test_pretrain_finetune_evaluate_through_real_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the configs name data/dubai_aerial relative to the repository
    out = tmp_path / "bench"
    methods = [Method("random"), Method("smoke_false", "configs/pretrain/smoke.yaml")]
    results = run_benchmark(
        methods,
        "configs/finetune/smoke.yaml",
        label_fractions=[0.05],
        seeds=[0],
        output_dir=str(out),
        evaluate_args=["--split", "test", "--max_images", "1", "--window", "128", "--progress", "false"],
    )
    assert [r["method"] for r in results] == ["random", "smoke_false"]
    for r in results:
        assert 0.0 <= r["mIoU"] <= 1.0 and 0.0 <= r["OA"] <= 1.0
        assert set(r["per_class"]) == {"building", "land", "road", "vegetation", "water"}
    # The pretrained cell really started from the pretraining's backbone file: the fine-tuned model's card names
    # it (written from the hyper-parameters the encoder was loaded with), and the random cell's names none.
    backbone = out / "smoke_false" / "pretrain_seed0" / "backbone.pt"
    card = json.loads((out / "smoke_false/finetune/labels5pct_pre0_ft0/model.json").read_text())
    assert Path(card["pretraining"]["backbone"]).resolve() == backbone.resolve()
    random_card = json.loads((out / "random/finetune/labels5pct_pre0_ft0/model.json").read_text())
    assert random_card["pretraining"]["backbone"] is None
    saved = json.loads((out / "smoke_false/finetune/labels5pct_pre0_ft0/eval/metrics.json").read_text())
    assert saved["settings"]["images"] == 1
    assert "smoke_false" in (out / "report.md").read_text()
