"""The benchmark runner's plan, resume logic, probe cells and report, with a fake command runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import falsecl.benchmark.runner as runner_mod
from falsecl.benchmark import Method, plan_cells, run_benchmark, summarize, write_report
from falsecl.benchmark.report import markdown_table
from falsecl.cli.benchmark import narrow_args
from falsecl.models.backbones import build_backbone, save_backbone_file


class FakeFalsecl:
    """Records command lines and writes what each real command would leave behind."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, args: list[str]) -> int:
        self.calls.append(args)
        if self.fail_on and self.fail_on in " ".join(args):
            return 3
        opts = dict(zip(args[1::2], args[2::2], strict=False))
        if args[0] in ("pretrain", "finetune"):
            root = Path(opts["--trainer.default_root_dir"])
            (root / "checkpoints").mkdir(parents=True, exist_ok=True)
            (root / "checkpoints" / "last.ckpt").write_text("x")
            if args[0] == "pretrain":
                save_backbone_file(root / "backbone.pt", build_backbone("resnet18"), "resnet18", 3)
            else:
                (root / "checkpoints" / "best-epoch000-step1.ckpt").write_text("x")
        else:
            out = Path(opts["--output_dir"])
            out.mkdir(parents=True, exist_ok=True)
            # Deterministic fake scores: the pretrained methods score higher, seeds differ; road is undefined.
            run_dir = out.parent
            seed = int(run_dir.name[-1])
            base = 0.3 if "random" in str(run_dir) else 0.5
            miou = base + 0.02 * seed
            out.joinpath("metrics.json").write_text(json.dumps(
                {"mIoU": miou, "OA": 0.8, "kappa": 0.7, "per_class": {"water": {"IoU": miou}, "road": {"IoU": None}}}
            ))
        return 0


METHODS = [Method("random", finetune_args=["--model.backbone_lr_factor", "1.0"]),
           Method("false", "configs/pretrain/x.yaml", ["--model.init_args.alpha", "0.5"])]


def test_plan_cells_order_and_validation():
    cells = plan_cells(METHODS, [0.01], [0, 1], pretrain_seeds=[0, 1], probe_fractions=[0.05])
    # Every probe first (seed-major), then every fine-tuning: a run cut short holds the whole probe matrix.
    assert [c.slug for c in cells[:3]] == [
        "random/probe/labels5pct_pre0_ft0", "random/probe/labels5pct_pre0_ft1", "false/probe/labels5pct_pre0_ft0"]
    assert [c.protocol for c in cells] == ["probe"] * 8 + ["finetune"] * 8
    assert cells[8].slug == "random/finetune/labels1pct_pre0_ft0"
    assert len(cells) == 2 * 2 * 2 * 2 and cells[-1].slug == "false/finetune/labels1pct_pre1_ft1"
    probe_only = plan_cells([METHODS[0], Method("b", "x.yaml", finetune=False)], [0.01], [0], probe_fractions=[0.05])
    assert [c.slug for c in probe_only] == ["random/probe/labels5pct_pre0_ft0", "b/probe/labels5pct_pre0_ft0",
                                            "random/finetune/labels1pct_pre0_ft0"]
    with pytest.raises(ValueError):
        plan_cells(METHODS, [0.0], [0])
    with pytest.raises(ValueError):
        plan_cells([Method("a"), Method("a")], [0.1], [0])
    with pytest.raises(ValueError):
        plan_cells([], [0.1], [0])


def test_runs_matrix_over_both_seeds_then_resumes_without_rerunning(tmp_path, monkeypatch, capsys):
    fake = FakeFalsecl()
    monkeypatch.setattr(runner_mod, "_subprocess_runner", fake)
    results = run_benchmark(METHODS, "ft.yaml", [0.1, 1.0], [0, 1], pretrain_seeds=[0, 1], output_dir=str(tmp_path))
    commands = [c[0] for c in fake.calls]
    # One pretraining per pretraining seed, reused by both fractions; 2 x 2 x 2 fine-tunings per method.
    assert commands.count("pretrain") == 2
    assert commands.count("finetune") == 16 and commands.count("evaluate") == 16
    pre = [c for c in fake.calls if c[0] == "pretrain"]
    assert pre[0][-4:] == ["--model.init_args.alpha", "0.5", "--seed_everything", "0"]
    ft_false = [c for c in fake.calls if c[0] == "finetune" and "false/" in " ".join(c)]
    assert all("--model.backbone_weights" in c for c in ft_false)
    assert all(c[c.index("--model.backbone_weights") + 1].endswith(f"pretrain_seed{c[-1][0]}/backbone.pt")
               for c in ft_false if c[-1] in ("0", "1000"))
    ft_random = [c for c in fake.calls if c[0] == "finetune" and "random/" in " ".join(c)]
    assert len(ft_random) == 8 and len(ft_false) == 8  # all() over an empty list would prove nothing
    assert not any("--model.backbone_weights" in c for c in ft_random)
    assert all(c[c.index("--model.backbone_lr_factor") + 1] == "1.0" for c in ft_random)
    # Same labelled subset for every method at a (fraction, fine-tuning seed): the same --data.seed.
    subset_args = {tuple(c[c.index("--data.label_fraction"):c.index("--data.label_fraction") + 4])
                   for c in fake.calls if c[0] == "finetune"}
    assert len(subset_args) == 4
    assert {(r["pretrain_seed"], r["finetune_seed"]) for r in results} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert all(r["per_class"]["road"] is None for r in results)
    assert "[16/16 cells" in capsys.readouterr().out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == results
    assert "n/a" in (tmp_path / "report.md").read_text()

    fake.calls.clear()
    again = run_benchmark(METHODS, "ft.yaml", [0.1, 1.0], [0, 1], pretrain_seeds=[0, 1], output_dir=str(tmp_path))
    assert fake.calls == [] and again == results
    narrowed = run_benchmark(METHODS, "ft.yaml", [0.1, 1.0], [0, 1], pretrain_seeds=[0, 1],
                             output_dir=str(tmp_path / "n"), select_methods=["random"], select_fractions=[0.1],
                             select_seeds=[0])
    assert len(narrowed) == 1 and narrowed[0]["method"] == "random"


