"""Evaluation with bounded memory: the confusion matrix is accumulated block by block as the sliding window goes.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from falsecl.datasets.io import fill_invalid, has_invalid_pixels, read_valid
from falsecl.datasets.tiling import Patch
from falsecl.inference.sliding_window import SlidingWindowPredictor, argmax_classes
from falsecl.metrics import IGNORE_INDEX

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
    colours), on a shallow view of it whose single patch is the region.

    Args:
        dataset: A segmentation dataset (any tiling; its ``files``/``infos`` list the images).
        count: Only the first ``count`` images.

    Returns:
        One sample per image.
    """
    view = object.__new__(type(dataset))
    view.__dict__.update(dataset.__dict__)
    samples = []
    n = len(dataset.files) if count is None else min(count, len(dataset.files))
    for i in range(n):
        info, tile = dataset.infos[i], dataset.files[i].tile

        def region(r0: int, r1: int, c0: int, c1: int, i: int = i, tile: str = tile) -> None:
            view.patches = [Patch(i, tile, r0, c0, r1 - r0, c1 - c0)]

        def image(r0: int, r1: int, c0: int, c1: int, region: Any = region) -> Tensor:
            region(r0, r1, c0, c1)
            return torch.from_numpy(np.asarray(view.read_image(0), dtype=np.float32))

        def mask(r0: int, r1: int, c0: int, c1: int, region: Any = region) -> Tensor:
            region(r0, r1, c0, c1)
            return torch.from_numpy(view.read_mask(0))

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
        if progress:
            print(
                f"  image {i + 1}{f'/{total}' if total else ''}: {sample.height} x {sample.width} px, "
                f"{time.perf_counter() - start:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return n
