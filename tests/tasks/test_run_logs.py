"""A resumed run keeps its CSV log: Lightning's writer deletes ``metrics.csv`` when the folder exists."""

from __future__ import annotations

import csv
from pathlib import Path

from falsecl.tasks.run_guards import run_loggers


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _log(root: Path, steps: range, key: str) -> None:
    csv_logger = run_loggers(root)[1]
    for step in steps:
        csv_logger.log_metrics({key: float(step)}, step=step)
    csv_logger.save()


def test_resumed_run_keeps_the_rows_before_its_first_step_and_drops_the_repeated_ones(tmp_path):
    _log(tmp_path, range(0, 6), "train/loss")  # killed at step 5; its checkpoint is at step 3
    _log(tmp_path, range(3, 8), "train/lr")  # the resumed run logs steps 3-7 again, with a new key
    rows = _rows(tmp_path / "csv" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(8))  # no step twice, none lost
    assert [r["train/loss"] for r in rows[:3]] == ["0.0", "1.0", "2.0"]
    assert all(r["train/loss"] == "" for r in rows[3:])  # the repeated stretch is the resumed run's
    assert [r["train/lr"] for r in rows[3:]] == ["3.0", "4.0", "5.0", "6.0", "7.0"]


def test_a_new_run_in_the_same_folder_starts_a_new_log(tmp_path):
    _log(tmp_path, range(0, 4), "train/loss")
    _log(tmp_path, range(0, 2), "train/loss")
    assert [int(r["step"]) for r in _rows(tmp_path / "csv" / "metrics.csv")] == [0, 1]
