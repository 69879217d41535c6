"""Probe cells through the runner on a tiny fake Dubai layout, with a stubbed pretraining."""

from __future__ import annotations

import json
from pathlib import Path

import falsecl.benchmark.resume as resume_mod
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


def test_provenance_bn_control_priority_repro_and_resume_from_published(tmp_path, monkeypatch):
    import falsecl.benchmark.provenance as prov

    root = make_dubai(tmp_path / "dubai", size=(64, 64))
    config = tmp_path / "ft.yaml"
    config.write_text(f"data:\n  dataset: dubai\n  root: {root}\n  patch_size: 32\n  stats_patches: 8\n")
    order: list[str] = []

    def fake(args: list[str]) -> int:
        run_dir = Path(args[args.index("--trainer.default_root_dir") + 1])
        order.append(str(run_dir))
        save_backbone_file(run_dir / "backbone.pt", build_backbone("resnet18"), "resnet18", 3)
        return 0

    monkeypatch.setattr(runner_mod, "_subprocess_runner", fake)
    state = {"git_commit": "abc123", "git_dirty": False, "code_version": "tree1"}
    monkeypatch.setattr(runner_mod, "git_state", lambda: dict(state))
    monkeypatch.setattr(resume_mod, "same_code", lambda commit: commit == "abc123")
    assert prov.git_state()["git_commit"]  # the real one, in this checkout
    methods = [Method("late", "x.yaml", priority=2), Method("random_init"),
               Method("random_init_bn", bn_recalibration=True), Method("ssl", "x.yaml")]
    kwargs = {"label_fractions": [], "probe_fractions": [1.0], "seeds": [0], "pretrain_seeds": [0, 1],
              "output_dir": str(tmp_path / "bench"), "probe_steps": 3, "probe_window": 32,
              "repro": [{"method": "ssl", "pretrain_seed": 0}], "publish_dir": str(tmp_path / "docs"),
              "publish_name": "b"}
    results = run_benchmark(methods, str(config), **kwargs)
    out = tmp_path / "bench"
    # Tier 1 at both seeds, then the reproduction, then tier 2.
    assert [Path(o).relative_to(out).as_posix() for o in order] == [
        "ssl/pretrain_seed0", "ssl/pretrain_seed1", "repro/ssl/pretrain_seed0", "late/pretrain_seed0",
        "late/pretrain_seed1"]
    assert all(r["git_commit"] == "abc123" and r["git_dirty"] is False and len(r["config_hash"]) == 16
               for r in results)
    repro = [r for r in results if r.get("repro")]
    assert len(repro) == 1 and "repro/ssl" in repro[0]["run_dir"]
    bn = [r for r in results if r["method"] == "random_init_bn"]
    assert all(r["bn_recalibration"] and r["backbone"].endswith("backbone.pt") for r in bn)
    assert {r["config_hash"] for r in results if r["method"] == "late"} != {
        r["config_hash"] for r in results if r["method"] == "ssl"}
    published = tmp_path / "docs" / "b_results.json"
    assert published.is_file()

    # Another machine: a fresh output folder, the committed results. Same code: nothing is rerun.
    order.clear()
    again = run_benchmark(methods, str(config), **{**kwargs, "output_dir": str(tmp_path / "other")})
    assert order == [] and len(again) == len(results)
    assert {r["mIoU"] for r in again} == {r["mIoU"] for r in results}
    # A cell of another code version is rerun (and only that one's backbone is pretrained).
    cells = json.loads(published.read_text())
    for r in cells:
        if r["method"] == "ssl" and r["pretrain_seed"] == 1:
            r["git_commit"] = "old"
    published.write_text(json.dumps(cells))
    order.clear()
    run_benchmark(methods, str(config), **{**kwargs, "output_dir": str(tmp_path / "third")})
    assert [Path(o).name for o in order] == ["pretrain_seed1"] and "ssl" in order[0]
