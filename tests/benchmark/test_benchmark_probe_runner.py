"""Probe cells through the runner on a tiny fake Dubai layout, with a stubbed pretraining."""

from __future__ import annotations

import json
from pathlib import Path

import falsecl.benchmark.runner as runner_mod
from falsecl.benchmark import Method, run_benchmark
from falsecl.datasets.subsets import label_fraction_subset, load_ids
from falsecl.models.backbones import build_backbone, save_backbone_file
from tests.data.fake_layouts import make_dubai


def test_probe_cells_share_subsets_reuse_the_backbone_and_resume(tmp_path, monkeypatch):
    root = make_dubai(tmp_path / "dubai", size=(64, 64))
    config = tmp_path / "ft.yaml"
    config.write_text(f"data:\n  dataset: dubai\n  root: {root}\n  patch_size: 32\n  stats_patches: 8\n")
    pretrainings: list[list[str]] = []

    def fake(args: list[str]) -> int:
        pretrainings.append(args)
        run_dir = Path(args[args.index("--trainer.default_root_dir") + 1])
        save_backbone_file(run_dir / "backbone.pt", build_backbone("resnet18"), "resnet18", 3)
        return 0

    monkeypatch.setattr(runner_mod, "_subprocess_runner", fake)
    methods = [Method("random_init"), Method("ssl", "x.yaml")]
    kwargs = {"label_fractions": [], "probe_fractions": [0.25, 1.0], "seeds": [0, 1], "pretrain_seeds": [0],
              "output_dir": str(tmp_path / "bench"), "probe_steps": 5, "probe_window": 32}
    results = run_benchmark(methods, str(config), **kwargs)
    assert len(pretrainings) == 1  # one backbone for both fractions and seeds
    assert len(results) == 2 * 2 * 2 and {r["protocol"] for r in results} == {"probe"}
    for r in results:
        assert 0.0 <= r["mIoU"] <= 1.0 and r["wall_s"] > 0
        assert (Path(r["run_dir"]) / "head.pt").is_file()
    out = tmp_path / "bench"
    # The recorded subset is the one fine-tuning draws from the same (fraction, seed).
    ids = load_ids(out / "subsets" / "labels25pct_seed1.txt")
    from falsecl.datamodules import SegmentationDataModule

    dm = SegmentationDataModule("dubai", str(root), patch_size=32, stats_patches=8)
    dm.setup()
    assert dm.train_full is not None
    assert ids == [dm.train_full.patch_ids[i] for i in label_fraction_subset(dm.train_full.patches, 0.25, 1)]
    assert len(list((out / "probe_cache").glob("features_*.pt"))) == 2  # one per backbone
    assert (out / "panel.png").is_file() and "Predictions on test images" in (out / "report.md").read_text()
    assert json.loads((out / "benchmark_args.json").read_text())["method_info"][1]["pretrained"]
    again = run_benchmark(methods, str(config), **kwargs)
    assert len(pretrainings) == 1 and again == results
