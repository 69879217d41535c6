"""Deprecated home of the inference helpers; they live in :mod:`falsecl.inference` now.

``from falsecl.inference_cli import load_task`` (as older docs and scripts wrote it) keeps working with a
:class:`DeprecationWarning`. The commands themselves are in :mod:`falsecl.cli.inference`.
"""

from __future__ import annotations

import warnings

from falsecl.inference.batch import InputsFailed, expand_inputs
from falsecl.inference.checkpoint import load_task, make_predictor, resolve_checkpoint, resolve_device
from falsecl.inference.evaluation import evaluate_images

warnings.warn(
    "falsecl.inference_cli is deprecated: import load_task, make_predictor, resolve_checkpoint and "
    "resolve_device from falsecl.inference.checkpoint, evaluate_images from falsecl.inference.evaluation",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "InputsFailed",
    "evaluate_images",
    "expand_inputs",
    "load_task",
    "make_predictor",
    "resolve_checkpoint",
    "resolve_device",
]
