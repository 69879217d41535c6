r"""``falsecl evaluate`` and ``falsecl predict``: sliding-window inference from a fine-tuning checkpoint.

Both load a :class:`~falsecl.tasks.segmentation.SegmentationTask` checkpoint, whose hyper-parameters hold the
band statistics, so raw images are normalised exactly as in training, and both go through the one
:class:`~falsecl.inference.SlidingWindowPredictor`.

Usage::

    falsecl evaluate --checkpoint runs/ft/checkpoints/last.ckpt --dataset dubai --root data/dubai_aerial \\
        --split test --window 512 --overlap 0.25 --blend gaussian --tta true --output_dir runs/ft/eval-test
    falsecl predict --checkpoint runs/ft/checkpoints/last.ckpt --input scene.tif --output scene_classes.tif \\
        --preview scene_classes.png --probabilities scene_probs.tif
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from falsecl.inference import Blend, SlidingWindowPredictor
from falsecl.metrics import (
    confusion_matrix_metric,
    format_metrics_table,
    json_ready,
    metrics_from_confusion,
    plot_confusion_matrix,
)
from falsecl.tasks.segmentation import SegmentationTask

#: Errors reported as a one-line message and exit code 2 instead of a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A checkpoint file, or the best one (by validation mIoU) of a run folder ``runs/<name>``.

    Raises:
        FileNotFoundError: Neither a file nor a run folder with checkpoints.
    """
    path = Path(checkpoint)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        # ModelCheckpoint keeps one best-*.ckpt (save_top_k=1); the newest wins if a user kept several.
        candidates = sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime) or sorted(
            folder.glob("last.ckpt")
        )
        if candidates:
            return candidates[-1]
        raise FileNotFoundError(f"no best-*.ckpt or last.ckpt in {folder}; has 'falsecl finetune' run there?")
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} not found; pass a run folder runs/<name>, its checkpoints/last.ckpt or a best-*.ckpt"
        )
    return path


def load_task(checkpoint: str | Path, device: str = "cpu") -> SegmentationTask:
    """Load a fine-tuning checkpoint for inference (eval mode), checking it carries band statistics.

    Args:
        checkpoint: ``.ckpt`` written by ``falsecl finetune``, or a run folder (its best checkpoint is used).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.

    Returns:
        The task in eval mode on ``device``.

    Raises:
        FileNotFoundError: The checkpoint does not exist.
        ValueError: It is not a segmentation checkpoint or lacks ``mean``/``std``.
    """
    path = resolve_checkpoint(checkpoint)
    try:
        task = SegmentationTask.load_from_checkpoint(path, map_location="cpu")
    except Exception as err:  # unpickling errors, missing keys, foreign hyper-parameters
        raise ValueError(f"{path} is not a falsecl fine-tuning checkpoint ({err})") from err
    hp = task.hp
    if task.model is None or not hp.mean or not hp.std:
        raise ValueError(
            f"{path} lacks in_channels/num_classes/mean/std in its hyper-parameters; it was not written by "
            "'falsecl finetune' with a datamodule providing band statistics"
        )
    return task.to(resolve_device(device)).eval()


def make_predictor(
    task: SegmentationTask,
    window: int,
    overlap: float,
    blend: Blend,
    tta: bool,
    batch_size: int,
) -> SlidingWindowPredictor:
    """A :class:`SlidingWindowPredictor` normalising with the checkpoint's band statistics."""
    hp = task.hp
    return SlidingWindowPredictor(
        task,
        window=window,
        overlap=overlap,
        blend=blend,
        tta_flip=tta,
        batch_size=batch_size,
        num_classes=int(hp.num_classes),
        mean=hp.mean,
        std=hp.std,
        in_channels=int(hp.in_channels),
    )


