"""Per-band normalisation statistics computed from training data and cached as JSON.

Statistics always come from the training patches of the run's own data, never from an inherited 0/255 or
ImageNet default: the bands (IR), the sensor and the bit depth (uint8 or 16-bit) all change them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from falsecl.datasets.errors import DatasetError
from falsecl.datasets.subsets import fingerprint_mismatch

log = logging.getLogger(__name__)


class PatchSource(Protocol):
    """Anything with a length and ``read_image(i) -> (C, h, w)`` raw pixels (every falsecl dataset)."""

    def __len__(self) -> int:
        """Number of patches."""
        ...

    def read_image(self, index: int) -> NDArray[Any]:
        """Raw pixels (C, h, w) of patch ``index``."""
        ...


@dataclass(frozen=True)
class BandStats:
    """Per-band statistics of raw digital numbers.

    Attributes:
        mean: Per-band mean (C floats).
        std: Per-band standard deviation (C floats), floored at 1e-6 so normalising cannot divide by zero.
        max: Per-band maximum seen (the value range, e.g. 255 for uint8), used to scale colour augmentation.
        num_patches: How many patches were sampled.
    """

    mean: list[float]
    std: list[float]
    max: list[float]
    num_patches: int

    @property
    def bands(self) -> int:
        """Number of bands."""
        return len(self.mean)


def sampled_pixels(dataset: PatchSource, max_patches: int, seed: int) -> Iterator[NDArray[Any]]:
    """Raw pixels ``(C, n)`` of a seeded random sample of at most ``max_patches`` patches, valid pixels only.

    A dataset with ``read_valid(i) -> (h, w)`` booleans (the pretraining pool) yields its valid pixels only, so
    nodata fill and padding never enter what is computed from them; a patch with none is skipped.

    Raises:
        DatasetError: Empty dataset.
    """
    n = len(dataset)
    if n == 0:
        raise DatasetError("cannot compute statistics of an empty dataset")
    rng = np.random.default_rng(seed)
    read_valid = getattr(dataset, "read_valid", None)
    for i in np.sort(rng.choice(n, size=min(n, max_patches), replace=False)):
        x = dataset.read_image(int(i))
        flat = x.reshape(x.shape[0], -1)
        if read_valid is not None:
            flat = flat[:, np.asarray(read_valid(int(i))).reshape(-1)]
        if flat.shape[1]:
            yield flat


def compute_band_stats(dataset: PatchSource, max_patches: int = 256, seed: int = 0) -> BandStats:
    """Mean/std per band over a seeded random sample of at most ``max_patches`` patches.

    Sums are accumulated in float64 (16-bit data squared overflows float32 precision quickly). A dataset with
    ``read_valid(i) -> (h, w)`` booleans (the pretraining pool) counts its valid pixels only, so nodata fill and
    padding never pull the statistics (a pool of mostly empty scenes would otherwise give a mean near 0).

    Args:
        dataset: The training dataset (raw, unnormalised).
        max_patches: Upper bound on patches read (a few hundred give the mean to well under 1 %).
        seed: Sampling seed.

    Returns:
        The statistics.

    Raises:
        DatasetError: Empty dataset.
    """
    total: NDArray[np.float64] | None = None
    sq = peak = total
    count, patches = 0, min(len(dataset), max_patches)
    for pixels in sampled_pixels(dataset, max_patches, seed):
        flat = pixels.astype(np.float64)
        if total is None or sq is None or peak is None:
            total, sq, peak = np.zeros(flat.shape[0]), np.zeros(flat.shape[0]), np.full(flat.shape[0], -np.inf)
        total += flat.sum(1)
        sq += (flat * flat).sum(1)
        peak = np.maximum(peak, flat.max(1))
        count += flat.shape[1]
    if count == 0 or total is None or sq is None or peak is None:
        raise DatasetError("no valid pixel in the patches sampled for band statistics; check the nodata value")
    mean = total / count
    var = np.maximum(sq / count - mean * mean, 0.0)
    std = [max(math.sqrt(v), 1e-6) for v in var]
    return BandStats([float(v) for v in mean], std, [float(v) for v in peak], patches)


def value_range(
    dataset: PatchSource, max_patches: int = 32, seed: int = 0, pixels_per_patch: int = 4096
) -> tuple[str, list[list[float]]]:
    """Data type and per-band 1st/99th percentiles of the raw training pixels (a seeded sample).

    Recorded with a fine-tuned model so ``predict`` can refuse inputs of another data type or value range
    (a 16-bit scene on an 8-bit model); the statistics above (mean/std) cannot tell them apart.

    Args:
        dataset: The training dataset (raw, unnormalised).
        max_patches: Patches read.
        seed: Sampling seed.
        pixels_per_patch: Pixels kept per patch (evenly spaced), so memory stays small.

    Returns:
        ``(dtype, [[p1, p99] per band])``.

    Raises:
        DatasetError: Empty dataset, or no valid pixel in the sample.
    """
    dtype, samples = "", []
    for pixels in sampled_pixels(dataset, max_patches, seed):
        dtype = dtype or str(pixels.dtype)
        samples.append(pixels[:, :: max(1, pixels.shape[1] // pixels_per_patch)].astype(np.float64))
    if not samples:
        raise DatasetError("no valid pixel in the patches sampled for the value range; check the nodata value")
    low, high = np.percentile(np.concatenate(samples, axis=1), [1.0, 99.0], axis=1)
    return dtype, [[float(lo), float(hi)] for lo, hi in zip(low, high, strict=True)]


def save_band_stats(stats: BandStats, path: str | Path, fingerprint: Mapping[str, Any] | None = None) -> None:
    """Write ``stats`` as JSON (creating parent folders), with the fingerprint of their source if given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = asdict(stats)
    if fingerprint is not None:
        record["fingerprint"] = dict(fingerprint)
    path.write_text(json.dumps(record, indent=2) + "\n")


