"""falsecl: false-negative-aware self-supervised contrastive learning for remote sensing."""

__version__ = "0.1.0"
