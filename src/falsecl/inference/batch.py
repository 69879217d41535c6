"""Class maps for many rasters with one loaded model (``falsecl predict``'s work).

Inputs are files, folders (their rasters), globs and VRT mosaics; outputs are named by ``--output`` for one
input or derived from each input's name inside ``--output_dir``. A batch is judged file by file: a file that
fails, a folder that holds no raster and a glob that matches nothing are each reported and the other inputs are
still written; :class:`InputsFailed` then says which failed. The product's own earlier outputs found in a folder
or by a glob (they carry the ``FALSECL_OUTPUT`` tag, whatever their names) are skipped and listed, never taken for
imagery; a file named explicitly is used as given.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from falsecl.inference.checkpoint import classes_of, load_task, make_predictor
from falsecl.inference.geotiff import product_output_kind
from falsecl.inference.input_check import training_range
from falsecl.inference.raster import predict_raster
from falsecl.inference.sliding_window import Blend
from falsecl.inference.vector import polygonize_class_map

#: File suffixes taken from a folder given to ``predict --input``.
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".png", ".jpg", ".jpeg", ".img")


class InputsFailed(RuntimeError):
    """Some inputs of a multi-file ``predict`` failed (the others were written); exit code 1."""


@dataclass
class InputFiles:
    """What ``--input`` names.

    Attributes:
        files: Rasters to predict, in order, each once.
        unmatched: ``(item, message)`` per folder or glob that matched no raster (reported as failed inputs).
        skipped: ``(file, kind)`` per product output (``kind`` = ``classes``, ``confidence`` ...) found in a
            folder or by a glob and left out.
    """

    files: list[Path] = field(default_factory=list)
    unmatched: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def collect_inputs(inputs: str | Sequence[str]) -> InputFiles:
    """Expand ``--input`` items: files as given, folders (their rasters, sorted), globs (sorted), VRT mosaics.

    Args:
        inputs: One item or several (``--input a.tif tiles/ 'more/*.tif'``).

    Returns:
        The files to predict, the items that matched nothing and the product outputs left out.
    """
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    out = InputFiles()
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
            nothing = f"folder {path} holds no raster ({', '.join(RASTER_SUFFIXES)})"
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            nothing = f"no file matches {item!r}"
        else:
            out.files.append(path)  # a missing file is reported when it is predicted on
            continue
        kept = []
        for candidate in found:
            kind = product_output_kind(candidate)
            if kind is None:
                kept.append(candidate)
            else:
                out.skipped.append((candidate, kind))
        if not kept:
            skipped = len(found) - len(kept)
            out.unmatched.append((item, f"only falsecl outputs ({skipped} skipped)" if skipped else nothing))
        out.files += kept
    out.files = list(dict.fromkeys(out.files))
    return out


def expand_inputs(inputs: str | Sequence[str]) -> list[Path]:
    """The files :func:`collect_inputs` finds (items that match nothing and product outputs left out)."""
    return collect_inputs(inputs).files


def outputs_for(
    src: Path, output: str | None, output_dir: str | None, extras: Mapping[str, bool | str | None]
) -> dict[str, str | None]:
    """Output paths of one input: ``--output`` and explicit paths, or names derived inside ``--output_dir``."""
    suffix = {
        "probabilities": "_probabilities.tif",
        "confidence": "_confidence.tif",
        "preview": "_preview.png",
        "vector": "_polygons.gpkg",
    }
    if output_dir is None:
        for kind, value in extras.items():
            if value is True:
                raise ValueError(f"--{kind} true needs --output_dir; with --output give a file name")
        return {"classes": output, **{k: v if isinstance(v, str) else None for k, v in extras.items()}}
    folder = Path(output_dir)
    out: dict[str, str | None] = {"classes": str(folder / f"{src.stem}_classes.tif")}
    for kind, value in extras.items():
        if isinstance(value, str):
            raise ValueError(f"with --output_dir, --{kind} takes true/false (files are named after each input)")
        out[kind] = str(folder / f"{src.stem}{suffix[kind]}") if value else None
    return out


def plan_outputs(
    files: Sequence[Path], output: str | None, output_dir: str | None, extras: Mapping[str, bool | str | None]
) -> list[tuple[Path, dict[str, str | None]]]:
    """Each input with its output paths; refuses ambiguous or colliding outputs before any work.

    Raises:
        ValueError: Neither or both of ``output`` / ``output_dir``, several inputs for one ``output``, or inputs
            whose derived names collide.
    """
    if output_dir is None and (output is None or len(files) != 1):
        raise ValueError(
            f"{len(files)} inputs: give --output_dir (one map per input)"
            if output is not None
            else "give --output (one input) or --output_dir"
        )
    if output_dir is not None:
        if output is not None:
            raise ValueError("give either --output (one input) or --output_dir, not both")
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        stems = [f.stem for f in files]
        clash = sorted({s for s in stems if stems.count(s) > 1})
        if clash:
            raise ValueError(f"several inputs are named {clash}: their outputs would collide in {output_dir}")
    return [(src, outputs_for(src, output, output_dir, extras)) for src in files]


def predict_files(
    checkpoint: str,
    input: str | list[str],
    output: str | None = None,
    output_dir: str | None = None,
    probabilities: bool | str | None = None,
    probability_dtype: Literal["uint8", "float32"] = "uint8",
    confidence: bool | str | None = None,
    preview: bool | str | None = None,
    preview_max_size: int = 2048,
    window: int = 512,
    overlap: float = 0.25,
    blend: Blend = "gaussian",
    tta: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    precision: Literal["auto", "bf16-mixed", "32-true"] = "auto",
    output_stride: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    vector: bool | str | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    input_scale: float | None = None,
    allow_range_mismatch: bool = False,
    on_written: Callable[[Path, dict[str, Any], float], None] | None = None,
    on_failed: Callable[[Path, Exception], None] | None = None,
    on_skipped: Callable[[Path, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Write georeferenced class maps (uint8 GeoTIFF, same CRS/transform) for rasters of any size.

    The model is loaded once. Class names and colours come from the checkpoint and go into the map's colour
    table, category names (``<map>.tif.aux.xml``) and QGIS style (``<map>.qml``); input nodata (nodata value,
    masks, alpha) stays nodata (255). An input whose data type or value range differs from the training data's
    (recorded in the checkpoint) is refused unless ``input_scale`` or ``allow_range_mismatch`` says otherwise. With
    several inputs, a file that fails, a folder holding no raster or a glob matching nothing is reported by name
    and the others are still written; the exit code is then 1.

    Args:
        checkpoint: Fine-tuning checkpoint, or the run folder ``runs/<name>`` (its best checkpoint).
        input: One or more GeoTIFF / VRT / JPEG / PNG files, folders or globs (``--input a.tif b.tif``,
            ``--input tiles/``, ``--input 'tiles/*.tif'``, ``--input mosaic.vrt``), with the model's bands.
        output: Class-map GeoTIFF for a single input.
        output_dir: Folder for several inputs: ``<stem>_classes.tif`` (and ``_confidence.tif``,
            ``_probabilities.tif``, ``_preview.png`` when asked with ``true``).
        probabilities: K-band probability GeoTIFF (a path with ``--output``, ``true`` with ``--output_dir``).
        probability_dtype: ``uint8`` (percent 0-100, nodata 255) or ``float32`` (nodata NaN).
        confidence: Maximum softmax probability as uint8 percent 0-100 (a path, or ``true`` with ``--output_dir``).
        preview: PNG with the image, the class map and the legend (a path, or ``true`` with ``--output_dir``).
        preview_max_size: Longest side of the preview panels.
        window: Sliding-window size in pixels.
        overlap: Fraction of overlap between windows, in [0, 1).
        blend: ``gaussian`` or ``mean`` blending of overlapping logits.
        tta: Flip test-time augmentation.
        batch_size: Windows per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``auto`` (bf16 autocast where the hardware runs bf16 natively), ``bf16-mixed`` or ``32-true``.
        output_stride: Run DeepLabv3+ at output stride 8 or 16 (the checkpoint's own by default; 16 is faster).
        overwrite: Replace existing outputs.
        progress: Show a progress bar.
        vector: Polygons of the class map (a path with ``--output``: ``.gpkg``, ``.shp``, ``.geojson`` or
            ``.fgb``; ``true`` with ``--output_dir``: ``<stem>_polygons.gpkg``), one per connected region with
            ``class_id``, ``class_name``, ``pixels``, ``area_m2`` (projected CRS) and mean ``confidence``; see
            :mod:`falsecl.inference.vector`.
        min_area: With ``vector``: regions below this area (square metres; pixels when the CRS is not
            projected) take their largest neighbour's class before polygonising.
        simplify: With ``vector``: simplification tolerance in map units (0: exact pixel outlines).
        input_scale: Multiply the inputs' values by this before normalising, e.g. ``0.0039`` (1/257) for 16-bit
            scenes on a model trained on 8-bit data.
        allow_range_mismatch: Predict on an input of another data type or value range than the training data's
            anyway (with a warning).
        on_written: Called with each input, its summary and the seconds it took, once its outputs are written.
        on_failed: Called with each input that failed (several inputs, or ``--output_dir``) and the error; a
            folder or glob that matched nothing comes as a path with a ``FileNotFoundError``.
        on_skipped: Called with each earlier product output left out of a folder or glob, and its kind.

    Returns:
        One summary per written input (size, pixels per class, seconds, outputs): the output of
        :func:`falsecl.inference.raster.predict_raster` plus ``seconds``.

    Raises:
        InputsFailed: Some inputs failed (after all the others were processed).
    """
    found = collect_inputs(input)
    for path, kind in found.skipped:
        if on_skipped is not None:
            on_skipped(path, kind)
    unmatched = [(Path(item), FileNotFoundError(message)) for item, message in found.unmatched]
    if not found.files:
        for path, err in unmatched:
            if on_failed is not None:
                on_failed(path, err)
        raise InputsFailed(f"nothing to predict: {'; '.join(str(err) for _, err in unmatched)}")
    extras = {"probabilities": probabilities, "confidence": confidence, "preview": preview, "vector": vector}
    plans = plan_outputs(found.files, output, output_dir, extras)
    task = load_task(checkpoint, device, output_stride)
    names, colours = classes_of(task)
    predictor = make_predictor(task, window, overlap, blend, tta, batch_size, precision)
    expected = training_range(task.hp, str(checkpoint))
    summaries: list[dict[str, Any]] = []
    failed: list[Path] = []
    for path, err in unmatched:  # reported like a bad file; the other inputs are still predicted
        failed.append(path)
        if on_failed is not None:
            on_failed(path, err)
    for src, outs in plans:
        start = time.perf_counter()
        # Polygons carry the mean confidence: compute it even when no confidence raster is asked for.
        scratch = None if outs["vector"] is None or outs["confidence"] else f"{outs['classes']}.confidence.tmp.tif"
        if scratch is not None:
            Path(scratch).unlink(missing_ok=True)  # left by an interrupted run
        try:
            summary = predict_raster(
                predictor,
                src,
                str(outs["classes"]),
                probabilities_path=outs["probabilities"],
                confidence_path=outs["confidence"] or scratch,
                preview_path=outs["preview"],
                probability_dtype=probability_dtype,
                palette=colours,
                class_names=names,
                preview_max_size=preview_max_size,
                overwrite=overwrite,
                progress=progress,
                input_scale=input_scale,
                expected_range=expected,
                allow_range_mismatch=allow_range_mismatch,
            )
            if outs["vector"] is not None:
                polygons = polygonize_class_map(
                    str(outs["classes"]),
                    outs["vector"],
                    names,
                    outs["confidence"] or scratch,
                    min_area,
                    simplify,
                    overwrite=overwrite,
                )
                summary["outputs"]["vector"], summary["polygons"] = outs["vector"], polygons.features
                if scratch is not None:
                    summary["outputs"].pop("confidence", None)
        except Exception as err:  # a bad file must not stop the others
            if len(plans) == 1 and output_dir is None and not unmatched:
                raise
            failed.append(src)
            if on_failed is not None:
                on_failed(src, err)
            continue
        finally:
            if scratch is not None:
                Path(scratch).unlink(missing_ok=True)
        seconds = time.perf_counter() - start
        summary["seconds"] = round(seconds, 3)
        if on_written is not None:
            on_written(src, summary, seconds)
        summaries.append(summary)
    if failed:
        total = len(plans) + len(unmatched)
        raise InputsFailed(f"{len(failed)} of {total} inputs failed: {', '.join(map(str, failed))}")
    return summaries
