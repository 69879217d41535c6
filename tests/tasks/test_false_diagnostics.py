"""SimCLR logs FALSE's false-negative diagnostics during training when the batch carries majority classes."""

import csv

import torch
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from falsecl.tasks.simclr import SimCLR

DIAG_KEYS = {
    "train/diag_per_anchor_precision",
    "train/diag_per_anchor_rows",
    "train/diag_official_precision",
    "train/diag_official_rows",
    "train/diag_chance_precision",
    "train/diag_hardest_precision",
}


class Views(Dataset):
    def __init__(self, with_majority):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(8, 3, 32, 32, generator=g)
        self.with_majority = with_majority

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        item = {"views": [x + 0.05 * torch.randn_like(x), x + 0.05 * torch.randn_like(x)], "index": torch.tensor(i)}
        if self.with_majority:
            item["majority"] = torch.tensor(i % 2 if i < 6 else -1)
        return item


class Data(LightningDataModule):
    def __init__(self, with_majority):
        super().__init__()
        self.in_channels = 3
        self.dataset = Views(with_majority)

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=4, drop_last=True)


def _logged_rows(tmp_path, with_majority, max_steps=2, **kw):
    model = SimCLR(arch="resnet18", in_channels=3, hidden_dim=16, output_dim=8, threshold=-1.0, **kw)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_steps=max_steps, logger=CSVLogger(tmp_path, name="csv"),
        log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=Data(with_majority))
    (metrics,) = tmp_path.glob("csv/*/metrics.csv")
    with metrics.open() as f:
        return list(csv.DictReader(f))


def _logged_keys(tmp_path, with_majority, **kw):
    return {k for row in _logged_rows(tmp_path, with_majority, **kw) for k, v in row.items() if v not in ("", None)}


def test_training_logs_diagnostics_with_majority(tmp_path):
    keys = _logged_keys(tmp_path, True, diagnostics_every=1)
    assert DIAG_KEYS <= keys
    assert "train/loss_step" in keys or "train/loss" in keys


def test_no_majority_logs_nothing_and_trains(tmp_path):
    keys = _logged_keys(tmp_path, False, diagnostics_every=1)
    assert not any(k.startswith("train/diag_") for k in keys)


def test_diagnostics_every_zero_turns_them_off(tmp_path):
    keys = _logged_keys(tmp_path, True, diagnostics_every=0)
    assert not any(k.startswith("train/diag_") for k in keys)


def test_diagnostics_appear_only_at_the_steps_that_computed_them(tmp_path):
    # Lightning repeats a conditionally logged on_step value at later steps; a diagnostic measured at step 0 must
    # not reappear at steps 1-3 as if measured there.
    rows = _logged_rows(tmp_path, True, max_steps=5, diagnostics_every=3)
    steps = sorted({int(r["step"]) for r in rows if r.get("train/diag_chance_precision")})
    assert steps == [0, 3]
    assert {int(r["step"]) for r in rows if r.get("train/loss_step")} == {0, 1, 2, 3, 4}
