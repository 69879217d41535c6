"""The model card ``<run>/model.json`` of a fine-tuning run.

The card says what a fine-tuned model is, without loading it: the dataset, class names and colours, bands and
normalisation, label fraction and subset file, where the encoder came from (backbone file, pretraining method,
number of pretraining images) and, once ``falsecl evaluate`` has run, the test metrics. Writers merge into the
existing card (:func:`update_model_card`), so fine-tuning and evaluation each add their part.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: File name of the card inside a run folder.
MODEL_CARD = "model.json"


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
        tmp.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
