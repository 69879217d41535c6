"""The model card ``<run>/model.json`` of a fine-tuning run.

The card says what a fine-tuned model is, without loading it: the dataset, class names and colours, bands and
normalisation, label fraction and subset file, where the encoder came from (backbone file, pretraining method,
number of pretraining images) and, once ``falsecl evaluate`` has run, the test metrics. Writers merge into the
existing card (:func:`update_model_card`), so fine-tuning (:class:`ModelCardCallback`) and evaluation each add
their part.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)

#: File name of the card inside a run folder.
MODEL_CARD = "model.json"

#: What the card and ``metrics.md`` say of a run fine-tuned with ``--allow_held_out``.
HELD_OUT_NOTE = "held-out data was used for training/selection (--allow_held_out)"


def _truthy(value: Any) -> bool:
    """``True``, a non-zero number or a string such as ``"true"``/``"yes"``/``"1"``; anything else is false."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1", "on")
    if isinstance(value, bool | int | float):
        return bool(value)
    return False


def held_out_note(hparams: Any) -> str | None:
    """:data:`HELD_OUT_NOTE` when a checkpoint's hyper-parameters record a truthy ``allow_held_out``, else ``None``.

    Read defensively: hyper-parameters without the flag (older checkpoints) or with an odd value give ``None``.

    Args:
        hparams: ``task.hparams`` or any mapping.
    """
    get = getattr(hparams, "get", None)
    if get is None:
        return None
    flags = (get("allow_held_out"), get("data_allow_held_out"))
    return HELD_OUT_NOTE if any(_truthy(v) for v in flags) else None


def _json_ready(value: Any) -> Any:
    """Convert tensors, numpy values, paths and tuples into plain JSON types (NaN/inf become ``None``)."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # torch / numpy arrays and scalars
        return _json_ready(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


#: A JSON list of numbers spread over several lines by ``indent``.
_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")


def _dumps(card: Mapping[str, Any]) -> str:
    """Indented JSON with lists of numbers (colours, mean, std) kept on one line."""
    text = json.dumps(card, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def _merge(old: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: nested mappings merge, everything else in ``new`` replaces ``old``."""
    out = dict(old)
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_model_card(run_dir: str | Path) -> dict[str, Any]:
    """The card of ``run_dir`` (``{}`` when it has none).

    Raises:
        ValueError: If ``<run_dir>/model.json`` exists but is not a JSON object.
    """
    path = Path(run_dir) / MODEL_CARD
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it and re-run the command that wrote it") from err
    if not isinstance(card, dict):
        raise ValueError(f"{path} holds a {type(card).__name__}, not a JSON object; delete it and re-run")
    return card


def update_model_card(run_dir: str | Path, fields: Mapping[str, Any]) -> Path:
    """Merge ``fields`` into ``<run_dir>/model.json`` and write it atomically (temporary file, then rename).

    Nested mappings merge key by key (``{"test": {"mIoU": ...}}`` keeps the other ``test`` entries); any other
    value replaces the old one. Tensors, numpy values and paths are converted to JSON types.

    Args:
        run_dir: The fine-tuning run folder (created if missing).
        fields: Entries to add or replace.

    Returns:
        The card's path.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / MODEL_CARD
    card = _merge(read_model_card(run_dir), _json_ready(dict(fields)))
    tmp = path.with_name(f".{MODEL_CARD}.{os.getpid()}.tmp")
    try:
        tmp.write_text(_dumps(card) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _count_lines(path: Path) -> int:
    """Non-empty, non-comment lines of a text file."""
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip() and not line.lstrip().startswith("#"))


def pretraining_source(backbone: str | Path | None) -> dict[str, Any]:
    """Where an encoder came from, read from the backbone file's run folder.

    The method is the pretraining config's model class (``<run>/config.yaml`` or ``<run>/tensorboard/config.yaml``,
    as LightningCLI saves it) and its ``loss``; the image count is the number of lines of
    ``<run>/pretrain_images.txt``. Unknown values are ``None``.

    Args:
        backbone: The backbone file given to fine-tuning, or ``None`` for a randomly initialised encoder.

    Returns:
        ``{"backbone", "method", "loss", "images", "config"}``.
    """
    if not backbone:
        return {"backbone": None, "method": "none (random initialisation)", "loss": None, "images": None}
    import yaml

    path = Path(backbone).resolve()
    folder = path.parent
    info: dict[str, Any] = {"backbone": str(path), "method": None, "loss": None, "images": None, "config": None}
    for config in (folder / "config.yaml", folder / "tensorboard" / "config.yaml"):
        if not config.is_file():
            continue
        try:
            cfg = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            continue  # an unreadable config only costs the card its method
        model = cfg.get("model") if isinstance(cfg, dict) else None
        if isinstance(model, dict):
            init_args = model.get("init_args")
            init: dict[str, Any] = init_args if isinstance(init_args, dict) else model
            info["method"] = str(model.get("class_path", "")).rsplit(".", 1)[-1] or None
            info["loss"] = init.get("loss")
            info["config"] = str(config)
            break
    images = folder / "pretrain_images.txt"
    if images.is_file():
        info["images"] = _count_lines(images)
        info["image_list"] = str(images)
    return info


def _absolute(path: Any) -> str | None:
    """The card's one rule for paths: absolute (``None`` stays ``None``)."""
    return str(Path(path).resolve()) if path else None


