"""GeoTIFF outputs of ``falsecl predict``: class map, confidence, probabilities and preview, for rasters of any size.

The class map is a single-band uint8 GeoTIFF on the input's grid, tiled and compressed, with a legend GIS software
reads (:mod:`falsecl.inference.legend`: colour table, GDAL category names and attribute table in the
``<map>.tif.aux.xml`` sidecar, a QGIS style ``<map>.qml``; keep the sidecars next to the map). Maps larger than
2048 px get internal overviews (mode resampling for classes, average for confidence and probabilities).

What the input says is kept as it is:

- **Bands and validity.** Alpha bands are validity, never model bands. A pixel is invalid where GDAL's dataset
  mask says so (nodata value, internal or external ``.msk`` mask, alpha 0). Invalid pixels are filled with the
  band mean (the checkpoint's normalisation mean) before normalising, so the classes of valid pixels do not depend
  on what the file stores under nodata, and they are nodata in every output: class and confidence 255,
  probabilities 255 (uint8) or NaN (float32).
- **Georeferencing.** The input's CRS and transform, or its ground control points, and its RPCs are copied as
  they are; an input without georeferencing (a plain JPEG) gives outputs without any, so GIS software shows
  them in pixel space the right way up.
- **Values.** With the training data's range (:mod:`falsecl.inference.input_check`) an input of another data
  type or value range is refused before anything is written.

Every output carries the tag ``FALSECL_OUTPUT`` (``classes``, ``confidence``, ``probabilities``), so a folder of
inputs that also holds earlier outputs can skip them (:func:`falsecl.inference.geotiff.product_output_kind`).
Pixels flow band by band through :meth:`SlidingWindowPredictor.sweep`, so memory does not grow with the image.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from falsecl.datasets.validity import band_roles, fill_invalid, image_band_indexes, may_have_invalid, valid_pixels
from falsecl.inference.geotiff import OUTPUT_TAG, check_writable, georeferencing, remove
from falsecl.inference.input_check import ValueRange, check_value_range, sample_value_range
from falsecl.inference.legend import category_sidecar_xml, colour_table, qgis_style
from falsecl.inference.preview import NODATA_CLASS, class_colours, class_labels, save_preview
from falsecl.inference.sliding_window import SlidingWindowPredictor, argmax_classes

#: Maps whose longer side exceeds this get internal overviews.
OVERVIEW_THRESHOLD = 2048

def predict_raster(
    predictor: SlidingWindowPredictor,
    src_path: str | Path,
    dst_path: str | Path,
    probabilities_path: str | Path | None = None,
    confidence_path: str | Path | None = None,
    preview_path: str | Path | None = None,
    probability_dtype: Literal["uint8", "float32"] = "uint8",
    palette: Sequence[Sequence[int]] | None = None,
    class_names: Sequence[str] | None = None,
    preview_max_size: int = 2048,
    overwrite: bool = False,
    compress: Literal["deflate", "lzw"] = "deflate",
    progress: bool = True,
    cache_mb: int = 64,
    input_scale: float | None = None,
    expected_range: ValueRange | None = None,
    allow_range_mismatch: bool = False,
) -> dict[str, Any]:
    """Write a georeferenced class map for a GeoTIFF, VRT, JPEG or PNG of any size, band by band.

    Every output is written under a temporary name in the destination folder and renamed only when complete; on
    any error the temporary files are removed, so a file under the final name is always whole.

    Args:
        predictor: The sliding-window predictor (model, normalisation, window, precision).
        src_path: Input raster; its image bands (all but alpha) must match the model.
        dst_path: Output class-map GeoTIFF (plus its ``.aux.xml`` and ``.qml`` legend sidecars).
        probabilities_path: Optional ``K``-band GeoTIFF of softmax probabilities: uint8 percent
            ``round(100 p)`` (band scale 0.01, nodata 255), or float32 (nodata NaN); bands named by class.
        confidence_path: Optional uint8 GeoTIFF of the maximum softmax probability, ``round(100 p)`` in 0-100
            (255 = nodata).
        preview_path: Optional PNG: image, class map and legend, subsampled to ``preview_max_size``.
        probability_dtype: ``"uint8"`` (4x smaller) or ``"float32"``.
        palette: RGB colour per class (:data:`falsecl.inference.preview.DEFAULT_PALETTE` for missing ones).
        class_names: Name per class (``class_<i>`` for missing ones).
        preview_max_size: Longest side of the preview's panels in pixels.
        overwrite: Replace existing outputs; refused otherwise.
        compress: GeoTIFF compression.
        progress: Show a progress bar on stderr.
        cache_mb: GDAL block cache; small so memory stays flat in the image size.
        input_scale: Multiply the input's values by this before normalising (e.g. 16-bit to the 8-bit
            training range).
        expected_range: The training data's type and value range; the input is checked against it.
        allow_range_mismatch: Warn instead of refusing an input outside ``expected_range``.

    Returns:
        Summary dict: ``height``, ``width``, ``bands`` (image bands), ``num_classes``, ``class_counts`` (pixels
        per class), ``nodata_pixels`` and the written ``outputs``.

    Raises:
        FileNotFoundError: Missing input, or missing output folder.
        ValueError: Non-raster input, band-count mismatch, or output == input.
        InputMismatchError: Data type or value range unlike the training data's (a ``ValueError``).
        PermissionError: Output folder not writable.
        FileExistsError: Output exists and ``overwrite`` is false.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    src_path = Path(src_path)
    if not src_path.is_file():
        raise FileNotFoundError(f"input raster {src_path} not found")
    outputs = {"classes": Path(dst_path)}
    for kind, path in (("probabilities", probabilities_path), ("confidence", confidence_path)):
        if path is not None:
            outputs[kind] = Path(path)
    if preview_path is not None:
        outputs["preview"] = Path(preview_path)
    for kind, path in outputs.items():
        check_writable(path, kind, overwrite)
        if path.resolve() == src_path.resolve():
            raise ValueError(f"output {path} is the input raster; choose another file name")
    temps = {kind: path.with_name(f".{path.name}.partial") for kind, path in outputs.items()}
    options = _PredictOptions(
        probability_dtype, palette, class_names, preview_max_size, compress, progress, input_scale, expected_range,
        allow_range_mismatch,
    )  # fmt: skip
    with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=cache_mb, COMPRESS_OVERVIEW=compress.upper()):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            src = rasterio.open(src_path)
        except RasterioIOError as err:
            raise ValueError(
                f"{src_path} is not a raster GDAL can read ({err}); give a GeoTIFF, VRT, JPEG or PNG"
            ) from err
        with src:
            try:
                summary = _predict_open(predictor, src, temps, options)
                for kind, tmp in temps.items():
                    os.replace(tmp, outputs[kind])
            except BaseException:
                remove([*temps.values(), *(t.with_name(t.name + ".aux.xml") for t in temps.values())])
                raise
    names, colours = summary.pop("names"), summary.pop("colours")
    # GDAL writes category names of a GeoTIFF to this PAM sidecar; written last so no rasterio handle overwrites it.
    classes = outputs["classes"]
    classes.with_name(classes.name + ".aux.xml").write_text(category_sidecar_xml(names, colours))
    classes.with_suffix(".qml").write_text(qgis_style(names, colours))
    remove(t.with_name(t.name + ".aux.xml") for t in temps.values())
    summary["outputs"] = {kind: str(p) for kind, p in outputs.items()}
    return summary


