"""Segmentation metrics derived from one confusion matrix.

Every number reported by fine-tuning validation and by ``falsecl evaluate`` comes from a single
``(K, K)`` confusion matrix (rows = ground truth, columns = prediction) accumulated with torchmetrics'
:class:`~torchmetrics.classification.MulticlassConfusionMatrix`, whose ``ignore_index`` drops unlabelled
pixels before counting. Deriving everything from the matrix keeps the metrics mutually consistent and makes
them exact over whole images regardless of how the pixels were batched.

Conventions (as in the FALSE paper, Zhang et al., IEEE GRSL 2022, and mmsegmentation):

* **mIoU is the macro mean over the real classes** of ``TP / (TP + FP + FN)``. It is *not* the "micro" IoU
  that pools all classes' counts (torchgeo's ``JaccardIndex(average="micro")`` trap), which for
  single-label segmentation equals ``OA / (2 - OA)`` and hides poor minority classes.
* A class absent from both the ground truth and the prediction has ``TP + FP + FN = 0``: its IoU and F1 are
  undefined, reported as ``NaN`` and excluded from the means (``nanmean``). A class present in only one of
  the two has IoU 0 and counts in the mean.
* Cohen's Kappa ``(p_o - p_e) / (1 - p_e)`` with ``p_o`` the overall accuracy and ``p_e`` the agreement
  expected from the row and column marginals; ``NaN`` when ``p_e = 1`` (a single class everywhere) or no
  pixel is labelled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

IGNORE_INDEX = 255


def confusion_matrix_metric(num_classes: int, ignore_index: int = IGNORE_INDEX) -> MulticlassConfusionMatrix:
    """Build the confusion-matrix accumulator used everywhere in falsecl.

    Call ``update(preds, target)`` with class-index tensors of the same shape (e.g. ``(B, H, W)``), or
    with logits ``(B, K, H, W)`` as ``preds``; pixels whose target equals ``ignore_index`` are skipped.
    ``compute()`` returns the ``(K, K)`` int64 matrix, rows = ground truth, columns = prediction.

    Args:
        num_classes: Number of real classes ``K``.
        ignore_index: Target value to skip (255 for unlabelled pixels).

    Returns:
        A torchmetrics metric (an ``nn.Module``: move it to the model's device; it syncs across processes).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    # validate_args=False: the full-tensor range checks cost as much as the counting itself on large images.
    return MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """Elementwise ``num / den`` with ``NaN`` where ``den == 0``."""
    out = torch.full_like(num, float("nan"), dtype=torch.float64)
    nz = den > 0
    out[nz] = num[nz].double() / den[nz].double()
    return out


def _nanmean(x: Tensor) -> float:
    finite = x[~torch.isnan(x)]
    return float(finite.mean()) if finite.numel() else float("nan")


def metrics_from_confusion(confusion: Tensor, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Compute mIoU, overall accuracy, Kappa and per-class IoU/F1/precision/recall from a confusion matrix.

    Args:
        confusion: ``(K, K)`` counts, rows = ground truth, columns = prediction (any numeric dtype).
        class_names: ``K`` names for the per-class entries; ``class_0..`` when ``None``.

    Returns:
        Dict with floats ``mIoU``, ``mF1`` (macro over classes with a defined value), ``OA``, ``kappa``, int
        ``pixels``, and ``per_class``: ``{name: {"IoU", "F1", "precision", "recall", "support"}}`` (``NaN``
        where undefined, see the module docstring), plus ``class_names`` and ``confusion_matrix`` (nested
        lists).

    Raises:
        ValueError: If ``confusion`` is not square or the names do not match its size.
    """
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion matrix must be (K, K), got shape {tuple(confusion.shape)}")
    k = confusion.shape[0]
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names given for a {k}x{k} confusion matrix")
    cm = confusion.detach().cpu().double()
    tp = cm.diag()
    gt = cm.sum(dim=1)  # pixels of each class in the ground truth (support)
    pred = cm.sum(dim=0)
    fp = pred - tp
    fn = gt - tp
    iou = _safe_div(tp, tp + fp + fn)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    precision = _safe_div(tp, pred)
    recall = _safe_div(tp, gt)
    total = cm.sum()
    if total > 0:
        p_o = float(tp.sum() / total)
        p_e = float((gt * pred).sum() / (total * total))
        kappa = (p_o - p_e) / (1.0 - p_e) if p_e < 1.0 else float("nan")
    else:
        p_o, kappa = float("nan"), float("nan")
    per_class = {
        name: {
            "IoU": float(iou[i]),
            "F1": float(f1[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "support": int(gt[i]),
        }
        for i, name in enumerate(names)
    }
    return {
        "mIoU": _nanmean(iou),
        "mF1": _nanmean(f1),
        "OA": p_o,
        "kappa": kappa,
        "pixels": int(total),
        "per_class": per_class,
        "class_names": names,
        "confusion_matrix": confusion.detach().cpu().long().tolist(),
    }


def json_ready(obj: Any) -> Any:
    """Replace ``NaN``/``inf`` floats by ``None`` recursively, so the result is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    return obj


def _fmt(x: float, percent: bool = True) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{100 * x:.2f}" if percent else f"{x:.4f}"


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """Render :func:`metrics_from_confusion` output as a Markdown table (percent, ``n/a`` when undefined)."""
    lines = [
        "| metric | value |",
        "|---|---|",
        f"| mIoU (%) | {_fmt(metrics['mIoU'])} |",
        f"| mF1 (%) | {_fmt(metrics['mF1'])} |",
        f"| overall accuracy (%) | {_fmt(metrics['OA'])} |",
        f"| Cohen's kappa | {_fmt(metrics['kappa'], percent=False)} |",
        f"| labelled pixels | {metrics['pixels']} |",
        "",
        "| class | IoU (%) | F1 (%) | precision (%) | recall (%) | support (px) |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in metrics["per_class"].items():
        lines.append(
            f"| {name} | {_fmt(m['IoU'])} | {_fmt(m['F1'])} | {_fmt(m['precision'])} | {_fmt(m['recall'])} "
            f"| {m['support']} |"
        )
    lines.append("")
    lines.append(
        "n/a: undefined (0/0), excluded from the means: IoU and F1 of a class in neither the ground truth "
        "nor the prediction, precision of a class never predicted, recall of a class not in the ground truth."
    )
    return "\n".join(lines) + "\n"


def plot_confusion_matrix(
    confusion: Tensor, class_names: Sequence[str], path: str | Path, normalize: bool = True
) -> Path:
    """Save the confusion matrix as a PNG heat map (rows = ground truth, normalised per row by default).

    Args:
        confusion: ``(K, K)`` counts.
        class_names: ``K`` class names.
        path: Output PNG file.
        normalize: Divide each row by its support so the diagonal shows per-class recall.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = confusion.detach().cpu().double()
    if normalize:
        cm = cm / cm.sum(dim=1, keepdim=True).clamp_min(1)
    k = cm.shape[0]
    size = max(4.0, 0.8 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(cm.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    threshold = 0.5 * float(cm.max()) if cm.numel() else 0.0
    for i in range(k):
        for j in range(k):
            value = float(cm[i, j])
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            colour = "white" if value > threshold else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