def _first(*values: Any) -> Any:
    """The first value that is neither ``None`` nor empty."""
    for value in values:
        if value is not None and not (isinstance(value, list | tuple | str | dict) and not value):
            return value
    return None


def fit_fields(trainer: Trainer, task: LightningModule) -> dict[str, Any]:
    """The card's entries known when fine-tuning starts: data, classes, bands, normalisation, labels, encoder."""
    hp: Any = task.hparams
    dm = getattr(trainer, "datamodule", None)
    run_dir = Path(trainer.default_root_dir)
    train_set = getattr(dm, "train_full", None)
    subset = _first(getattr(dm, "subset_file", None), getattr(dm, "subset_path", None))
    if subset is None:
        found = sorted(run_dir.glob("label_subset*.txt"), key=lambda p: p.stat().st_mtime)
        subset = found[-1] if found else None
    held_out = held_out_note(hp) or (HELD_OUT_NOTE if _truthy(getattr(dm, "allow_held_out", None)) else None)
    stats = _first(getattr(dm, "stats_file", None), getattr(dm, "stats_path", None))
    if stats is None and (run_dir / "band_stats.json").is_file():
        stats = run_dir / "band_stats.json"
    return {
        "format": "falsecl-model-card",
        "version": 1,
        "model": {
            "architecture": "DeepLabV3+",
            "encoder": hp.get("arch"),
            "output_stride": hp.get("output_stride"),
            "in_channels": hp.get("in_channels"),
            "num_classes": hp.get("num_classes"),
            "freeze_backbone": hp.get("freeze_backbone"),
        },
        "dataset": {
            "name": _first(getattr(dm, "dataset_name", None), hp.get("data_name")),
            "root": _absolute(_first(getattr(dm, "root", None), hp.get("data_root"))),
            "root_as_given": _first(getattr(dm, "root_as_given", None), hp.get("data_root_as_given")),
            "train_split": getattr(dm, "train_split", None),
            "val_split": _first(getattr(dm, "val_split", None), hp.get("data_val_split")),
            "validation": _first(getattr(dm, "val_description", None), hp.get("data_val_description")),
            "allow_held_out": held_out is not None,
        },
        "notes": [held_out] if held_out else [],
        "class_names": _first(hp.get("class_names"), getattr(dm, "class_names", None)),
        "class_colours": _first(
            getattr(dm, "class_colours", None),
            hp.get("class_colours"),
            hp.get("colours"),
            getattr(train_set, "colours", None),
        ),
        "bands": _first(getattr(dm, "bands", None), hp.get("data_bands")),
        "in_channels": hp.get("in_channels"),
        "normalisation": {
            "mean": _first(hp.get("mean"), getattr(dm, "mean", None)),
            "std": _first(hp.get("std"), getattr(dm, "std", None)),
            "formula": "(raw - mean) / std per band, on raw digital numbers",
            "statistics_file": _absolute(stats),
        },
        "input": {
            "dtype": _first(hp.get("data_dtype"), getattr(dm, "input_dtype", None)),
            "value_range": _first(hp.get("data_value_range"), getattr(dm, "input_range", None)),
            "value_range_is": "per band [1st, 99th] percentile of the raw training pixels; predict refuses inputs "
            "of another data type or far outside it",
        },
        "labels": {
            "label_fraction": _first(getattr(dm, "label_fraction", None), hp.get("data_label_fraction")),
            "subset_file": _absolute(subset),
            "labelled_patches": len(getattr(dm, "train_indices", None) or []) or None,
            "training_patches": len(train_set) if train_set is not None else None,
            "seed": _first(getattr(dm, "seed", None), hp.get("data_seed")),
        },
        "pretraining": pretraining_source(hp.get("backbone_weights")),
        "fine_tuning": {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "max_steps": trainer.max_steps,
            "max_epochs": trainer.max_epochs,
            "lr": hp.get("lr"),
        },
    }


class ModelCardCallback(Callback):
    """Write ``<run>/model.json`` when fine-tuning starts, and add the checkpoints when it ends (rank 0 only)."""

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record data, classes, bands, normalisation, label subset and the encoder's pretraining."""
        if trainer.is_global_zero:
            update_model_card(trainer.default_root_dir, fit_fields(trainer, pl_module))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record the checkpoints, the best validation mIoU and the steps trained."""
        if not trainer.is_global_zero:
            return
        ckpt = trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_score", None)
        fields = {
            "checkpoints": {
                "best": _absolute(getattr(ckpt, "best_model_path", None)),
                "last": _absolute(getattr(ckpt, "last_model_path", None)),
                "selected_by": getattr(ckpt, "monitor", None),
            },
            "validation": {"best_mIoU": float(best) if best is not None else None},
            "fine_tuning": {
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                "global_step": trainer.global_step,
                "epochs": trainer.current_epoch,
            },
        }
        update_model_card(trainer.default_root_dir, fields)
        if getattr(ckpt, "monitor", None) and not getattr(ckpt, "best_model_path", None):
            # Said loudly: evaluate and predict will fall back to last.ckpt, chosen on nothing.
            log.warning(
                "no checkpoint was selected: the run never validated (val_check_interval %s, max_steps %s). "
                "evaluate and predict will use last.ckpt; to select one, validate within the run "
                "(--trainer.val_check_interval <= --trainer.max_steps)",
                trainer.val_check_interval,
                trainer.max_steps,
            )
