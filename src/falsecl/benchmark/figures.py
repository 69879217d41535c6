"""Figures of the benchmark report: mIoU against label fraction, FALSE's pretraining curves, a prediction panel."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    plt = _pyplot()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def plot_miou(rows: Sequence[Row], path: Path) -> None:
    """Plot mIoU (mean ± std over seeds) against label fraction, one panel per protocol, one line per method."""
    plt = _pyplot()
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    fig, axes = plt.subplots(1, len(protocols), figsize=(5.5 * len(protocols), 3.8), squeeze=False)
    for ax, protocol in zip(axes[0], protocols, strict=True):
        mine = [r for r in rows if r["protocol"] == protocol]
        for method in dict.fromkeys(r["method"] for r in mine):
            pts = sorted((r["label_fraction"], r["mean"], r["std"] or 0.0) for r in mine
                         if r["method"] == method and r["mean"] is not None)
            if pts:
                ax.errorbar([100 * p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts],
                            marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ticks = sorted({100 * r["label_fraction"] for r in mine})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel("labelled training patches (%)")
        ax.set_ylabel("test mIoU (%)")
        ax.set_title({"probe": "frozen encoder, linear probe", "finetune": "DeepLabv3+ fine-tuning"}.get(protocol,
                                                                                                    protocol))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def _logged_curve(column: str) -> bool:
    """FALSE's fire rate (``train/fire_rate``, ``train/false/fire_rate``) and diagnostics (``train/diag_*``)."""
    return column.endswith("fire_rate") or column.startswith("train/diag_") or "/diag/" in column


def read_pretrain_logs(out: Path, methods: Sequence[str]) -> dict[str, list[dict[str, list[tuple[int, float]]]]]:
    """Fire-rate and ``train/diag_*`` series per method and pretraining seed from the CSV logs.

    Returns:
        ``{method: [{column: [(step, value), ...]} per seed]}``, only the columns present.
    """
    found: dict[str, list[dict[str, list[tuple[int, float]]]]] = {}
    for method in methods:
        for path in sorted((out / method).glob("pretrain_seed*/csv/metrics.csv")):
            series: dict[str, list[tuple[int, float]]] = {}
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    for col, val in row.items():
                        if col and _logged_curve(col) and val:
                            try:
                                series.setdefault(col, []).append((int(float(row.get("step") or 0)), float(val)))
                            except ValueError:
                                continue
            if series:
                found.setdefault(method, []).append(series)
    return found


def plot_pretrain_curves(logs: dict[str, list[dict[str, list[tuple[int, float]]]]], path: Path) -> list[str]:
    """One panel per logged column (fire rate, diagnostics), a line per method and seed. Returns the columns."""
    plt = _pyplot()
    columns = sorted({c for runs in logs.values() for run in runs for c in run})
    if not columns:
        return []
    ncol = min(3, len(columns))
    nrow = math.ceil(len(columns) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.2 * nrow), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, col in enumerate(columns):
        ax = axes[i // ncol][i % ncol]
        for k, (method, runs) in enumerate(logs.items()):
            for j, run in enumerate(runs):
                if col in run:
                    steps, vals = zip(*run[col], strict=True)
                    ax.plot(steps, vals, color=colours[k % len(colours)], alpha=0.8, lw=1,
                            label=method if j == 0 else None)
        ax.set_title(col.removeprefix("train/"), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for i in range(len(columns), nrow * ncol):
        axes[i // ncol][i % ncol].axis("off")
    _save(fig, path)
    return columns


def plot_panel(images: Sequence[Any], truths: Sequence[Any], predictions: Mapping[str, Sequence[Any]],
               colours: Sequence[Sequence[int]], class_names: Sequence[str], path: Path) -> None:
    """Rows of test images: the image, its ground truth, then each method's prediction, in the dataset's colours.

    Args:
        images: ``(H, W, 3)`` uint8 RGB previews.
        truths: ``(H, W)`` class maps (255 = ignore, drawn black).
        predictions: Method name -> ``(H, W)`` class maps, one per image.
        colours: RGB per class.
        class_names: Class names for the legend.
        path: PNG written.
    """
    import numpy as np

    plt = _pyplot()
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(colours)] = np.asarray(colours, dtype=np.uint8)
    cols = ["image", "ground truth", *predictions]
    fig, axes = plt.subplots(len(images), len(cols), figsize=(2.6 * len(cols), 2.6 * len(images) + 0.6),
                             squeeze=False)
    for r, (image, truth) in enumerate(zip(images, truths, strict=True)):
        panels = [image, lut[np.asarray(truth)]] + [lut[np.asarray(p[r])] for p in predictions.values()]
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=(c[0] / 255, c[1] / 255, c[2] / 255), label=n) for c, n in zip(colours, class_names,
                                                                                       strict=False)],
               loc="lower center", ncol=len(class_names), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
