"""Evaluation with bounded memory: the confusion matrix is accumulated block by block as the sliding window goes.

:func:`evaluate_checkpoint` is ``falsecl evaluate``'s work: the checkpoint's data, whole held-out images, the
metrics and their reports (:mod:`falsecl.inference.report`), returned as an :class:`Evaluation`.

No whole-image logits are ever held: each finished block of blended logits
(:meth:`~falsecl.inference.SlidingWindowPredictor.sweep`) is turned into labels and counted against the same
block of the mask, read on demand. Peak memory is that of the sliding window (a band of ``window`` rows of one
panel), plus whatever the dataset's reader caches (rasterio blocks; JPEG/PNG are decoded whole, as uint8).
The class map is ``argmax(sums / norm)``, exactly what whole-image prediction followed by ``argmax`` gives.

Images that declare invalid pixels (GeoTIFF nodata, internal or external masks, alpha; PNG transparency) are read
with their validity: invalid pixels are filled with the band mean before normalising, as ``predict`` does, and
are not scored (like ``ignore_index``), so the metrics never count a prediction made on no data.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from falsecl.datasets import segmentation_dataset
from falsecl.datasets.base import SegmentationDataset
from falsecl.datasets.io import has_invalid_pixels, read_valid
from falsecl.datasets.validity import fill_invalid
from falsecl.inference.checkpoint import (
    check_same_classes,
    describe_checkpoint,
    load_task,
    make_predictor,
    resolve_checkpoint,
    resolve_data,
)
from falsecl.inference.report import report_header, update_card_metrics, write_reports
from falsecl.inference.sliding_window import Blend, SlidingWindowPredictor, argmax_classes
from falsecl.metrics import IGNORE_INDEX, format_metrics_table, metrics_from_confusion
from falsecl.model_card import held_out_note
from falsecl.tiling import Patch

#: ``(r0, r1, c0, c1) -> array``: rows ``[r0, r1)`` and columns ``[c0, c1)`` of an image or a mask.
RegionReader = Callable[[int, int, int, int], Tensor]


@dataclass
class EvalSample:
    """One image to evaluate, read by regions.

    Attributes:
        name: Shown in progress lines and errors.
        height: Image height.
        width: Image width.
        bands: Bands of the image.
        read_image: Raw pixels ``(C, r1 - r0, c1 - c0)``.
        read_mask: Class indices ``(r1 - r0, c1 - c0)`` (``ignore_index`` for unlabelled pixels).
        read_valid: Validity ``(r1 - r0, c1 - c0)`` (bool, ``True`` = data), or ``None`` when every pixel holds data.
    """

    name: str
    height: int
    width: int
    bands: int
    read_image: RegionReader
    read_mask: RegionReader
    read_valid: RegionReader | None = None


def tensor_sample(image: Tensor, mask: Tensor, name: str = "image") -> EvalSample:
    """An :class:`EvalSample` over an image ``(C, H, W)`` and mask ``(H, W)`` held in memory."""
    if image.ndim != 3 or image.shape[-2:] != mask.shape[-2:]:
        raise ValueError(f"{name}: image {tuple(image.shape)} and mask {tuple(mask.shape)} sizes differ")
    return EvalSample(
        name,
        int(image.shape[1]),
        int(image.shape[2]),
        int(image.shape[0]),
        lambda r0, r1, c0, c1: image[:, r0:r1, c0:c1],
        lambda r0, r1, c0, c1: mask[r0:r1, c0:c1],
    )


def dataset_samples(dataset: Any, count: int | None = None) -> list[EvalSample]:
    """Region readers over the whole images of a :class:`~falsecl.datasets.base.SegmentationDataset`.

    Regions go through the dataset's own ``read_image``/``read_mask`` (band selection, mask decoding, ignore
    colours) applied to each region as a window of the image.

    Args:
        dataset: A segmentation dataset (any tiling; its ``files``/``infos`` list the images).
        count: Only the first ``count`` images.

    Returns:
        One sample per image.
    """
    samples = []
    n = len(dataset.files) if count is None else min(count, len(dataset.files))
    for i in range(n):
        info, tile = dataset.infos[i], dataset.files[i].tile

        def image(r0: int, r1: int, c0: int, c1: int, i: int = i, tile: str = tile) -> Tensor:
            patch = Patch(i, tile, r0, c0, r1 - r0, c1 - c0)
            return torch.from_numpy(np.asarray(dataset.read_patch_image(patch), dtype=np.float32))

        def mask(r0: int, r1: int, c0: int, c1: int, i: int = i, tile: str = tile) -> Tensor:
            return torch.from_numpy(dataset.read_patch_mask(Patch(i, tile, r0, c0, r1 - r0, c1 - c0)))

        bands = len(dataset.band_indices) if dataset.band_indices is not None else int(info.bands)
        path = dataset.files[i].image
        valid = None
        if has_invalid_pixels(path):

            def valid(r0: int, r1: int, c0: int, c1: int, path: Any = path) -> Tensor:
                return torch.from_numpy(read_valid(path, r0, c0, r1 - r0, c1 - c0))

        samples.append(EvalSample(str(path), int(info.height), int(info.width), bands, image, mask, valid))
    return samples


def confusion_of_sample(
    predictor: SlidingWindowPredictor, sample: EvalSample, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """``(K, K)`` int64 confusion matrix (rows = ground truth) of one image, accumulated block by block.

    Args:
        predictor: The sliding-window predictor.
        sample: The image and its mask, read by regions.
        num_classes: ``K``.
        ignore_index: Mask value not counted.

    Returns:
        The confusion matrix on the CPU.
    """
    predictor.check_bands(sample.bands, sample.name)
    cm = torch.zeros(num_classes * num_classes, dtype=torch.int64)
    read_image, read_valid = sample.read_image, sample.read_valid
    if read_valid is not None:
        fill = predictor.mean if predictor.mean is not None else [0.0] * sample.bands  # 0 = mean once normalised

        def read_image(r0: int, r1: int, c0: int, c1: int) -> Tensor:
            pixels = sample.read_image(r0, r1, c0, c1).float().numpy().copy()
            return torch.from_numpy(fill_invalid(pixels, read_valid(r0, r1, c0, c1).numpy(), fill))

    def emit(r0: int, c0: int, sums: Tensor, norm: Tensor) -> None:
        n, m = sums.shape[1:]
        pred = argmax_classes(sums / norm).cpu().long().ravel()
        target = sample.read_mask(r0, r0 + n, c0, c0 + m).long().ravel()
        keep = target != ignore_index
        if read_valid is not None:
            keep &= read_valid(r0, r0 + n, c0, c0 + m).ravel()
        if bool(((target[keep] < 0) | (target[keep] >= num_classes)).any()):
            raise ValueError(f"{sample.name}: mask values outside 0..{num_classes - 1} (and {ignore_index})")
        cm.add_(torch.bincount(target[keep] * num_classes + pred[keep], minlength=num_classes * num_classes))

    predictor.sweep(sample.height, sample.width, read_image, emit)
    return cm.view(num_classes, num_classes)


def confusion_of_samples(
    predictor: SlidingWindowPredictor,
    samples: Iterable[EvalSample | Mapping[str, Tensor]],
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    progress: bool = False,
    total: int | None = None,
) -> Tensor:
    """Sum of :func:`confusion_of_sample` over images (``{"image", "mask"}`` dicts are accepted too).

    Raises:
        ValueError: No images, or image/mask sizes differ.
    """
    import rasterio

    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    n = 0
    start = time.perf_counter()
    # A small GDAL block cache keeps memory flat in the image size (GDAL's default is 5 % of the RAM).
    with rasterio.Env(GDAL_CACHEMAX=64):
        n = _accumulate(predictor, samples, num_classes, ignore_index, cm, progress, total, start)
    if n == 0:
        raise ValueError("no images to evaluate: the split is empty")
    return cm


def _accumulate(
    predictor: SlidingWindowPredictor,
    samples: Iterable[EvalSample | Mapping[str, Tensor]],
    num_classes: int,
    ignore_index: int,
    cm: Tensor,
    progress: bool,
    total: int | None,
    start: float,
) -> int:
    n = 0
    for i, item in enumerate(samples):
        sample = item if isinstance(item, EvalSample) else tensor_sample(item["image"], item["mask"], f"image {i}")
        cm += confusion_of_sample(predictor, sample, num_classes, ignore_index)
        n += 1
        if progress:  # width x height, as `data check` and `predict` print sizes
            print(
                f"  image {i + 1}{f'/{total}' if total else ''}: {sample.width} x {sample.height} px, "
                f"{time.perf_counter() - start:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return n


def evaluate_images(
    predictor: SlidingWindowPredictor,
    samples: Iterable[EvalSample | Mapping[str, Tensor]],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
    progress: bool = False,
    total: int | None = None,
) -> tuple[dict[str, Any], Tensor]:
    """Sliding-window prediction over whole images and metrics over all their pixels, block by block.

    Args:
        predictor: The sliding-window predictor.
        samples: :class:`EvalSample` region readers, or whole raw images ``{"image": (C, H, W), "mask": (H, W)}``
            (never centre-cropped).
        num_classes: ``K``.
        class_names: Names for the per-class metrics.
        ignore_index: Mask value not counted.
        progress: Print one line per image (with elapsed time) to stderr.
        total: Number of images, for the progress lines.

    Returns:
        ``(metrics, confusion)``: :func:`falsecl.metrics.metrics_from_confusion` output and the ``(K, K)``
        matrix.
    """
    cm = confusion_of_samples(predictor, samples, num_classes, ignore_index, progress=progress, total=total)
    return metrics_from_confusion(cm, class_names), cm


def whole_images(
    dataset: str, root: str, split: str, palette: str | None, bands: str | Sequence[int] | None
) -> SegmentationDataset:
    """The whole (untiled, raw) images of a held-out split, as the fine-tuning datamodule reads them."""
    return segmentation_dataset(dataset, root, split, None, bands=bands, palette=palette)


@dataclass
class Evaluation:
    """What :func:`evaluate_checkpoint` measured and wrote.

    Attributes:
        metrics: :func:`falsecl.metrics.metrics_from_confusion` output plus ``checkpoint`` (which one was
            scored, chosen on which split) and ``settings``.
        confusion: ``(K, K)`` int64 confusion matrix, rows = ground truth.
        report: The Markdown report (header and table), as written to ``metrics.md``.
        output_dir: Folder holding ``metrics.json``, ``metrics.md`` and ``confusion_matrix.png``.
        images: Images evaluated.
        card_updated: Whether the run's ``model.json`` received the metrics (whole split, run folder known).
    """

    metrics: dict[str, Any]
    confusion: Tensor
    report: str
    output_dir: Path
    images: int
    card_updated: bool


def evaluate_checkpoint(
    checkpoint: str,
    dataset: str | None = None,
    root: str | None = None,
    split: str = "test",
    palette: str | None = None,
    bands: str | list[int] | None = None,
    window: int = 512,
    overlap: float = 0.25,
    blend: Blend = "gaussian",
    tta: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    precision: Literal["auto", "bf16-mixed", "32-true"] = "32-true",
    output_stride: int | None = None,
    output_dir: str | None = None,
    max_images: int | None = None,
    progress: bool = True,
) -> Evaluation:
    """Evaluate a fine-tuned model on whole held-out images with sliding-window inference.

    The data (dataset, root, bands, palette) and the classes come from the checkpoint unless given. Writes
    ``metrics.json`` (all numbers, the settings, which checkpoint was scored and on which split it was chosen),
    ``metrics.md`` (readable table) and ``confusion_matrix.png`` (row-normalised) to ``output_dir``, and, when
    the whole split was evaluated, the metrics into the run's ``model.json`` (``test_metrics``). Memory stays
    bounded: the confusion matrix is accumulated block by block, whatever the image size.

    Args:
        checkpoint: Fine-tuning checkpoint (``runs/<name>/checkpoints/*.ckpt``), or the run folder ``runs/<name>``
            (its best checkpoint by validation mIoU).
        dataset: Dataset name (``dubai``, ``potsdam``, ``folder`` ...); the checkpoint's own when omitted. One
            whose classes differ from the checkpoint's is refused.
        root: Dataset root folder; the checkpoint's own when the dataset is.
        split: Held-out split (``test`` or ``val``).
        palette: Palette file for the ``folder`` dataset; the checkpoint's own when omitted.
        bands: Band choice passed to the dataset; the checkpoint's own when omitted.
        window: Sliding-window size in pixels.
        overlap: Fraction of overlap between neighbouring windows, in [0, 1).
        blend: ``gaussian`` or ``mean`` blending of overlapping logits.
        tta: Average predictions of the window and its horizontal/vertical flips.
        batch_size: Windows per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``32-true`` (default, reproducible numbers), ``bf16-mixed`` (bf16 autocast on the forward
            pass) or ``auto`` (bf16 where the hardware runs it natively).
        output_stride: Run DeepLabv3+ at output stride 8 or 16 (the checkpoint's own by default; 16 is faster).
        output_dir: Where to write the reports (default ``<run>/eval-<split>`` next to ``checkpoints/``).
        max_images: Evaluate only the first N images (quick checks).
        progress: Print a line per evaluated image.

    Returns:
        The :class:`Evaluation` (metrics, confusion matrix, report text, where it was written).

    Raises:
        ValueError: An empty split, or data whose classes differ from the checkpoint's.
        FileNotFoundError: No checkpoint or no data.
    """
    path = resolve_checkpoint(checkpoint)
    task = load_task(path, device, output_stride)
    dataset, root, palette, bands = resolve_data(task, dataset, root, palette, bands)
    predictor = make_predictor(task, window, overlap, blend, tta, batch_size, precision)
    images = whole_images(dataset, root, split, palette, bands)
    if len(images) == 0:
        raise ValueError(f"split {split!r} of {root} has no images")
    data_names = list(getattr(images, "classes", []) or [])
    if data_names:
        check_same_classes(task, data_names, f"dataset {dataset!r} at {root}")
    names = task.hp.class_names or data_names or None
    count = len(images) if max_images is None else min(max_images, len(images))
    samples = dataset_samples(images, count) if hasattr(images, "files") else [images[i] for i in range(count)]
    start = time.perf_counter()
    metrics, cm = evaluate_images(
        predictor, samples, int(task.hp.num_classes), names, int(task.hp.ignore_index), progress, count
    )
    seconds = time.perf_counter() - start
    out = Path(output_dir) if output_dir else path.resolve().parent.parent / f"eval-{split}"
    scored = describe_checkpoint(path, task)
    held_out = held_out_note(task.hp)
    metrics["checkpoint"] = scored
    metrics["settings"] = {
        "checkpoint": str(path),
        "dataset": dataset,
        "root": root,
        "split": split,
        "images": count,
        "window": window,
        "overlap": overlap,
        "blend": blend,
        "tta": tta,
        "precision": predictor.precision,
        "channels_last": predictor.channels_last,
        "output_stride": int(task.hp.output_stride),
        "seconds": round(seconds, 3),
        "allow_held_out": held_out is not None,
    }
    optimistic = (
        scored["kind"] == "best-by-val"
        and split == scored["selected_on"]["split"]
        and dataset == task.hp.get("data_name")
    )
    report = report_header(metrics["settings"], scored, path.name, optimistic, held_out)
    report += format_metrics_table(metrics)
    write_reports(out, metrics, cm, report)
    # A partial evaluation (--max_images) is no model-card figure.
    card_updated = count == len(images) and update_card_metrics(path, split, metrics)
    return Evaluation(metrics, cm, report, out, count, card_updated)