def load_stats_fingerprint(path: str | Path) -> dict[str, Any] | None:
    """The fingerprint stored in a statistics file, or ``None`` (older file, or none was given)."""
    try:
        value = json.loads(Path(path).read_text()).get("fingerprint")
    except (ValueError, AttributeError):
        return None
    return dict(value) if isinstance(value, dict) else None


def load_band_stats(path: str | Path) -> BandStats:
    """Read statistics written by :func:`save_band_stats`.

    Raises:
        DatasetError: Malformed file.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
        return BandStats(
            [float(v) for v in raw["mean"]],
            [float(v) for v in raw["std"]],
            [float(v) for v in raw["max"]],
            int(raw["num_patches"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(
            f"band statistics file {path} is malformed ({err}). Fix: delete it to recompute."
        ) from err


def cached_band_stats(
    dataset: PatchSource,
    path: str | Path | None,
    max_patches: int = 256,
    seed: int = 0,
    bands: int | None = None,
    fingerprint: Mapping[str, Any] | None = None,
) -> BandStats:
    """Load statistics from ``path`` when they were computed from the same source, else compute and save them.

    Args:
        dataset: Training dataset.
        path: JSON cache file, or ``None`` to always compute without saving.
        max_patches: Sample size for :func:`compute_band_stats`.
        seed: Sampling seed.
        bands: Expected band count; a cache with another count is recomputed.
        fingerprint: What the statistics are drawn from (dataset, root, split, bands, patch size ...). A cache
            whose stored fingerprint differs, or that has none, is recomputed (and the change logged), so
            statistics of other imagery are never reused silently.

    Returns:
        The statistics.
    """
    wanted = dict(fingerprint or {}, max_patches=max_patches, seed=seed) if fingerprint is not None else None
    if path is not None and Path(path).is_file():
        stats = load_band_stats(path)
        saved = load_stats_fingerprint(path)
        same_source = wanted is None or (saved is not None and not fingerprint_mismatch(saved, wanted))
        if same_source and (bands is None or stats.bands == bands):
            return stats
        changed = fingerprint_mismatch(saved, wanted) if saved is not None and wanted is not None else []
        log.warning(
            "band statistics %s were computed from another source (%s); recomputing them",
            path,
            "; ".join(changed) or "no fingerprint or another band count",
        )
    stats = compute_band_stats(dataset, max_patches, seed)
    if path is not None:
        save_band_stats(stats, path, wanted)
    return stats
