"""ResNet backbones for any number of input bands, and the backbone weight file format.

The backbone file written by pretraining is a plain ``torch.save`` of a dict::

    {"format": "falsecl-backbone", "version": 1, "arch": "resnet18", "in_channels": 4,
     "state_dict": {...torchvision ResNet keys: conv1.weight, bn1.*, layer1..layer4.* ...}}

The keys are torchvision's ResNet keys without ``fc.*``. segmentation-models-pytorch's ResNet encoders use the
same names, so the state dict loads into a DeepLabv3+ encoder with no renaming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tv_models

#: Feature dimension of each supported architecture (output of global average pooling).
BACKBONE_DIMS: dict[str, int] = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}

_FORMAT = "falsecl-backbone"


def build_backbone(arch: str = "resnet18", in_channels: int = 3) -> nn.Module:
    """Build a randomly initialised torchvision ResNet whose ``fc`` is the identity.

    Args:
        arch: One of ``resnet18``, ``resnet34``, ``resnet50``.
        in_channels: Number of input bands; the first convolution is rebuilt for it.

    Returns:
        A module mapping ``(B, in_channels, H, W)`` to ``(B, BACKBONE_DIMS[arch])`` features.

    Raises:
        ValueError: If ``arch`` is unknown or ``in_channels < 1``.
    """
    if arch not in BACKBONE_DIMS:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {sorted(BACKBONE_DIMS)}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    model: nn.Module = getattr(tv_models, arch)(weights=None)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.fc = nn.Identity()
    return model


def save_backbone_file(path: str | Path, backbone: nn.Module, arch: str, in_channels: int) -> Path:
    """Write the backbone weights atomically (temporary file, then rename).

    Args:
        path: Destination file, conventionally ``runs/<name>/backbone.pt``.
        backbone: A module built by :func:`build_backbone`.
        arch: Its architecture name.
        in_channels: Its number of input bands.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    payload = {"format": _FORMAT, "version": 1, "arch": arch, "in_channels": in_channels, "state_dict": state}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_backbone_file(path: str | Path) -> dict[str, Any]:
    """Read a backbone file written by :func:`save_backbone_file`, or a bare ResNet state dict.

    A bare state dict (e.g. torchvision ResNet weights saved by another tool) is accepted; ``arch`` and
    ``in_channels`` are then inferred from its tensors.

    Args:
        path: The file to read.

    Returns:
        Dict with ``arch`` (str), ``in_channels`` (int) and ``state_dict`` (torchvision ResNet keys, no ``fc``).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not a ResNet backbone.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path} not found; pass the backbone.pt of a pretraining run")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and payload.get("format") == _FORMAT:
        return {
            "arch": str(payload["arch"]),
            "in_channels": int(payload["in_channels"]),
            "state_dict": dict(payload["state_dict"]),
        }
    if not isinstance(payload, dict):
        raise ValueError(f"{path} does not hold a state dict")
    state = payload.get("state_dict", payload)
    # A Lightning checkpoint holds more than the backbone (projection head, momentum copy, decoder): keep the
    # sub-dict under the backbone's prefix, preferring "...backbone." then "...encoder." (a fine-tuned model).
    prefixes = [k.removesuffix("conv1.weight") for k in state if k.endswith("conv1.weight")]
    if not prefixes:
        raise ValueError(f"{path} is not a ResNet state dict (no conv1.weight); keys start {list(state)[:3]}")
    prefix = min(prefixes, key=lambda p: (p != "", not p.endswith("backbone."), not p.endswith("encoder."), len(p)))
    state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    in_channels = int(state["conv1.weight"].shape[1])
    if "layer1.0.conv3.weight" in state:
        arch = "resnet50"
    elif "layer3.5.conv1.weight" in state:
        arch = "resnet34"
    else:
        arch = "resnet18"
    return {"arch": arch, "in_channels": in_channels, "state_dict": state}
