"""ResNet backbones for any number of input bands, and the backbone weight file format.

The backbone file written by pretraining (``runs/<name>/backbone.pt``) is a bare ``torch.save`` of a torchvision
ResNet state dict without ``fc.*`` (``conv1.weight``, ``bn1.*``, ``layer1`` ... ``layer4``), so other tools load it
with no falsecl code; the architecture and band count follow from its tensors. torchvision's, timm's and
segmentation-models-pytorch's ResNets all use these parameter names::

    m = torchvision.models.resnet18(weights=None)                  # 4 bands: first replace m.conv1
    m.load_state_dict(torch.load("backbone.pt"), strict=False)     # missing: fc.weight, fc.bias
    m = timm.create_model("resnet18", pretrained=False, in_chans=4)
    m.load_state_dict(torch.load("backbone.pt"), strict=False)     # missing: fc.weight, fc.bias
    smp.DeepLabV3Plus("resnet18", encoder_weights=None, in_channels=4).encoder.load_state_dict(torch.load(...))

:func:`load_into` does the same for any of them (and for older files in falsecl's first, wrapped format) and
refuses silent mismatches.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tv_models

#: Feature dimension of each supported architecture (output of global average pooling).
BACKBONE_DIMS: dict[str, int] = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}

#: Marker of the first file format (a dict wrapping the state dict), still read.
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
    """Write the backbone weights atomically (temporary file, then rename) as a bare state dict without ``fc``.

    Args:
        path: Destination file, conventionally ``runs/<name>/backbone.pt``.
        backbone: A module built by :func:`build_backbone`.
        arch: Its architecture name.
        in_channels: Its number of input bands.

    Returns:
        The path written.

    Raises:
        ValueError: If ``backbone`` is not an ``arch`` ResNet with ``in_channels`` bands.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    if "conv1.weight" not in state or state["conv1.weight"].shape[1] != in_channels:
        raise ValueError(f"the backbone to save is not a {in_channels}-band ResNet (see build_backbone)")
    inferred = _infer_arch(state)
    if inferred != arch:
        raise ValueError(f"the backbone to save has {inferred}'s layers, not {arch}'s")
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)  # a bare state dict: loadable by torchvision, timm and smp as is
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
    return {"arch": _infer_arch(state), "in_channels": int(state["conv1.weight"].shape[1]), "state_dict": state}


def _infer_arch(state: Mapping[str, Any]) -> str:
    """``resnet18``/``resnet34``/``resnet50`` from the parameter names of a ResNet state dict."""
    if "layer1.0.conv3.weight" in state:
        return "resnet50"
    if "layer3.5.conv1.weight" in state:
        return "resnet34"
    return "resnet18"


def load_into(model: nn.Module, path: str | Path) -> list[str]:
    """Load a backbone file into a torchvision, timm or segmentation-models-pytorch ResNet.

    ``model`` may be a torchvision ``resnet18/34/50``, a timm ``resnet18/34/50``, an smp encoder or a whole smp
    model (its ``encoder`` receives the weights). Its first convolution must already have the file's band count
    (torchvision: replace ``conv1``; timm: ``in_chans=N``; smp: ``in_channels=N``).

    Args:
        model: The model to fill; modified in place.
        path: A ``backbone.pt``, a pretraining/fine-tuning checkpoint or a ResNet state dict.

    Returns:
        The model's keys the file did not provide: only the classifier (``fc.weight``, ``fc.bias``), if any.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the band count, the architecture or any non-classifier parameter does not match.
    """
    payload = load_backbone_file(path)
    encoder = getattr(model, "encoder", None)
    # a whole smp model: its encoder receives the weights
    target = encoder if not hasattr(model, "conv1") and isinstance(encoder, nn.Module) else model
    conv1 = getattr(target, "conv1", None)
    if not isinstance(conv1, nn.Conv2d):
        raise ValueError(f"{type(model).__name__} is not a ResNet (no conv1); pass a torchvision/timm/smp ResNet")
    if conv1.in_channels != payload["in_channels"]:
        raise ValueError(
            f"{path} holds a {payload['in_channels']}-band backbone but the model's first convolution takes "
            f"{conv1.in_channels}; build the model for {payload['in_channels']} bands (torchvision: replace conv1, "
            f"timm: in_chans={payload['in_channels']}, smp: in_channels={payload['in_channels']})"
        )
    own, state = target.state_dict(), payload["state_dict"]
    bad = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    missing = sorted(k for k in set(own) - set(state) if not k.startswith("fc."))
    unexpected = sorted(set(state) - set(own))
    if bad or missing or unexpected:  # checked before loading, so a refused model is left untouched
        raise ValueError(
            f"{path} ({payload['arch']}) does not fit {type(model).__name__}: shape mismatch {bad[:3]}, missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}; build the model as {payload['arch']}"
        )
    target.load_state_dict(state, strict=False)  # smp encoders override it and return None
    return sorted(set(own) - set(state))
