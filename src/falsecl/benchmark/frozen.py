"""Frozen backbones for the linear probe: a ``backbone.pt``, a seeded random one, or one with refitted BatchNorm.

The random initialisation with its BatchNorm statistics refitted on the training images (no labels) is the
stronger control: a pretrained backbone carries statistics fitted to its pretraining images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from falsecl.models.backbones import build_backbone, load_backbone_file, load_into, save_backbone_file


def load_frozen_backbone(backbone: str | None, arch: str, in_channels: int, seed: int) -> nn.Module:
    """The backbone of a ``backbone.pt`` file, or a seeded random initialisation when ``backbone`` is ``None``.

    Raises:
        ValueError: The file holds another architecture or band count than ``arch`` / ``in_channels``, or any
            parameter does not fit (:func:`falsecl.models.backbones.load_into` refuses silent mismatches).
    """
    torch.manual_seed(seed)
    model = build_backbone(arch, in_channels)
    if backbone is not None:
        payload = load_backbone_file(backbone)
        if payload["arch"] != arch or payload["in_channels"] != in_channels:
            raise ValueError(
                f"{backbone} holds a {payload['in_channels']}-band {payload['arch']} backbone, but the probe was "
                f"asked for a {in_channels}-band {arch}; pass the matching arch (or the dataset's bands)"
            )
        load_into(model, backbone)
    return model.eval()


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, dataset: Any, mean: Sequence[float], std: Sequence[float], batch_size: int = 64
) -> nn.Module:
    """Refit every BatchNorm's running statistics on ``dataset``'s images (no labels), then return to eval mode.

    The stronger random-initialisation control: a pretrained backbone carries statistics fitted to its
    pretraining images, a random one the defaults (0, 1). Forward passes in train mode with ``momentum=None``
    make each running mean and variance the cumulative average over all batches (as torch's
    ``torch.optim.swa_utils.update_bn`` does); the weights are untouched.

    Args:
        model: The backbone; modified in place.
        dataset: Map-style dataset of ``{"image": (C, H, W)}`` samples (raw values).
        mean: Per-band normalisation mean.
        std: Per-band normalisation standard deviation.
        batch_size: Patches per forward pass.

    Returns:
        ``model`` in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    m_ = torch.tensor(list(mean)).view(1, -1, 1, 1)
    s_ = torch.tensor(list(std)).view(1, -1, 1, 1)
    model.train()
    for start in range(0, len(dataset), batch_size):
        x = torch.stack([dataset[i]["image"].float() for i in range(start, min(start + batch_size, len(dataset)))])
        model((x - m_) / s_)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return model.eval()


def recalibrated_random_backbone(path: str | Path, data: Any, seed: int, arch: str = "resnet18") -> Path:
    """Write the seed's random initialisation with BatchNorm statistics refitted on the training patches.

    The weights are exactly those of the random-init control of the same seed; only the running statistics
    differ. An existing file is kept (the step is deterministic).

    Args:
        path: Destination ``backbone.pt``.
        data: A set-up segmentation datamodule (``train_full``, ``mean``, ``std``, ``in_channels``).
        seed: Seed of the random initialisation.
        arch: Backbone architecture.

    Returns:
        The path.
    """
    path = Path(path)
    if not path.is_file():
        model = load_frozen_backbone(None, arch, data.in_channels, seed)
        recalibrate_batchnorm(model, data.train_full, data.mean, data.std)
        save_backbone_file(path, model, arch, data.in_channels)
    return path


def backbone_fingerprint(backbone: str | None, arch: str, seed: int) -> str:
    """Content hash of a backbone file (or ``random-<arch>-seed<seed>``): names the feature cache."""
    if backbone is None:
        return f"random-{arch}-seed{seed}"
    digest = hashlib.sha256(Path(backbone).read_bytes()).hexdigest()[:16]
    return f"file-{digest}"