class _PredictOptions:
    """The output and input-check settings of :func:`predict_raster`, passed down as one value."""

    def __init__(
        self,
        probability_dtype: str,
        palette: Sequence[Sequence[int]] | None,
        class_names: Sequence[str] | None,
        preview_max_size: int,
        compress: str,
        progress: bool,
        input_scale: float | None,
        expected_range: ValueRange | None,
        allow_range_mismatch: bool,
    ) -> None:
        if input_scale is not None and not (math.isfinite(input_scale) and input_scale > 0):
            raise ValueError(f"--input_scale must be a positive number, got {input_scale}")
        self.probability_dtype = probability_dtype
        self.palette, self.class_names = palette, class_names
        self.preview_max_size, self.compress, self.progress = preview_max_size, compress, progress
        self.input_scale, self.expected_range, self.allow_range_mismatch = (
            input_scale,
            expected_range,
            allow_range_mismatch,
        )


def _overview_factors(height: int, width: int) -> list[int]:
    factors, f = [], 2
    while max(height, width) / f >= 256:
        factors.append(f)
        f *= 2
    return factors or [2]


def _check_input(predictor: SlidingWindowPredictor, src: Any, indexes: list[int], opts: _PredictOptions) -> None:
    """Refuse an input whose image bands or values are not what the model was trained on."""
    roles = band_roles(src)
    if roles.alpha is not None and predictor.in_channels is not None and len(indexes) != predictor.in_channels:
        raise ValueError(
            f"{src.name} has {len(indexes)} band(s) and an alpha band (band {roles.alpha}, 0/opaque transparency: "
            f"the validity mask, never a model band) but the model was trained on {predictor.in_channels}; give an "
            "image with the training bands in order"
        )
    if roles.mistagged is not None:
        warnings.warn(
            f"{src.name}: band {roles.mistagged} is tagged alpha but holds image values (GDAL's default tag for the "
            "4th band of a 4-band 8-bit GeoTIFF); it is used as an image band. Validity comes from the nodata value "
            f"only. To silence this, retag it: gdal_translate -colorinterp_{roles.mistagged} undefined in.tif out.tif",
            UserWarning,
            stacklevel=3,
        )
    predictor.check_bands(len(indexes), f"{src.name}")
    if src.driver == "VRT" and not may_have_invalid(src):
        warnings.warn(
            f"{src.name} declares no nodata: gaps between its sources read as 0 and are classified. Declare it: "
            "gdalbuildvrt -srcnodata 0 -vrtnodata 0 (or the sources' own nodata value) mosaic.vrt tiles/*.tif",
            UserWarning,
            stacklevel=3,
        )
    if opts.expected_range is not None:
        observed = sample_value_range(src, indexes)
        for message in check_value_range(
            src.name, observed, opts.expected_range, opts.input_scale, opts.allow_range_mismatch
        ):
            warnings.warn(message, UserWarning, stacklevel=3)


