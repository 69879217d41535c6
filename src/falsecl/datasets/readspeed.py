"""Warn about GeoTIFF layouts that make windowed reading slow (issue 17.7).

A patch read decodes every compressed block it touches. In a tiled GeoTIFF that is a few 256 x 256 blocks; in a
striped one whose strips are huge (a single strip, in the worst case the whole scene) every patch decodes the
whole strip: a 4000 x 4000 4-band deflate single strip cost +330 MB and 63 ms per patch against 2 ms tiled.
Uncompressed strips are read partially by GDAL, so only compressed ones are reported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from falsecl.datasets import io

log = logging.getLogger(__name__)

#: Decoded bytes of one strip from which reading patches out of it is slow (4x a 256 x 256 x 4-band patch).
HUGE_STRIP_BYTES = 1 << 20
_warned: set[Path] = set()


def slow_strip_layout(path: Path) -> str | None:
    """Why reading windows of ``path`` is slow (``"a single compressed strip of 4000 x 4000 px"``), or None.

    Args:
        path: An image file; only GeoTIFFs can be striped.

    Returns:
        A description of the layout, None when it reads well (tiled, uncompressed, small strips, not a TIFF).
    """
    if not io.is_tiff(path):
        return None
    src = io._rasterio_open(path)
    rows, cols = src.block_shapes[0]
    if cols < src.width or src.compression is None:  # tiled (strips span the full width), or uncompressed
        return None
    interleaved = 1 if src.interleaving is not None and src.interleaving.name == "BAND" else src.count
    strip_bytes = rows * cols * interleaved * np.dtype(src.dtypes[0]).itemsize
    if strip_bytes < HUGE_STRIP_BYTES:
        return None
    name = src.compression.name.lower()
    if rows >= src.height:
        return f"a single {name}-compressed strip of {cols} x {rows} px"
    return f"{name}-compressed strips of {rows} rows ({strip_bytes / 2**20:.1f} MiB each)"


def warn_slow_layouts(paths: Iterable[Path]) -> list[Path]:
    """Log a warning, once per file and process, for each file of ``paths`` with a slow strip layout.

    Returns:
        The files warned about now.
    """
    warned = []
    for path in paths:
        if path in _warned:
            continue
        why = slow_strip_layout(path)
        if why is None:
            continue
        _warned.add(path)
        warned.append(path)
        log.warning(
            "%s is stored as %s: every patch decodes whole strips (slow, memory-hungry). Fix, once: "
            "gdal_translate -co TILED=YES -co COMPRESS=DEFLATE %s %s",
            path,
            why,
            path,
            path.with_name(f"{path.stem}_tiled{path.suffix}"),
        )
    return warned
