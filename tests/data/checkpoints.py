"""Write a task as the Lightning checkpoint ``falsecl finetune`` leaves (state dict, hyper-parameters, version)."""

from __future__ import annotations

from pathlib import Path

import lightning
import torch
from lightning.pytorch import LightningModule


def write_checkpoint(task: LightningModule, path: Path) -> Path:
    """Save ``task`` to ``path`` (parent folders created) in the format :func:`load_task` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": task.state_dict(),
        "hyper_parameters": dict(task.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(payload, path)
    return path