def evaluate_images(
    predictor: SlidingWindowPredictor,
    samples: Iterable[Mapping[str, Tensor]],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
    progress: bool = False,
    total: int | None = None,
) -> tuple[dict[str, Any], Tensor]:
    """Sliding-window prediction over whole images and metrics over all their pixels.

    Args:
        predictor: The sliding-window predictor.
        samples: Whole raw images ``{"image": (C, H, W), "mask": (H, W)}`` (never centre-cropped).
        num_classes: ``K``.
        class_names: Names for the per-class metrics.
        ignore_index: Mask value not counted.
        progress: Print one line per image (with elapsed time) to stderr.
        total: Number of images, for the progress lines.

    Returns:
        ``(metrics, confusion)``: :func:`falsecl.metrics.metrics_from_confusion` output and the ``(K, K)``
        matrix.
    """
    confusion = confusion_matrix_metric(num_classes, ignore_index)
    n = 0
    start = time.perf_counter()
    for i, sample in enumerate(samples):
        image, mask = sample["image"], sample["mask"]
        if image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"image {i}: image {tuple(image.shape)} and mask {tuple(mask.shape)} sizes differ")
        labels = predictor.predict_tensor(image).argmax(dim=0)
        confusion.update(labels, mask.long())
        n += 1
        if progress:
            print(
                f"  image {i + 1}{f'/{total}' if total else ''}: {image.shape[-2]} x {image.shape[-1]} px, "
                f"{time.perf_counter() - start:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    if n == 0:
        raise ValueError("no images to evaluate: the split is empty")
    cm = confusion.compute()
    return metrics_from_confusion(cm, class_names), cm


def _whole_images(dataset: str, root: str, split: str, palette: str | None, bands: Any) -> Any:
    from falsecl.datamodules import SegmentationDataModule

    dm = SegmentationDataModule(dataset=dataset, root=root, palette=palette, bands=bands)
    return dm.whole_image_dataset(split)


def evaluate(
    checkpoint: str,
    dataset: str = "dubai",
    root: str = "data/dubai_aerial",
    split: str = "test",
    palette: str | None = None,
    bands: str | list[int] | None = None,
    window: int = 512,
    overlap: float = 0.25,
    blend: Literal["gaussian", "mean"] = "gaussian",
    tta: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    output_dir: str | None = None,
    max_images: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a fine-tuned model on whole held-out images with sliding-window inference.

    Writes ``metrics.json`` (all numbers and the settings), ``metrics.md`` (readable table) and
    ``confusion_matrix.png`` (row-normalised) to ``output_dir``.

    Args:
        checkpoint: Fine-tuning checkpoint (``runs/<name>/checkpoints/*.ckpt``), or the run folder ``runs/<name>``
            (its best checkpoint by validation mIoU).
        dataset: Dataset name, as in the datamodule (``dubai``, ``potsdam``, ``folder`` ...).
        root: Dataset root folder.
        split: Held-out split (``test`` or ``val``).
        palette: Palette file for the ``folder`` dataset.
        bands: Band choice passed to the dataset (as in fine-tuning).
        window: Sliding-window size in pixels.
        overlap: Fraction of overlap between neighbouring windows, in [0, 1).
        blend: ``gaussian`` or ``mean`` blending of overlapping logits.
        tta: Average predictions of the window and its horizontal/vertical flips.
        batch_size: Windows per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.
        output_dir: Where to write the reports (default ``<run>/eval-<split>`` next to ``checkpoints/``).
        max_images: Evaluate only the first N images (quick checks).
        progress: Print a line per evaluated image.

    Returns:
        The metrics dict.
    """
    task = load_task(checkpoint, device)
    predictor = make_predictor(task, window, overlap, blend, tta, batch_size)
    images = _whole_images(dataset, root, split, palette, bands)
    if len(images) == 0:
        raise ValueError(f"split {split!r} of {root} has no images")
    names = task.hp.class_names or list(getattr(images, "classes", [])) or None
    count = len(images) if max_images is None else min(max_images, len(images))
    start = time.perf_counter()
    metrics, cm = evaluate_images(
        predictor,
        (images[i] for i in range(count)),
        int(task.hp.num_classes),
        names,
        int(task.hp.ignore_index),
        progress=progress,
        total=count,
    )
    seconds = time.perf_counter() - start
    out = Path(output_dir) if output_dir else resolve_checkpoint(checkpoint).resolve().parent.parent / f"eval-{split}"
    out.mkdir(parents=True, exist_ok=True)
    metrics["settings"] = {
        "checkpoint": str(resolve_checkpoint(checkpoint)),
        "dataset": dataset,
        "root": root,
        "split": split,
        "images": count,
        "window": window,
        "overlap": overlap,
        "blend": blend,
        "tta": tta,
        "seconds": round(seconds, 3),
    }
    (out / "metrics.json").write_text(json.dumps(json_ready(metrics), indent=2, allow_nan=False) + "\n")
    header = f"# Evaluation: {dataset} / {split} ({count} whole images)\n\ncheckpoint: `{checkpoint}`\n\n"
    table = format_metrics_table(metrics)
    (out / "metrics.md").write_text(header + table)
    plot_confusion_matrix(cm, metrics["class_names"], out / "confusion_matrix.png")
    print(table)
    print(f"reports written to {out}")
    return metrics


def predict(
    checkpoint: str,
    input: str,
    output: str,
    probabilities: str | None = None,
    probability_dtype: Literal["uint8", "float32"] = "uint8",
    preview: str | None = None,
    preview_max_size: int = 2048,
    window: int = 512,
    overlap: float = 0.25,
    blend: Literal["gaussian", "mean"] = "gaussian",
    tta: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a georeferenced class map (uint8 GeoTIFF, same CRS/transform) for a raster of any size.

    Args:
        checkpoint: Fine-tuning checkpoint, or the run folder ``runs/<name>`` (its best checkpoint).
        input: GeoTIFF, JPEG or PNG with the bands the model was trained on.
        output: Class-map GeoTIFF to write (tiled, DEFLATE-compressed, with a colour table).
        probabilities: Optional K-band probability GeoTIFF.
        probability_dtype: ``uint8`` (255 = probability 1) or ``float32``.
        preview: Optional colour PNG of the class map (subsampled for large images).
        preview_max_size: Longest side of the preview.
        window: Sliding-window size in pixels.
        overlap: Fraction of overlap between windows, in [0, 1).
        blend: ``gaussian`` or ``mean`` blending of overlapping logits.
        tta: Flip test-time augmentation.
        batch_size: Windows per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.
        overwrite: Replace existing outputs.
        progress: Show a progress bar.

    Returns:
        Summary of the prediction (size, pixels per class, outputs).
    """
    task = load_task(checkpoint, device)
    predictor = make_predictor(task, window, overlap, blend, tta, batch_size)
    start = time.perf_counter()
    summary = predictor.predict_raster(
        input,
        output,
        probabilities_path=probabilities,
        preview_path=preview,
        probability_dtype=probability_dtype,
        preview_max_size=preview_max_size,
        overwrite=overwrite,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    mpix = summary["height"] * summary["width"] / 1e6
    print(f"{input}: {summary['height']} x {summary['width']} px in {seconds:.1f} s ({mpix / seconds:.2f} MP/s)")
    for kind, path in summary["outputs"].items():
        print(f"  {kind}: {path}")
    return summary


def _run(func: Any, argv: Sequence[str] | None, prog: str) -> int:
    from jsonargparse import auto_cli

    try:
        auto_cli(func, args=list(argv) if argv is not None else None, as_positional=False, prog=prog)
    except USER_ERRORS as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Run ``falsecl evaluate`` (see :func:`evaluate`); returns the exit code."""
    return _run(evaluate, argv, "falsecl evaluate")


def predict_main(argv: Sequence[str] | None = None) -> int:
    """Run ``falsecl predict`` (see :func:`predict`); returns the exit code."""
    return _run(predict, argv, "falsecl predict")