def test_interrupted_training_resumes_from_last_checkpoint(tmp_path, monkeypatch):
    fake = FakeFalsecl(fail_on="finetune")
    monkeypatch.setattr(runner_mod, "_subprocess_runner", fake)
    run_dir = tmp_path / "random" / "finetune" / "labels10pct_pre0_ft0"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_text("x")
    with pytest.raises(RuntimeError, match="finetune"):
        run_benchmark([Method("random")], "ft.yaml", [0.1], [0], output_dir=str(tmp_path))
    assert fake.calls[-1][-2:] == ["--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")]
    assert not (run_dir / "DONE").exists() and not (run_dir / "LOCK").exists()


def test_narrowing_flags():
    assert narrow_args(["--config", "c.yaml", "--methods", "a,b", "--fractions=0.01,0.05", "--seeds", "0"]) == [
        "--config", "c.yaml", "--select_methods", "[a,b]", "--select_fractions", "[0.01,0.05]",
        "--select_seeds", "[0]"]
    assert narrow_args(["--seeds", "[0,1]"]) == ["--seeds", "[0,1]"]
    with pytest.raises(ValueError, match="not in the configured"):
        run_benchmark(METHODS, "ft.yaml", [0.1], [0], select_methods=["nope"], dry_run=True)


def test_summary_mean_std_and_tables(tmp_path):
    cells = [
        {"method": "a", "label_fraction": 0.1, "seed": s, "mIoU": v, "OA": 0.9, "kappa": 0.8,
         "per_class": {"water": v}}
        for s, v in enumerate([0.4, 0.6])
    ]
    rows = summarize(cells)
    assert len(rows) == 1
    assert rows[0]["mean"] == pytest.approx(0.5) and rows[0]["std"] == pytest.approx(0.1414213562, rel=1e-6)
    table = markdown_table(rows)
    assert "50.00 ± 14.14 (n=2)" in table and "10 %" in table and "p0/f1: 60.00" in table
    paths = write_report(cells, tmp_path)
    assert "50.00" in paths["html"].read_text()


def test_null_iou_renders_na_and_never_crashes(tmp_path):
    cells = [{"method": "random", "label_fraction": 0.05, "seed": 0, "mIoU": None, "OA": None, "kappa": None,
              "per_class": {"water": None}},
             {"method": "simclr", "label_fraction": 0.05, "seed": 0, "mIoU": float("nan"), "per_class": {}}]
    paths = write_report(cells, tmp_path)
    text = paths["markdown"].read_text()
    assert "| random | n/a |" in text and "n/a" in paths["html"].read_text()


def test_report_only_runs_nothing_and_publishes_the_finished_cells(tmp_path, monkeypatch):
    fake = FakeFalsecl()
    monkeypatch.setattr(runner_mod, "_subprocess_runner", fake)
    kwargs = {"output_dir": str(tmp_path / "bench"), "publish_dir": str(tmp_path / "docs"), "publish_name": "q",
              "intro": "**What ran.** two methods"}
    run_benchmark(METHODS, "ft.yaml", [0.1], [0], select_methods=["random"], **kwargs)
    fake.calls.clear()
    partial = run_benchmark(METHODS, "ft.yaml", [0.1], [0], report_only=True, **kwargs)
    assert fake.calls == [] and [r["method"] for r in partial] == ["random"]
    md = (tmp_path / "docs" / "q.md").read_text()
    assert md.startswith("# falsecl benchmark\n\n**What ran.** two methods\n")
    assert "DeepLabv3+ fine-tuning: 1 of 2 cells (partial)" in md
    assert "<strong>What ran.</strong>" in (tmp_path / "docs" / "q.html").read_text()
    assert json.loads((tmp_path / "docs" / "q_results.json").read_text()) == partial


def test_eta_from_measured_cell_times_per_protocol():
    from falsecl.benchmark.cells import eta_seconds, progress_line

    done = [{"method": "a", "protocol": "probe", "wall_s": 30.0, "pretrain_wall_s": 100.0, "pretrain_seed": 0},
            {"method": "a", "protocol": "probe", "wall_s": 50.0, "pretrain_wall_s": 100.0, "pretrain_seed": 0},
            {"method": "b", "protocol": "probe", "wall_s": 40.0, "pretrain_wall_s": 200.0, "pretrain_seed": 0}]
    # 2 probes x 40 s + 2 pretrainings x 150 s (a's 100 s counted once); fine-tuning not timed yet: a lower bound.
    assert eta_seconds(done, {"probe": 2, "finetune": 3}, 2) == (2 * 40 + 2 * 150, False)
    assert eta_seconds(done, {"probe": 2, "finetune": 0}, 0) == (80.0, True)
    assert eta_seconds([], {"probe": 1}, 1) is None
    assert progress_line(3, 8, 75.0, (380.0, False)) == "[3/8 cells, 1m15s elapsed, ETA >6m20s]"
    assert progress_line(3, 8, 3700.0, None) == "[3/8 cells, 1h01m elapsed, ETA n/a]"