def _predict_open(
    predictor: SlidingWindowPredictor, src: Any, temps: dict[str, Path], opts: _PredictOptions
) -> dict[str, Any]:
    import rasterio
    from rasterio.enums import ColorInterp, Resampling
    from rasterio.windows import Window

    indexes = image_band_indexes(src)
    _check_input(predictor, src, indexes, opts)
    height, width = int(src.height), int(src.width)
    k = predictor.probe_num_classes(len(indexes))
    if k > NODATA_CLASS:
        raise ValueError(f"a uint8 class map holds at most {NODATA_CLASS} classes (255 is nodata), got {k}")
    colours = class_colours(k, opts.palette)
    names = class_labels(k, opts.class_names)
    # Only rasters that declare nodata (value, mask or alpha) pay for reading the mask.
    has_nodata = may_have_invalid(src)
    fill = predictor.mean if predictor.mean is not None else [0.0] * len(indexes)  # 0 = mean once normalised
    scale = opts.input_scale
    base = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        **georeferencing(src),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": opts.compress,
        "BIGTIFF": "IF_SAFER",
    }
    step = max(1, math.ceil(max(height, width) / opts.preview_max_size))
    preview = np.zeros((math.ceil(height / step), math.ceil(width / step)), dtype=np.uint8)
    counts = np.zeros(k, dtype=np.int64)
    nodata_pixels = 0
    bar = _Bar(predictor.num_steps(height, width), src.name) if opts.progress else None
    uint8_probs = opts.probability_dtype == "uint8"
    prob_nodata = float(NODATA_CLASS) if uint8_probs else float("nan")
    opened = {"classes": rasterio.open(temps["classes"], "w", **base, count=1, dtype="uint8", nodata=NODATA_CLASS)}
    try:
        opened["classes"].write_colormap(1, colour_table(colours))
        opened["classes"].set_band_description(1, "class")
        if "confidence" in temps:
            opened["confidence"] = rasterio.open(
                temps["confidence"], "w", **base, count=1, dtype="uint8", nodata=NODATA_CLASS
            )
            opened["confidence"].set_band_description(1, "max softmax probability (percent)")
        if "probabilities" in temps:
            probs_out = rasterio.open(
                temps["probabilities"], "w", **base, count=k, dtype=opts.probability_dtype, nodata=prob_nodata,
                interleave="pixel" if k <= 4 else "band", photometric="MINISBLACK",
            )  # fmt: skip
            opened["probabilities"] = probs_out
            probs_out.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (k - 1)  # class bands, not RGB
            for i, name in enumerate(names):
                probs_out.set_band_description(i + 1, name)
            if uint8_probs:
                probs_out.scales = [0.01] * k  # percent: GDAL/QGIS show the probability itself
        for kind, dst in opened.items():
            dst.update_tags(**{OUTPUT_TAG: kind})

        def read(r0: int, r1: int, c0: int, c1: int) -> Tensor:
            window = Window(c0, r0, c1 - c0, r1 - r0)
            pixels = src.read(indexes, window=window, out_dtype="float32")
            if scale is not None:
                pixels *= scale
            if has_nodata:
                fill_invalid(pixels, valid_pixels(src, window), fill)
            return torch.from_numpy(pixels)

        def emit(r0: int, c0: int, sums: Tensor, norm: Tensor) -> None:
            nonlocal nodata_pixels
            n, m = sums.shape[1:]
            window = Window(c0, r0, m, n)
            labels = argmax_classes(sums).cpu().numpy()
            invalid = None
            if has_nodata:
                invalid = ~valid_pixels(src, window)
                labels[invalid] = NODATA_CLASS
                nodata_pixels += int(invalid.sum())
            opened["classes"].write(labels, 1, window=window)
            counts[:] += np.bincount(labels.ravel(), minlength=256)[:k]
            if "confidence" in opened or "probabilities" in opened:
                probs = (sums / norm).softmax(dim=0)
                if "confidence" in opened:
                    conf = (probs.max(dim=0).values * 100).round().to(torch.uint8).cpu().numpy()
                    if invalid is not None:
                        conf[invalid] = NODATA_CLASS
                    opened["confidence"].write(conf, 1, window=window)
                if "probabilities" in opened:
                    if uint8_probs:
                        probs = (probs * 100).round().to(torch.uint8)
                    values = probs.cpu().numpy()
                    if invalid is not None:
                        values[:, invalid] = prob_nodata
                    opened["probabilities"].write(values, window=window)
            # Preview: the pixels whose global row and column are multiples of `step`.
            fr, fc = (-r0) % step, (-c0) % step
            if fr < n and fc < m:
                sub = labels[fr::step, fc::step]
                pr, pc = (r0 + fr) // step, (c0 + fc) // step
                preview[pr : pr + sub.shape[0], pc : pc + sub.shape[1]] = sub

        predictor.sweep(height, width, read, emit, on_band=bar.advance if bar else None)
        if max(height, width) > OVERVIEW_THRESHOLD:
            factors = _overview_factors(height, width)
            opened["classes"].build_overviews(factors, Resampling.mode)
            opened["classes"].update_tags(ns="rio_overview", resampling="mode")
            for kind in ("confidence", "probabilities"):
                if kind in opened:
                    opened[kind].build_overviews(factors, Resampling.average)
    finally:
        for dst in opened.values():
            dst.close()
        if bar is not None:
            bar.close()
    if "preview" in temps:
        bands = indexes[:3]
        image = src.read(bands, out_shape=(len(bands), *preview.shape), resampling=Resampling.nearest)
        save_preview(
            temps["preview"], image, preview, names, colours, title=Path(src.name).name, counts=counts.tolist()
        )
    return {
        "height": height,
        "width": width,
        "bands": len(indexes),
        "num_classes": k,
        "class_counts": counts.tolist(),
        "nodata_pixels": nodata_pixels,
        "names": names,
        "colours": colours,
    }


class _Bar:
    """Minimal wrapper over a rich progress bar (advance/close)."""

    def __init__(self, total: int, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]predict[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._progress.add_task(Path(label).name, total=total)
        self._progress.start()

    def advance(self) -> None:
        self._progress.advance(self._task)

    def close(self) -> None:
        self._progress.stop()
