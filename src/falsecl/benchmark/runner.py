"""Run the experiment matrix: pretrain each method once, fine-tune per label fraction and seed, evaluate, report.

Every step is a ``falsecl`` sub-command run in its own process, so one cell's failure or a kill never corrupts
another. The runner is restartable: a finished step (marked by a ``DONE`` file written after the command exits 0,
or by ``metrics.json`` for an evaluation) is skipped, and an interrupted training step resumes from its
``checkpoints/last.ckpt``. Results accumulate in ``<output_dir>/results.json`` and the report is rewritten after
every cell.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from falsecl.benchmark.report import write_report

Runner = Callable[[list[str]], int]


@dataclass
class Method:
    """One pretraining method of the matrix.

    Attributes:
        name: Label in the report (also the run folder name).
        pretrain_config: ``falsecl pretrain`` YAML; ``None`` means no pretraining (random initialisation).
        pretrain_args: Extra ``falsecl pretrain`` arguments for this method (e.g. ``--model.init_args.selection
            official``).
    """

    name: str
    pretrain_config: str | None = None
    pretrain_args: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Cell:
    """One fine-tuning + evaluation of the matrix."""

    method: str
    label_fraction: float
    seed: int

    @property
    def slug(self) -> str:
        """Folder name of the cell."""
        return f"{self.method}/labels{100 * self.label_fraction:g}pct_seed{self.seed}"


def plan_cells(methods: Sequence[Method], label_fractions: Sequence[float], seeds: Sequence[int]) -> list[Cell]:
    """All cells in run order (fraction-major, so a partial run already covers every method at a fraction).

    Raises:
        ValueError: On an empty matrix, duplicate method names or a fraction outside (0, 1].
    """
    if not methods or not label_fractions or not seeds:
        raise ValueError("the benchmark needs at least one method, one label fraction and one seed")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    for fraction in label_fractions:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"label fractions must be in (0, 1] (1 % is 0.01), got {fraction}")
    return [Cell(m.name, f, s) for f in label_fractions for m in methods for s in seeds]


def _subprocess_runner(args: list[str]) -> int:
    print("$ falsecl " + " ".join(args), flush=True)
    return subprocess.call([sys.executable, "-m", "falsecl.cli", *args])


def _train_step(cmd: str, config: str, run_dir: Path, extra: Sequence[str], run: Runner) -> None:
    """Run a training sub-command unless done; resume it when a last checkpoint exists."""
    if (run_dir / "DONE").is_file():
        return
    args = [cmd, "--config", config, "--trainer.default_root_dir", str(run_dir), *extra]
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        args += ["--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")]
    code = run(args)
    if code != 0:
        raise RuntimeError(f"'falsecl {cmd}' failed with exit code {code} for {run_dir}; fix it and rerun the "
                           "benchmark: finished steps are kept and this one resumes")
    (run_dir / "DONE").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))


def run_benchmark(
    methods: list[Method],
    finetune_config: str = "configs/finetune/cpu_quick.yaml",
    label_fractions: list[float] | None = None,
    seeds: list[int] | None = None,
    output_dir: str = "runs/benchmark",
    pretrain_args: list[str] | None = None,
    finetune_args: list[str] | None = None,
    evaluate_args: list[str] | None = None,
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    """Run (or resume) the matrix and write ``results.json``, ``report.md``, ``report.html`` and ``miou.png``.

    Args:
        methods: Pretraining methods; one without ``pretrain_config`` is the random-initialisation baseline.
        finetune_config: ``falsecl finetune`` YAML shared by all cells.
        label_fractions: Labelled share of the training patches (default ``[0.01, 0.1, 1.0]``).
        seeds: Fine-tuning seeds (label subset and training); pretraining runs once per method.
        output_dir: Root of all runs of the benchmark.
        pretrain_args: Extra arguments for every pretraining (e.g. ``--trainer.max_epochs 1``).
        finetune_args: Extra arguments for every fine-tuning.
        evaluate_args: Extra arguments for every evaluation (e.g. ``--split test --tta true``).
        dry_run: Print the plan and exit.

    Returns:
        The results of the finished cells.
    """
    fractions = label_fractions if label_fractions is not None else [0.01, 0.1, 1.0]
    cells = plan_cells(methods, fractions, seeds if seeds is not None else [0])
    run: Runner = _subprocess_runner
    out = Path(output_dir)
    by_name = {m.name: m for m in methods}
    if dry_run:
        for cell in cells:
            print(f"{cell.slug}: pretrain={by_name[cell.method].pretrain_config or 'none (random init)'}")
        return []
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for i, cell in enumerate(cells, 1):
        method = by_name[cell.method]
        print(f"[{i}/{len(cells)}] {cell.slug}", flush=True)
        ft_extra = list(finetune_args or [])
        if method.pretrain_config is not None:
            pre_dir = out / method.name / "pretrain"
            _train_step("pretrain", method.pretrain_config, pre_dir, [*(pretrain_args or []), *method.pretrain_args],
                        run)
            ft_extra += ["--model.backbone_weights", str(pre_dir / "backbone.pt")]
        ft_dir = out / cell.slug
        ft_extra += ["--data.label_fraction", str(cell.label_fraction), "--data.seed", str(cell.seed),
                     "--seed_everything", str(cell.seed)]
        _train_step("finetune", finetune_config, ft_dir, ft_extra, run)
        metrics_path = ft_dir / "eval" / "metrics.json"
        if not metrics_path.is_file():
            # A run folder: evaluate picks its best checkpoint by validation mIoU.
            code = run(["evaluate", "--checkpoint", str(ft_dir), "--output_dir",
                        str(ft_dir / "eval"), *(evaluate_args or [])])
            if code != 0 or not metrics_path.is_file():
                raise RuntimeError(f"'falsecl evaluate' failed (exit code {code}) for {ft_dir}")
        metrics = json.loads(metrics_path.read_text())
        results.append(
            {
                "method": cell.method,
                "label_fraction": cell.label_fraction,
                "seed": cell.seed,
                "mIoU": metrics["mIoU"],
                "OA": metrics["OA"],
                "kappa": metrics["kappa"],
                "per_class": {name: v["IoU"] for name, v in metrics["per_class"].items()},
                "run_dir": str(ft_dir),
            }
        )
        tmp = out / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(out / "results.json")
        write_report(results, out)
    print(f"report: {out / 'report.md'}")
    return results
