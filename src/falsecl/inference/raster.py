"""GeoTIFF outputs of ``falsecl predict``: class map, confidence, probabilities and preview, for rasters of any size.

The class map is a single-band uint8 GeoTIFF with the input's CRS and transform, tiled and compressed, with a
colour table and GDAL category names plus a raster attribute table (value, class name, RGB), so QGIS and ArcGIS
show a legend. GeoTIFF has no tag for category names: GDAL itself keeps them in a ``<map>.tif.aux.xml`` (PAM)
sidecar, which is what is written here (keep it next to the map). Input nodata (the nodata value, an internal
mask or an alpha band) stays nodata: class 255, declared as the output's nodata. Maps larger than 2048 px get
internal overviews (mode resampling for classes, average for confidence).

Pixels flow band by band through :meth:`SlidingWindowPredictor.sweep`, so memory does not grow with the image.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

import numpy as np
import torch
from torch import Tensor

from falsecl.inference.preview import NODATA_CLASS, class_colours, class_labels, save_preview
from falsecl.inference.sliding_window import SlidingWindowPredictor, argmax_classes

#: Maps whose longer side exceeds this get internal overviews.
OVERVIEW_THRESHOLD = 2048


def category_sidecar_xml(names: Sequence[str], colours: Sequence[Sequence[int]]) -> str:
    """GDAL PAM XML giving band 1 category names and a thematic raster attribute table.

    Args:
        names: Class name per class value ``0..K-1``.
        colours: RGB per class.

    Returns:
        The content of a ``.aux.xml`` file (GDAL reads it as the band's ``Categories`` and RAT).
    """
    cats = "".join(f"      <Category>{escape(n)}</Category>\n" for n in names)
    fields = [("Value", 0, 5), ("Class_Name", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8)]
    defs = "".join(
        f'      <FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>\n'
        for i, (n, t, u) in enumerate(fields)
    )
    rows = "".join(
        f'      <Row index="{i}"><F>{i}</F><F>{escape(n)}</F><F>{c[0]}</F><F>{c[1]}</F><F>{c[2]}</F></Row>\n'
        for i, (n, c) in enumerate(zip(names, colours, strict=True))
    )
    return (
        '<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>\n'
        f"{cats}    </CategoryNames>\n"
        '    <GDALRasterAttributeTable tableType="thematic">\n'
        f"{defs}{rows}    </GDALRasterAttributeTable>\n  </PAMRasterBand>\n</PAMDataset>\n"
    )


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
) -> dict[str, Any]:
    """Write a georeferenced class map for a GeoTIFF, VRT, JPEG or PNG of any size, band by band.

    Every output is written under a temporary name in the destination folder and renamed only when complete; on
    any error the temporary files are removed, so a file under the final name is always whole.

    Args:
        predictor: The sliding-window predictor (model, normalisation, window, precision).
        src_path: Input raster; its band count must match the model.
        dst_path: Output class-map GeoTIFF (plus its ``.aux.xml`` sidecar with the category names).
        probabilities_path: Optional ``K``-band GeoTIFF of softmax probabilities (uint8 = round(255 p), or float32).
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

    Returns:
        Summary dict: ``height``, ``width``, ``bands``, ``num_classes``, ``class_counts`` (pixels per class),
        ``nodata_pixels`` and the written ``outputs``.

    Raises:
        FileNotFoundError: Missing input, or missing output folder.
        ValueError: Non-raster input, band-count mismatch, or output == input.
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
                summary = _predict_open(
                    predictor,
                    src,
                    temps,
                    probability_dtype,
                    palette,
                    class_names,
                    preview_max_size,
                    compress,
                    progress,
                )
                for kind, tmp in temps.items():
                    os.replace(tmp, outputs[kind])
            except BaseException:
                remove([*temps.values(), *(t.with_name(t.name + ".aux.xml") for t in temps.values())])
                raise
    names, colours = summary.pop("names"), summary.pop("colours")
    # GDAL writes category names of a GeoTIFF to this PAM sidecar; written last so no rasterio handle overwrites it.
    sidecar = outputs["classes"].with_name(outputs["classes"].name + ".aux.xml")
    sidecar.write_text(category_sidecar_xml(names, colours))
    remove(t.with_name(t.name + ".aux.xml") for t in temps.values())
    summary["outputs"] = {kind: str(p) for kind, p in outputs.items()}
    return summary


def _overview_factors(height: int, width: int) -> list[int]:
    factors, f = [], 2
    while max(height, width) / f >= 256:
        factors.append(f)
        f *= 2
    return factors or [2]


def _predict_open(
    predictor: SlidingWindowPredictor,
    src: Any,
    temps: dict[str, Path],
    probability_dtype: str,
    palette: Sequence[Sequence[int]] | None,
    class_names: Sequence[str] | None,
    preview_max_size: int,
    compress: str,
    progress: bool,
) -> dict[str, Any]:
    import rasterio
    from rasterio.enums import MaskFlags, Resampling
    from rasterio.windows import Window

    predictor.check_bands(int(src.count), f"{src.name}")
    height, width = int(src.height), int(src.width)
    k = predictor.probe_num_classes(int(src.count))
    if k > NODATA_CLASS:
        raise ValueError(f"a uint8 class map holds at most {NODATA_CLASS} classes (255 is nodata), got {k}")
    colours = class_colours(k, palette)
    names = class_labels(k, class_names)
    # Only rasters that declare nodata (value, mask or alpha) pay for reading the mask.
    has_nodata = any(MaskFlags.all_valid not in flags for flags in src.mask_flag_enums)
    base = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "crs": src.crs,
        "transform": src.transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": compress,
        "BIGTIFF": "IF_SAFER",
    }
    step = max(1, math.ceil(max(height, width) / preview_max_size))
    preview = np.zeros((math.ceil(height / step), math.ceil(width / step)), dtype=np.uint8)
    counts = np.zeros(k, dtype=np.int64)
    nodata_pixels = 0
    bar = _Bar(predictor.num_steps(height, width), src.name) if progress else None
    opened = {"classes": rasterio.open(temps["classes"], "w", **base, count=1, dtype="uint8", nodata=NODATA_CLASS)}
    try:
        opened["classes"].write_colormap(1, {i: (*colours[i], 255) for i in range(k)} | {NODATA_CLASS: (0, 0, 0, 0)})
        opened["classes"].set_band_description(1, "class")
        if "confidence" in temps:
            opened["confidence"] = rasterio.open(
                temps["confidence"], "w", **base, count=1, dtype="uint8", nodata=NODATA_CLASS
            )
            opened["confidence"].set_band_description(1, "max softmax probability (percent)")
        if "probabilities" in temps:
            opened["probabilities"] = rasterio.open(
                temps["probabilities"],
                "w",
                **base,
                count=k,
                dtype=probability_dtype,
                interleave="pixel" if k <= 4 else "band",
            )
            for i, name in enumerate(names):
                opened["probabilities"].set_band_description(i + 1, name)

        def read(r0: int, r1: int, c0: int, c1: int) -> Tensor:
            return torch.from_numpy(src.read(window=Window(c0, r0, c1 - c0, r1 - r0), out_dtype="float32"))

        def emit(r0: int, c0: int, sums: Tensor, norm: Tensor) -> None:
            nonlocal nodata_pixels
            n, m = sums.shape[1:]
            window = Window(c0, r0, m, n)
            labels = argmax_classes(sums).cpu().numpy()
            invalid = None
            if has_nodata:
                invalid = src.dataset_mask(window=window) == 0
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
                    if probability_dtype == "uint8":
                        probs = (probs * 255).round().to(torch.uint8)
                    opened["probabilities"].write(probs.cpu().numpy(), window=window)
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
            if "confidence" in opened:
                opened["confidence"].build_overviews(factors, Resampling.average)
    finally:
        for dst in opened.values():
            dst.close()
        if bar is not None:
            bar.close()
    if "preview" in temps:
        bands = list(range(1, min(3, int(src.count)) + 1))
        image = src.read(bands, out_shape=(len(bands), *preview.shape), resampling=Resampling.nearest)
        save_preview(
            temps["preview"], image, preview, names, colours, title=Path(src.name).name, counts=counts.tolist()
        )
    return {
        "height": height,
        "width": width,
        "bands": int(src.count),
        "num_classes": k,
        "class_counts": counts.tolist(),
        "nodata_pixels": nodata_pixels,
        "names": names,
        "colours": colours,
    }


def check_writable(path: Path, kind: str, overwrite: bool) -> None:
    """Refuse an output in a missing or read-only folder, a folder, or an existing file unless ``overwrite``."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write the {kind} output {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write the {kind} output {path}: folder {parent} is not writable")
    if path.is_dir():
        raise ValueError(f"the {kind} output {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")


def remove(paths: Iterable[Path | str]) -> None:
    """Delete files that may or may not exist."""
    for p in paths:
        Path(p).unlink(missing_ok=True)


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
