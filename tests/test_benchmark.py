"""The benchmark runner's plan, resume logic and report, with a fake command runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import falsecl.benchmark.runner as runner_mod
from falsecl.benchmark import plan_cells, run_benchmark, summarize, write_report
from falsecl.benchmark.report import markdown_table
from falsecl.benchmark.runner import Method


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
                (root / "backbone.pt").write_text("x")
            else:
                (root / "checkpoints" / "best-epoch000-step1.ckpt").write_text("x")
        else:
            out = Path(opts["--output_dir"])
            out.mkdir(parents=True, exist_ok=True)
            # Deterministic fake scores: the pretrained methods score higher, seeds differ.
            run_dir = out.parent
            seed = int(run_dir.name[-1])
            base = 0.3 if "random" in str(run_dir) else 0.5
            miou = base + 0.02 * seed
            out.joinpath("metrics.json").write_text(json.dumps(
                {"mIoU": miou, "OA": 0.8, "kappa": 0.7, "per_class": {"water": {"IoU": miou}, "road": {"IoU": 0.1}}}
            ))
        return 0


METHODS = [Method("random"), Method("false", "configs/pretrain/x.yaml", ["--model.init_args.alpha", "0.5"])]


def test_plan_cells_order_and_validation():
    cells = plan_cells(METHODS, [0.01, 1.0], [0, 1])
    assert [c.slug for c in cells[:4]] == [
        "random/labels1pct_seed0", "random/labels1pct_seed1", "false/labels1pct_seed0", "false/labels1pct_seed1"]
    with pytest.raises(ValueError):
        plan_cells(METHODS, [0.0], [0])
    with pytest.raises(ValueError):
        plan_cells([Method("a"), Method("a")], [0.1], [0])
    with pytest.raises(ValueError):
        plan_cells([], [0.1], [0])


def test_runs_matrix_then_resumes_without_rerunning(tmp_path, monkeypatch):
    fake = FakeFalsecl()
    monkeypatch.setattr(runner_mod, "_subprocess_runner", fake)
    results = run_benchmark(METHODS, "ft.yaml", [0.1], [0, 1], str(tmp_path))
    commands = [c[0] for c in fake.calls]
    # Pretraining once for the one pretrained method, 4 fine-tunings, 4 evaluations.
    assert commands.count("pretrain") == 1
    assert commands.count("finetune") == 4 and commands.count("evaluate") == 4
    pre = next(c for c in fake.calls if c[0] == "pretrain")
    assert pre[-2:] == ["--model.init_args.alpha", "0.5"]
    ft_false = [c for c in fake.calls if c[0] == "finetune" and "false/" in " ".join(c)]
    assert all("--model.backbone_weights" in c for c in ft_false)
    ft_random = [c for c in fake.calls if c[0] == "finetune" and "random/" in " ".join(c)]
    assert not any("--model.backbone_weights" in c for c in ft_random)
    assert [r["mIoU"] for r in results] == pytest.approx([0.3, 0.32, 0.5, 0.52])
    assert (tmp_path / "report.md").is_file() and (tmp_path / "miou.png").stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text()) == results

    fake.calls.clear()
    again = run_benchmark(METHODS, "ft.yaml", [0.1], [0, 1], str(tmp_path))
    assert fake.calls == [] and again == results


def test_interrupted_training_resumes_from_last_checkpoint(tmp_path, monkeypatch):
    fake = FakeFalsecl(fail_on="finetune")
    monkeypatch.setattr(runner_mod, "_subprocess_runner", fake)
    run_dir = tmp_path / "random" / "labels10pct_seed0"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_text("x")
    with pytest.raises(RuntimeError, match="finetune"):
        run_benchmark([Method("random")], "ft.yaml", [0.1], [0], str(tmp_path))
    assert fake.calls[-1][-2:] == ["--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")]
    assert not (run_dir / "DONE").exists()


def test_summary_mean_std_and_tables(tmp_path):
    cells = [
        {"method": "a", "label_fraction": 0.1, "seed": s, "mIoU": v, "OA": 0.9, "kappa": 0.8,
         "per_class": {"water": v}}
        for s, v in enumerate([0.4, 0.6])
    ]
    rows = summarize(cells)
    assert len(rows) == 1
    mean, std = rows[0]["mIoU"]
    assert mean == pytest.approx(0.5) and std == pytest.approx(0.1414213562, rel=1e-6)
    table = markdown_table(rows)
    assert "50.00 ± 14.14" in table and "10 %" in table
    paths = write_report(cells, tmp_path)
    assert "50.00" in paths["html"].read_text()
