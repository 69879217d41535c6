r"""``falsecl evaluate`` and ``falsecl predict``: sliding-window inference from a fine-tuning checkpoint.

Both load a :class:`~falsecl.tasks.segmentation.SegmentationTask` checkpoint, whose hyper-parameters hold the
band statistics, the classes (names, colours) and the training data, so raw images are normalised exactly as in
training and scored or mapped with the right classes, and both go through the one
:class:`~falsecl.inference.SlidingWindowPredictor`.

Usage::

    falsecl evaluate --checkpoint runs/ft --split test --window 512 --overlap 0.25 --tta true
    falsecl predict --checkpoint runs/ft --input scene.tif --output scene_classes.tif \\
        --preview scene_classes.png --confidence scene_confidence.tif
    falsecl predict --checkpoint runs/ft --input tiles/ mosaic.vrt 'more/*.tif' --output_dir maps/ --preview true
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from falsecl.inference import Blend, SlidingWindowPredictor
from falsecl.inference.checkpoint import (
    check_same_classes,
    classes_of,
    describe_checkpoint,
    load_task,
    resolve_checkpoint,
    resolve_data,
    resolve_device,
)
from falsecl.inference.evaluation import EvalSample, confusion_of_samples, dataset_samples
from falsecl.inference.input_check import training_range
from falsecl.inference.inputs import collect_inputs
from falsecl.metrics import format_metrics_table, json_ready, metrics_from_confusion, plot_confusion_matrix
from falsecl.model_card import held_out_note
from falsecl.tasks.segmentation import SegmentationTask

#: Errors reported as a one-line message and exit code 2 instead of a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError)

__all__ = [
    "USER_ERRORS",
    "InputsFailed",
    "evaluate",
    "evaluate_images",
    "evaluate_main",
    "load_task",
    "make_predictor",
    "predict",
    "predict_main",
    "resolve_checkpoint",
    "resolve_device",
]


class InputsFailed(RuntimeError):
    """Some inputs of a multi-file ``predict`` failed (the others were written); exit code 1."""


def make_predictor(
    task: SegmentationTask,
    window: int,
    overlap: float,
    blend: Blend,
    tta: bool,
    batch_size: int,
    precision: str = "32-true",
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
        precision=precision,
    )


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
        samples: :class:`~falsecl.inference.evaluation.EvalSample` region readers, or whole raw images
            ``{"image": (C, H, W), "mask": (H, W)}`` (never centre-cropped).
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


def _whole_images(dataset: str, root: str, split: str, palette: str | None, bands: Any) -> Any:
    from falsecl.datamodules import SegmentationDataModule

    dm = SegmentationDataModule(dataset=dataset, root=root, palette=palette, bands=bands)
    return dm.whole_image_dataset(split)


def _run_folder(path: Path) -> Path | None:
    """The run folder of a checkpoint ``runs/<name>/checkpoints/*.ckpt`` (``None`` elsewhere)."""
    return path.parent.parent if path.parent.name == "checkpoints" else None


def _update_model_card(path: Path, split: str, metrics: Mapping[str, Any]) -> None:
    """Add the metrics to the run's ``model.json`` (``test_metrics`` for the test split)."""
    run = _run_folder(path)
    if run is None:
        return
    try:
        from falsecl.model_card import update_model_card
    except ImportError:  # a falsecl without model cards
        return
    per_class = {name: m["IoU"] for name, m in metrics["per_class"].items()}
    fields = {k: metrics[k] for k in ("mIoU", "mF1", "OA", "kappa", "pixels")}
    fields |= {"IoU": per_class, "settings": metrics["settings"], "checkpoint": metrics["checkpoint"]}
    update_model_card(run, {f"{split}_metrics": json_ready(fields)})


def evaluate(
    checkpoint: str,
    dataset: str | None = None,
    root: str | None = None,
    split: str = "test",
    palette: str | None = None,
    bands: str | list[int] | None = None,
    window: int = 512,
    overlap: float = 0.25,
    blend: Literal["gaussian", "mean"] = "gaussian",
    tta: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    precision: Literal["auto", "bf16-mixed", "32-true"] = "32-true",
    output_stride: int | None = None,
    output_dir: str | None = None,
    max_images: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
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
        The metrics dict.
    """
    path = resolve_checkpoint(checkpoint)
    task = load_task(path, device, output_stride)
    dataset, root, palette, bands = resolve_data(task, dataset, root, palette, bands)
    predictor = make_predictor(task, window, overlap, blend, tta, batch_size, precision)
    images = _whole_images(dataset, root, split, palette, bands)
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
    out.mkdir(parents=True, exist_ok=True)
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
        "output_stride": int(task.hp.output_stride),
        "seconds": round(seconds, 3),
        "allow_held_out": held_out is not None,
    }
    (out / "metrics.json").write_text(json.dumps(json_ready(metrics), indent=2, allow_nan=False) + "\n")
    header = (
        f"# Evaluation: {dataset} / {split} ({count} whole images)\n\n"
        f"checkpoint: `{path.name}` ({scored['kind']}: {scored['chosen']})\n\n"
        f"settings: window {window}, overlap {overlap}, {blend} blend, tta {tta}, {predictor.precision}, "
        f"output stride {task.hp.output_stride}\n\n"
    )
    if (
        scored["kind"] == "best-by-val"
        and split == scored["selected_on"]["split"]
        and dataset == task.hp.get("data_name")
    ):
        header += "**Note:** this split chose the checkpoint, so these numbers are optimistic.\n\n"
    if held_out:
        header += f"**Note:** {held_out}.\n\n"
    table = format_metrics_table(metrics)
    (out / "metrics.md").write_text(header + table)
    plot_confusion_matrix(cm, metrics["class_names"], out / "confusion_matrix.png")
    if count == len(images):  # a partial evaluation (--max_images) is no model-card figure
        _update_model_card(path, split, metrics)
    print(header + table)
    print(f"reports written to {out}")
    return metrics


def _outputs_for(
    src: Path, output: str | None, output_dir: str | None, extras: Mapping[str, bool | str | None]
) -> dict[str, str | None]:
    """Output paths of one input: ``--output`` and explicit paths, or names derived inside ``--output_dir``."""
    suffix = {"probabilities": "_probabilities.tif", "confidence": "_confidence.tif", "preview": "_preview.png"}
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


def predict(
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
    blend: Literal["gaussian", "mean"] = "gaussian",
    tta: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    precision: Literal["auto", "bf16-mixed", "32-true"] = "auto",
    output_stride: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    input_scale: float | None = None,
    allow_range_mismatch: bool = False,
) -> list[dict[str, Any]]:
    """Write georeferenced class maps (uint8 GeoTIFF, same CRS/transform) for rasters of any size.

    The model is loaded once. Class names and colours come from the checkpoint and go into the map's colour
    table and category names (``<map>.tif.aux.xml``); input nodata stays nodata (255). With several inputs,
    a file that fails is reported by name and the others are still written; the exit code is then 1.

    Args:
        checkpoint: Fine-tuning checkpoint, or the run folder ``runs/<name>`` (its best checkpoint).
        input: One or more GeoTIFF / VRT / JPEG / PNG files, folders or globs (``--input a.tif b.tif``,
            ``--input tiles/``, ``--input 'tiles/*.tif'``, ``--input mosaic.vrt``), with the model's bands.
        output: Class-map GeoTIFF for a single input.
        output_dir: Folder for several inputs: ``<stem>_classes.tif`` (and ``_confidence.tif``,
            ``_probabilities.tif``, ``_preview.png`` when asked with ``true``).
        probabilities: K-band probability GeoTIFF (a path with ``--output``, ``true`` with ``--output_dir``).
        probability_dtype: ``uint8`` (255 = probability 1) or ``float32``.
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
        input_scale: Multiply the inputs' values by this before normalising, e.g. ``0.0039`` (1/257) for 16-bit
            scenes on a model trained on 8-bit data. An input whose data type or value range differs from the
            training data's (recorded in the checkpoint) is refused otherwise.
        allow_range_mismatch: Predict on such an input anyway (with a warning).

    Returns:
        One summary per written input (size, pixels per class, seconds, outputs).

    Raises:
        InputsFailed: Some inputs failed (after all the others were processed).
    """
    found = collect_inputs(input)
    for skipped, kind in found.skipped:
        print(f"skipped {skipped}: a falsecl {kind} output (name it explicitly to predict on it)", file=sys.stderr)
    files = found.files
    if not files:
        for message in found.unmatched:
            print(f"FAILED {message}", file=sys.stderr, flush=True)
        raise InputsFailed(f"nothing to predict: {'; '.join(found.unmatched)}")
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
    extras = {"probabilities": probabilities, "confidence": confidence, "preview": preview}
    plans = [(src, _outputs_for(src, output, output_dir, extras)) for src in files]
    task = load_task(checkpoint, device, output_stride)
    names, colours = classes_of(task)
    predictor = make_predictor(task, window, overlap, blend, tta, batch_size, precision)
    expected = training_range(task.hp, str(checkpoint))
    summaries: list[dict[str, Any]] = []
    failed: list[str | Path] = list(found.unmatched)
    for message in found.unmatched:  # reported like a bad file; the other inputs are still predicted
        print(f"FAILED {message}", file=sys.stderr, flush=True)
    for src, outs in plans:
        start = time.perf_counter()
        try:
            summary = predictor.predict_raster(
                src,
                str(outs["classes"]),
                probabilities_path=outs["probabilities"],
                confidence_path=outs["confidence"],
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
        except Exception as err:  # a bad file must not stop the others
            if len(plans) == 1 and output_dir is None and not found.unmatched:
                raise
            failed.append(src)
            print(f"FAILED {src}: {err}", file=sys.stderr, flush=True)
            continue
        seconds = time.perf_counter() - start
        summary["seconds"] = round(seconds, 3)
        mpix = summary["height"] * summary["width"] / 1e6
        print(
            f"{src}: {summary['width']} x {summary['height']} px, {seconds:.1f} s, {mpix / seconds:.2f} MP/s "
            f"-> {summary['outputs']['classes']}",
            flush=True,
        )
        summaries.append(summary)
    if failed:
        total = len(plans) + len(found.unmatched)
        raise InputsFailed(f"{len(failed)} of {total} inputs failed: {', '.join(map(str, failed))}")
    return summaries


def _run(func: Any, argv: Sequence[str] | None, prog: str) -> int:
    from jsonargparse import auto_cli

    try:
        auto_cli(func, args=list(argv) if argv is not None else None, as_positional=False, prog=prog)
    except InputsFailed as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    except USER_ERRORS as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


def _gather_inputs(argv: Sequence[str]) -> list[str]:
    """``--input a b c`` (as a shell expands a glob) -> ``--input '["a", "b", "c"]'`` for the parser."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] == "--input":
            values = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                values.append(argv[i + 1])
                i += 1
            out.append(json.dumps(values) if len(values) > 1 else (values[0] if values else ""))
            if not values:
                out.pop()
        i += 1
    return out


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Run ``falsecl evaluate`` (see :func:`evaluate`); returns the exit code."""
    return _run(evaluate, argv, "falsecl evaluate")


def predict_main(argv: Sequence[str] | None = None) -> int:
    """Run ``falsecl predict`` (see :func:`predict`); returns 0, 1 when some inputs failed, 2 on a usage error."""
    args = list(sys.argv[1:] if argv is None else argv)
    return _run(predict, _gather_inputs(args), "falsecl predict")
