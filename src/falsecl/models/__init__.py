"""Backbones and heads."""

from falsecl.models.backbones import (
    BACKBONE_DIMS,
    build_backbone,
    load_backbone_file,
    load_into,
    save_backbone_file,
)

__all__ = ["BACKBONE_DIMS", "build_backbone", "load_backbone_file", "load_into", "save_backbone_file"]
