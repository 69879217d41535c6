"""Pretraining length and fire rate read back from a run folder, for an uninterrupted and a resumed run."""

from __future__ import annotations

import pytest
import torch

from falsecl.benchmark.evidence import pretraining_lengths
from falsecl.benchmark.provenance import pretrain_record
from falsecl.benchmark.steps import train_step


def _checkpoint(run, steps, epochs_done, batches_this_epoch):
    (run / "checkpoints").mkdir(parents=True)
    loops = {"fit_loop": {"epoch_progress": {"current": {"completed": epochs_done}},
                          "epoch_loop.batch_progress": {"current": {"completed": batches_this_epoch}}}}
    torch.save({"global_step": steps, "loops": loops}, run / "checkpoints" / "last.ckpt")


def test_epochs_of_an_uninterrupted_run(tmp_path):
    _checkpoint(tmp_path, 500, 7, 24)  # 68 steps an epoch: 7 epochs + 24 steps
    assert pretrain_record(tmp_path)["pretrain_epochs"] == pytest.approx(500 / 68, abs=1e-3)


def test_epochs_of_a_resumed_run(tmp_path):
    # Killed after epoch 4 and resumed: Lightning's counter of the last epoch's batches comes back one short, so
    # the length of an epoch read from it was 68.14 steps and the run was reported as 7.338 epochs.
    _checkpoint(tmp_path, 500, 7, 23)
    record = pretrain_record(tmp_path)
    assert record["pretrain_steps"] == 500 and record["pretrain_epochs"] == pytest.approx(500 / 68, abs=1e-3)


def test_fire_rate_is_the_mean_over_the_second_half(tmp_path):
    (tmp_path / "csv").mkdir()
    rows = ["step,train/false/fire_rate,train/loss"] + [f"{s},{0.2 if s < 50 else 0.6},1.0" for s in range(0, 100, 10)]
    (tmp_path / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    assert pretrain_record(tmp_path)["fire_rate"] == pytest.approx(0.6)


def test_a_resumed_pretraining_is_recorded_and_reported(tmp_path):
    # An interrupted pretraining resumes from its last checkpoint: a valid run, but not reproducible from its seed
    # alone (the random streams restart), so the cell says so and the report names it.
    run = tmp_path / "simclr" / "pretrain_seed0"
    _checkpoint(run, 272, 4, 0)
    calls = []
    assert train_step("pretrain", "x.yaml", run, [], lambda args: calls.append(args) or 0) is not None
    assert calls[0][-2:] == ["--ckpt_path", str(run / "checkpoints" / "last.ckpt")]
    assert pretrain_record(run)["pretrain_resumed_at"] == [272]
    fresh = tmp_path / "simclr" / "pretrain_seed1"
    assert train_step("pretrain", "x.yaml", fresh, [], lambda args: 0) is not None
    assert pretrain_record(fresh)["pretrain_resumed_at"] == []
    cells = [{"method": "simclr", "pretrain_seed": p, "pretrain_steps": 500, "pretrain_epochs": 7.353,
              "pretrain_resumed_at": r} for p, r in ((0, [272]), (1, []), (2, None))]
    assert pretraining_lengths(cells)["simclr"] == "500 steps, 7.353 epochs; seed 0 resumed at step 272"
