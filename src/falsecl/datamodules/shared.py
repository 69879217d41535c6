"""What the pretraining and the segmentation datamodules share: run-folder lookup and the loader policy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, RandomSampler

log = logging.getLogger(__name__)


def run_folder_of(dm: LightningDataModule) -> Path | None:
    """The attached trainer's ``default_root_dir`` (the run folder), ``None`` without a trainer."""
    trainer = getattr(dm, "trainer", None)
    return Path(trainer.default_root_dir) if trainer is not None else None


def training(dm: LightningDataModule) -> bool:
    """Whether the attached trainer is fitting (batches are then augmented)."""
    trainer = getattr(dm, "trainer", None)
    return bool(trainer is not None and trainer.training)


def loader(dataset: Dataset[Any], batch_size: int, num_workers: int, shuffle: bool) -> DataLoader[Any]:
    """A DataLoader whose training batches are always full (BatchNorm needs more than one sample)."""
    size = len(dataset)  # type: ignore[arg-type]
    sampler: RandomSampler | None = None
    if shuffle and size < batch_size:
        # Fewer patches than one batch (a tiny label fraction): resample them so every batch is full, since
        # batch norm cannot train on a batch of one and a ragged batch would weight patches unevenly.
        log.info("%d training patch(es) for batches of %d: sampling with replacement", size, batch_size)
        sampler = RandomSampler(dataset, replacement=True, num_samples=batch_size)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        # A last batch of one sample breaks BatchNorm; drop it when there is more than one batch.
        drop_last=shuffle and size > batch_size,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
    )
