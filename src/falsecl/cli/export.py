r"""``falsecl export``: a fine-tuned model to ONNX (:func:`falsecl.export.export`), checked by ONNX Runtime.

Usage::

    falsecl export --checkpoint runs/ft [--output runs/ft/model.onnx] [--opset 18] [--height 512 --width 512] \
        [--dynamic true] [--tolerance 1e-4]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from falsecl.cli.common import run_function


def show_export(result: dict[str, Any]) -> None:
    """Print what was written, from which checkpoint, and how far ONNX Runtime is from PyTorch."""
    target = Path(result["output"])
    print(
        f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB, opset {result['opset']}) from {result['checkpoint']}"
    )
    if result["max_abs_diff"] is not None:
        print(
            f"ONNX Runtime check: max |ONNX - PyTorch| logits = {result['max_abs_diff']:.3g} "
            f"(tolerance {result['tolerance']:g})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``falsecl export`` (see :func:`falsecl.export.export`); returns the exit code."""
    from falsecl.export import export

    return run_function(export, argv, "falsecl export", show=show_export)
