r"""``falsecl evaluate`` and ``falsecl predict``: sliding-window inference from a fine-tuning checkpoint.

Both load a :class:`~falsecl.tasks.segmentation.SegmentationTask` checkpoint, whose hyper-parameters hold the
band statistics, the classes (names, colours) and the training data, so raw images are normalised exactly as in
training and scored or mapped with the right classes, and both go through the one
:class:`~falsecl.inference.SlidingWindowPredictor`. The work is
:func:`falsecl.inference.evaluation.evaluate_checkpoint` and :func:`falsecl.inference.batch.predict_files`
(their arguments are the options); this module parses and prints.

Usage::

    falsecl evaluate --checkpoint runs/ft --split test --window 512 --overlap 0.25 --tta true
    falsecl predict --checkpoint runs/ft --input scene.tif --output scene_classes.tif \\
        --preview scene_classes.png --confidence scene_confidence.tif
    falsecl predict --checkpoint runs/ft --input tiles/ mosaic.vrt 'more/*.tif' --output_dir maps/ --preview true
    falsecl predict --checkpoint runs/ft --input scene.tif --output classes.tif --vector polygons.gpkg --min_area 25
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from falsecl.cli.common import USAGE, Failure, join_list_option, run_function
from falsecl.inference.batch import InputsFailed, predict_files
from falsecl.inference.evaluation import Evaluation, evaluate_checkpoint

#: Some inputs failed (the others were written): exit code 1; usage errors: 2.
PREDICT_FAILURES = (Failure((InputsFailed,), 1, prefix=""), *USAGE)


def show_evaluation(result: Evaluation) -> None:
    """Print the Markdown report and where the files went."""
    print(result.report)
    print(f"reports written to {result.output_dir}")


def show_written(src: Path, summary: dict[str, Any], seconds: float) -> None:
    """One line per written map: size, time, speed and the class map's path."""
    mpix = summary["height"] * summary["width"] / 1e6
    print(
        f"{src}: {summary['width']} x {summary['height']} px, {seconds:.1f} s, {mpix / seconds:.2f} MP/s "
        f"-> {summary['outputs']['classes']}"
        + (f", {summary['polygons']} polygons -> {summary['outputs']['vector']}" if "polygons" in summary else ""),
        flush=True,
    )


def show_failed(src: Path, err: Exception) -> None:
    """One line per input that failed (the others go on)."""
    print(f"FAILED {src}: {err}", file=sys.stderr, flush=True)


def show_skipped(path: Path, kind: str) -> None:
    """One line per earlier output of predict left out of a folder or glob."""
    print(f"skipped {path}: a falsecl {kind} output (name it explicitly to predict on it)", file=sys.stderr, flush=True)


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Run ``falsecl evaluate`` (see :func:`~falsecl.inference.evaluation.evaluate_checkpoint`)."""
    return run_function(evaluate_checkpoint, argv, "falsecl evaluate", show=show_evaluation)


def predict_main(argv: Sequence[str] | None = None) -> int:
    """Run ``falsecl predict`` (see :func:`~falsecl.inference.batch.predict_files`).

    Returns:
        0, 1 when some inputs failed, 2 on a usage error.
    """
    args = join_list_option(list(sys.argv[1:] if argv is None else argv), "--input")
    fixed = {"on_written": show_written, "on_failed": show_failed, "on_skipped": show_skipped}
    return run_function(predict_files, args, "falsecl predict", PREDICT_FAILURES, fixed=fixed)
