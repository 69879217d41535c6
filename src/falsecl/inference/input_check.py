"""Is an input raster the kind of data the model was trained on? Data type and value range, checked before predicting.

A fine-tuned model only knows its training data's digital numbers: the checkpoint's ``mean``/``std`` normalise a
uint8 scene and a uint16 scene alike, so a 16-bit scene fed to an 8-bit model gives a confident, wrong map (98 %
of the pixels changed class in a test, with no message). Fine-tuning records the training input's data type and
per-band 1st/99th percentiles (``data_dtype``, ``data_value_range`` in the checkpoint, ``input`` in the model
card); ``predict`` samples the same percentiles of each input (valid pixels only, a decimated read) and stops
when the data type differs or a band's values lie far outside the training range, naming both and the way on:
``--input_scale`` (multiply the input's values first, e.g. ``0.0039`` for 16-bit stretched to 8-bit) or
``--allow_range_mismatch true``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from falsecl.datasets.validity import may_have_invalid, valid_pixels

#: A band's values are "far outside" the training range when its 1st or 99th percentile lies more than this
#: many training ranges (99th - 1st percentile) beyond the training percentiles.
FAR_OUTSIDE = 2.0

#: Longest side of the decimated read that samples an input's value range.
SAMPLE_SIDE = 1024


class InputMismatchError(ValueError):
    """The input's data type or value range is not what the model was trained on."""


@dataclass(frozen=True)
class ValueRange:
    """Data type and per-band value range (1st and 99th percentiles) of raw digital numbers.

    Attributes:
        dtype: NumPy dtype name, e.g. ``"uint8"``.
        low: Per-band 1st percentile (C floats).
        high: Per-band 99th percentile (C floats).
    """

    dtype: str
    low: list[float]
    high: list[float]

    def describe(self, bands: int = 4) -> str:
        """``"uint8, band 1 12-231, band 2 ..."`` (at most ``bands`` bands)."""
        pairs = zip(self.low, self.high, strict=True)
        parts = [f"band {b + 1} {_num(lo)}-{_num(hi)}" for b, (lo, hi) in enumerate(pairs)]
        more = f" (+{len(parts) - bands} more)" if len(parts) > bands else ""
        return f"{self.dtype}, " + ", ".join(parts[:bands]) + more


def _num(x: float) -> str:
    return f"{x:.4g}"


def training_range(hparams: Mapping[str, Any], source: str = "the checkpoint") -> ValueRange | None:
    """The training input's :class:`ValueRange` recorded in a checkpoint's hyper-parameters.

    Args:
        hparams: ``task.hparams`` (``data_dtype``, ``data_value_range``: ``[[p1, p99], ...]`` per band).
        source: Names the checkpoint in the warning.

    Returns:
        The range, or ``None`` (with a warning) for checkpoints fine-tuned before it was recorded.
    """
    dtype, pairs = hparams.get("data_dtype"), hparams.get("data_value_range")
    try:
        if dtype and pairs:
            return ValueRange(str(dtype), [float(p[0]) for p in pairs], [float(p[1]) for p in pairs])
    except (TypeError, ValueError, IndexError):
        pass
    warnings.warn(
        f"{source} does not record its training data type and value range (fine-tuned with an older falsecl): "
        "inputs cannot be checked against it; make sure they hold the same kind of values as the training data",
        UserWarning,
        stacklevel=2,
    )
    return None


def sample_value_range(src: Any, indexes: Sequence[int]) -> ValueRange | None:
    """Data type and 1st/99th percentiles of the valid pixels of an open rasterio dataset.

    The raster is read decimated (nearest neighbour, longest side :data:`SAMPLE_SIDE`; GDAL uses overviews
    where the file has them), so the cost does not grow with the image beyond one pass over it.

    Args:
        src: Open rasterio dataset.
        indexes: 1-based image bands (alpha excluded).

    Returns:
        The range, or ``None`` when no sampled pixel is valid.
    """
    from rasterio.enums import Resampling

    scale = max(1.0, max(src.height, src.width) / SAMPLE_SIDE)
    shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
    pixels = src.read(list(indexes), out_shape=(len(indexes), *shape), resampling=Resampling.nearest)
    values = pixels.reshape(len(indexes), -1).astype(np.float64)
    if may_have_invalid(src):
        values = values[:, valid_pixels(src, out_shape=shape).ravel()]
    if values.shape[1] == 0:
        return None
    low, high = np.percentile(values, [1.0, 99.0], axis=1)
    return ValueRange(str(src.dtypes[indexes[0] - 1]), low.tolist(), high.tolist())


def check_value_range(
    name: str,
    observed: ValueRange | None,
    trained: ValueRange | None,
    input_scale: float | None = None,
    allow_mismatch: bool = False,
) -> list[str]:
    """Refuse an input whose data type or value range differs from the training data's.

    Args:
        name: The input, named in the message.
        observed: The input's raw range (:func:`sample_value_range`); ``None`` skips the check.
        trained: The training data's range (:func:`training_range`); ``None`` skips the check.
        input_scale: Factor the input's values are multiplied by before normalising: the data type is then
            not compared, the scaled range is.
        allow_mismatch: Return the problems as warnings instead of raising.

    Returns:
        The problems found (empty when the input matches), when ``allow_mismatch``.

    Raises:
        InputMismatchError: A problem, naming the input's and the training data's type and range and the options.
    """
    if observed is None or trained is None:
        return []
    scale = 1.0 if input_scale is None else float(input_scale)
    problems = []
    if input_scale is None and observed.dtype != trained.dtype:
        problems.append(f"its data type is {observed.dtype}, the training data's {trained.dtype}")
    if len(observed.low) != len(trained.low):
        raise ValueError(f"{name} has {len(observed.low)} band(s), the training data {len(trained.low)}")
    far = []
    for b, (lo, hi, a, z) in enumerate(zip(trained.low, trained.high, observed.low, observed.high, strict=True)):
        span = max(hi - lo, 1e-6 * max(1.0, abs(hi)))
        if z * scale > hi + FAR_OUTSIDE * span or a * scale < lo - FAR_OUTSIDE * span:
            far.append(b + 1)
    if far:
        scaled = "" if input_scale is None else f" (after --input_scale {input_scale:g})"
        problems.append(f"band(s) {far} lie far outside the training range{scaled}")
    if not problems:
        return []
    ratios = [t / o for t, o in zip(trained.high, observed.high, strict=True) if o > 0 and t > 0]
    hint = "--input_scale"
    if ratios:
        hint += f" {float(np.median(ratios)):.3g} (ratio of the 99th percentiles)"
    message = (
        f"{name} is not the kind of data the model was trained on: {'; '.join(problems)}. Input: "
        f"{observed.describe()} (1st-99th percentile); training data: {trained.describe()}. Predicting anyway "
        f"gives a wrong map. Rescale the input to the training values ({hint}), or pass "
        "--allow_range_mismatch true if you know the values match."
    )
    if not allow_mismatch:
        raise InputMismatchError(message)
    return [message]
