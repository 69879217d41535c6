"""The benchmark's matrix: methods, cells, their result files and the progress line."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from falsecl.metrics import json_ready


@dataclass
class Method:
    """One pretraining method of the matrix.

    Attributes:
        name: Label in the report (also the run folder name).
        pretrain_config: ``falsecl pretrain`` YAML; ``None`` means no pretraining (random initialisation).
        pretrain_args: Extra ``falsecl pretrain`` arguments for this method (e.g. ``--model.init_args.selection
            official``).
        finetune_args: Extra ``falsecl finetune`` arguments for this method only (e.g. the encoder learning-rate
            factor that suits a random initialisation).
        base: Name of the method this one modifies (``simclr_false`` -> ``simclr_ntxent``, ``random_init_bn`` ->
            ``random_init``); the report gives their paired difference.
        finetune: ``False``: linear-probe cells only, no fine-tuning cells (to fit a budget).
        bn_recalibration: Without ``pretrain_config``: the random initialisation with its BatchNorm statistics
            refitted on the training images (no labels), the stronger control of a pretrained backbone's
            dataset-fitted statistics (:func:`falsecl.benchmark.frozen.recalibrate_batchnorm`).
        priority: Run tier: every cell of tier 1 (all seeds) runs before any of tier 2, and so on, so that a run
            cut short holds the methods that answer the question first.
    """

    name: str
    pretrain_config: str | None = None
    pretrain_args: list[str] = field(default_factory=list)
    finetune_args: list[str] = field(default_factory=list)
    base: str | None = None
    finetune: bool = True
    bn_recalibration: bool = False
    priority: int = 1

    def info(self) -> dict[str, Any]:
        """What the report needs to pair methods (:func:`falsecl.benchmark.stats.comparisons`).

        A BatchNorm-recalibrated random initialisation is a control, not a pretrained method: it learns nothing.
        """
        return {"name": self.name, "pretrained": self.pretrain_config is not None, "base": self.base,
                "priority": self.priority}


def panel_methods(methods: Sequence[Method]) -> list[str]:
    """The report's prediction panel: the first control, the first pretrained method and the first that modifies one.

    In ``cpu_dubai.yaml``: random initialisation, SimCLR and SimCLR + FALSE.
    """
    controls = [m.name for m in methods if m.pretrain_config is None][:1]
    plain = [m.name for m in methods if m.pretrain_config is not None and m.base is None][:1]
    modified = [m.name for m in methods if m.pretrain_config is not None and m.base is not None][:1]
    return [*controls, *plain, *modified]


@dataclass(frozen=True)
class Cell:
    """One probe or fine-tuning + evaluation of the matrix."""

    method: str
    label_fraction: float
    finetune_seed: int
    pretrain_seed: int = 0
    protocol: str = "finetune"
    repro: bool = False

    @property
    def slug(self) -> str:
        """Folder of the cell, relative to the benchmark's output folder (``repro/...`` for a rerun)."""
        return (("repro/" if self.repro else "") + f"{self.method}/{self.protocol}/labels{100 * self.label_fraction:g}"
                f"pct_pre{self.pretrain_seed}_ft{self.finetune_seed}")


def plan_cells(
    methods: Sequence[Method],
    label_fractions: Sequence[float],
    seeds: Sequence[int],
    pretrain_seeds: Sequence[int] = (0,),
    probe_fractions: Sequence[float] = (),
) -> list[Cell]:
    """All cells in run order: by priority tier; in a tier the probes, then the fine-tunings, seed-major.

    Tier 1's methods at every seed come before tier 2's; within a tier the cheap probes of every backbone come
    first, so a run cut short holds the whole probe matrix, and seed-major order means a partial run already
    holds every method at the first seeds, so paired differences exist early.

    Raises:
        ValueError: On an empty matrix, duplicate method names, an unknown ``base`` or a fraction outside (0, 1].
    """
    if not methods or not (label_fractions or probe_fractions) or not seeds or not pretrain_seeds:
        raise ValueError("the benchmark needs at least one method, one label fraction and one seed")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    for fraction in [*label_fractions, *probe_fractions]:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"label fractions must be in (0, 1] (1 % is 0.01), got {fraction}")
    cells: list[Cell] = []
    for tier in sorted({m.priority for m in methods}):
        mine = [m for m in methods if m.priority == tier]
        cells += [Cell(m.name, f, s, p, "probe") for p in pretrain_seeds for m in mine
                  for f in probe_fractions for s in seeds]
        cells += [Cell(m.name, f, s, p, "finetune") for p in pretrain_seeds for m in mine if m.finetune
                  for f in label_fractions for s in seeds]
    return cells


