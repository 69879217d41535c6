"""DeepLabv3+ for any number of bands, with its ResNet encoder taken from a pretraining run.

The FALSE paper (Zhang et al., IEEE GRSL 2022) evaluates pretrained ResNet encoders by fine-tuning DeepLabv3+
(Chen et al., ECCV 2018) with output stride 8. The model is segmentation-models-pytorch's ``DeepLabV3Plus``,
always built with ``encoder_weights=None`` (nothing is downloaded); the encoder weights come from a falsecl
backbone file (``runs/<name>/backbone.pt``) or any ResNet state dict that
:func:`falsecl.models.load_backbone_file` understands. torchvision ResNet parameter names equal smp's ResNet
encoder names, and dilation (output stride 8/16) does not change parameter shapes, so the weights load as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import segmentation_models_pytorch as smp
from torch import nn

from falsecl.models.backbones import BACKBONE_DIMS, load_backbone_file


def build_deeplabv3plus(
    arch: str = "resnet18",
    in_channels: int = 3,
    num_classes: int = 6,
    output_stride: int = 8,
    backbone_weights: str | Path | None = None,
) -> nn.Module:
    """Build DeepLabv3+ and optionally load pretrained encoder weights.

    Args:
        arch: Encoder, one of ``resnet18``, ``resnet34``, ``resnet50``.
        in_channels: Input bands ``C``; the first convolution is built for it.
        num_classes: Output classes ``K``.
        output_stride: 8 (the paper's setting) or 16.
        backbone_weights: A backbone file / ResNet state dict, or ``None`` for random initialisation.

    Returns:
        A module mapping ``(B, C, H, W)`` (``H, W`` multiples of 16) to logits ``(B, K, H, W)``.

    Raises:
        ValueError: Unknown architecture, bad output stride, or a weight file whose architecture, band count
            or parameter names do not match the model.
        FileNotFoundError: ``backbone_weights`` does not exist.
    """
    if arch not in BACKBONE_DIMS:
        raise ValueError(f"unknown encoder {arch!r}; choose one of {sorted(BACKBONE_DIMS)}")
    if output_stride not in (8, 16):
        raise ValueError(f"DeepLabv3+ output_stride must be 8 or 16, got {output_stride}")
    if in_channels < 1 or num_classes < 2:
        raise ValueError(f"need in_channels >= 1 and num_classes >= 2, got {in_channels} and {num_classes}")
    model = smp.DeepLabV3Plus(
        encoder_name=arch,
        encoder_weights=None,
        encoder_output_stride=output_stride,
        in_channels=in_channels,
        classes=num_classes,
    )
    if backbone_weights is not None:
        load_encoder_weights(model.encoder, backbone_weights, arch, in_channels)
    return cast(nn.Module, model)


def load_encoder_weights(encoder: nn.Module, path: str | Path, arch: str, in_channels: int) -> None:
    """Copy a backbone file's weights into an smp ResNet encoder, refusing any mismatch.

    Args:
        encoder: ``model.encoder`` of an smp model built for ``arch`` and ``in_channels``.
        path: Backbone file or ResNet state dict.
        arch: The encoder's architecture.
        in_channels: The encoder's number of input bands.

    Raises:
        ValueError: Architecture or band count differ, or keys are missing/unexpected.
    """
    payload = load_backbone_file(path)
    if payload["arch"] != arch:
        raise ValueError(
            f"{path} holds a {payload['arch']} backbone but the model uses {arch}; set model.arch to "
            f"{payload['arch']!r} or give a {arch} backbone"
        )
    if payload["in_channels"] != in_channels:
        raise ValueError(
            f"{path} was pretrained on {payload['in_channels']} band(s) but the data has {in_channels}; "
            "fine-tune on the same bands as pretraining"
        )
    own = encoder.state_dict()
    state = payload["state_dict"]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit the {arch} encoder: missing keys {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)}), unexpected keys {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)})"
        )
    bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        raise ValueError(
            f"{path}: shape mismatch for {bad[:5]} (file {tuple(state[bad[0]].shape)} vs model "
            f"{tuple(own[bad[0]].shape)})"
        )
    encoder.load_state_dict(state, strict=True)
