"""The reports of an evaluation: ``metrics.json``, ``metrics.md``, ``confusion_matrix.png`` and the model card.

``metrics.json`` holds every number, the settings, which checkpoint was scored and on which split it was
chosen; ``metrics.md`` is the readable table; the confusion matrix is row-normalised. When a whole split of a
run's checkpoint was scored, the metrics also go into the run's ``model.json`` (``<split>_metrics``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from falsecl.inference.checkpoint import run_folder
from falsecl.metrics import json_ready, plot_confusion_matrix
from falsecl.model_card import update_model_card


def report_header(
    settings: Mapping[str, Any],
    scored: Mapping[str, Any],
    checkpoint_name: str,
    optimistic: bool,
    held_out: str | None = None,
) -> str:
    """The Markdown header of ``metrics.md``: data, checkpoint and settings, and a warning when optimistic.

    Args:
        settings: The evaluation settings (``dataset``, ``split``, ``images``, ``window`` ...).
        scored: :func:`falsecl.inference.checkpoint.describe_checkpoint` output.
        checkpoint_name: File name of the scored checkpoint.
        optimistic: The evaluated split is the one that chose the checkpoint.
        held_out: :func:`falsecl.model_card.held_out_note` of the checkpoint (held-out data was used), if any.

    Returns:
        Markdown text ending with a blank line.
    """
    s = settings
    header = (
        f"# Evaluation: {s['dataset']} / {s['split']} ({s['images']} whole images)\n\n"
        f"checkpoint: `{checkpoint_name}` ({scored['kind']}: {scored['chosen']})\n\n"
        f"settings: window {s['window']}, overlap {s['overlap']}, {s['blend']} blend, tta {s['tta']}, "
        f"{s['precision']}, output stride {s['output_stride']}\n\n"
    )
    if optimistic:
        header += "**Note:** this split chose the checkpoint, so these numbers are optimistic.\n\n"
    if held_out:
        header += f"**Note:** {held_out}.\n\n"
    return header


def write_reports(out: Path, metrics: Mapping[str, Any], confusion: Tensor, report: str) -> None:
    """Write ``metrics.json``, ``metrics.md`` (``report``) and ``confusion_matrix.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(json_ready(metrics), indent=2, allow_nan=False) + "\n")
    (out / "metrics.md").write_text(report)
    plot_confusion_matrix(confusion, metrics["class_names"], out / "confusion_matrix.png")


def update_card_metrics(checkpoint: Path, split: str, metrics: Mapping[str, Any]) -> bool:
    """Add the metrics to the run's ``model.json`` as ``<split>_metrics``.

    Returns:
        Whether a card was updated (``False`` for a checkpoint outside a run folder).
    """
    run = run_folder(checkpoint)
    if run is None:
        return False
    per_class = {name: m["IoU"] for name, m in metrics["per_class"].items()}
    fields = {k: metrics[k] for k in ("mIoU", "mF1", "OA", "kappa", "pixels")}
    fields |= {"IoU": per_class, "settings": metrics["settings"], "checkpoint": metrics["checkpoint"]}
    update_model_card(run, {f"{split}_metrics": json_ready(fields)})
    return True
