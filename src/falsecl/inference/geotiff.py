"""GeoTIFF output helpers of ``falsecl predict``: the input's georeferencing, the product's tag, safe output paths."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: GeoTIFF metadata item naming which product output a file is (``classes``, ``confidence``, ``probabilities``).
OUTPUT_TAG = "FALSECL_OUTPUT"


def georeferencing(src: Any) -> dict[str, Any]:
    """The input's georeferencing, as creation arguments of an output on the same pixel grid.

    Ground control points (with their CRS) and RPCs are copied as they are, a CRS and geotransform likewise; an
    input with none of these gives ``{}``: no CRS and no transform, rather than a made-up one (origin 0, 0, pixel
    size 1, which GIS software draws upside down).

    Args:
        src: Open rasterio dataset.

    Returns:
        Some of ``crs``, ``transform``, ``gcps``, ``rpcs``.
    """
    out: dict[str, Any] = {}
    gcps, gcp_crs = src.gcps
    if gcps:
        out["gcps"], out["crs"] = gcps, gcp_crs
    elif src.crs is not None or not src.transform.is_identity:
        out["crs"], out["transform"] = src.crs, src.transform
    if src.rpcs is not None:
        out["rpcs"] = src.rpcs
    return out


def product_output_kind(path: str | Path) -> str | None:
    """Which output of ``falsecl predict`` a raster is (``classes``, ``confidence``, ``probabilities``), else ``None``.

    Unreadable files give ``None`` (they are reported when predicted on).
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with warnings.catch_warnings(), rasterio.open(path) as ds:
            warnings.simplefilter("ignore")
            kind = ds.tags().get(OUTPUT_TAG)
    except (RasterioIOError, OSError):
        return None
    return str(kind) if kind else None


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