def save_cell_result(cell_dir: Path, cell: Cell, metrics: Mapping[str, Any], wall_s: float,
                     pretrain_wall_s: float | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``<cell_dir>/result.json``: the cell's seeds, scores (``null`` where undefined) and wall time."""
    result = {
        "method": cell.method,
        "protocol": cell.protocol,
        "label_fraction": cell.label_fraction,
        "pretrain_seed": cell.pretrain_seed,
        "finetune_seed": cell.finetune_seed,
        **({"repro": True} if cell.repro else {}),
        "mIoU": metrics.get("mIoU"),
        "OA": metrics.get("OA"),
        "kappa": metrics.get("kappa"),
        "per_class": {name: v.get("IoU") for name, v in metrics.get("per_class", {}).items()},
        "run_dir": str(cell_dir),
        "wall_s": wall_s,
        "pretrain_wall_s": pretrain_wall_s,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **dict(extra or {}),
    }
    cell_dir.mkdir(parents=True, exist_ok=True)
    tmp = cell_dir / "result.json.tmp"
    tmp.write_text(json.dumps(json_ready(result), indent=2) + "\n")
    tmp.replace(cell_dir / "result.json")
    return result


def load_cell_result(cell_dir: Path) -> dict[str, Any] | None:
    """The cell's saved result, or ``None`` when it has not finished."""
    path = cell_dir / "result.json"
    if not path.is_file():
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def eta_seconds(finished: Sequence[Mapping[str, Any]], remaining: Mapping[str, int],
                pretrainings_left: int) -> tuple[float, bool] | None:
    """Seconds left, from the measured cell times.

    The remaining cells times their protocol's mean ``wall_s``, plus the pretrainings left times the mean
    ``pretrain_wall_s``.

    Args:
        finished: Finished cell results (this run's and earlier runs' alike).
        remaining: Cells left per protocol.
        pretrainings_left: Pretraining runs not done yet.

    Returns:
        ``(seconds, complete)``; ``complete`` is False when a part had no measured time yet (the seconds are then a
        lower bound); ``None`` before any cell is timed.
    """
    walls: dict[str, list[float]] = {}
    pre: dict[tuple[str, Any], float] = {}
    for r in finished:
        if isinstance(r.get("wall_s"), int | float):
            walls.setdefault(str(r.get("protocol", "finetune")), []).append(float(r["wall_s"]))
        if isinstance(r.get("pretrain_wall_s"), int | float):
            pre[(str(r["method"]), r.get("pretrain_seed", 0))] = float(r["pretrain_wall_s"])
    if not walls:
        return None
    seconds, complete = 0.0, True
    for protocol, n in remaining.items():
        if n <= 0:
            continue
        if protocol in walls:
            seconds += n * sum(walls[protocol]) / len(walls[protocol])
        else:
            complete = False
    if pretrainings_left > 0:
        if pre:
            seconds += pretrainings_left * sum(pre.values()) / len(pre)
        else:
            complete = False
    return seconds, complete


def progress_line(done: int, total: int, elapsed: float, eta: tuple[float, bool] | None) -> str:
    """``[done/total cells, elapsed, ETA]`` (``ETA >x`` when :func:`eta_seconds` could only give a lower bound).

    Args:
        done: Cells finished (including those found finished on disk).
        total: Cells planned.
        elapsed: Seconds since the runner started.
        eta: :func:`eta_seconds`'s estimate.
    """
    text = "ETA n/a" if eta is None else f"ETA {'' if eta[1] else '>'}{_duration(eta[0])}"
    return f"[{done}/{total} cells, {_duration(elapsed)} elapsed, {text}]"
