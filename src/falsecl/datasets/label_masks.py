"""Label masks: colour masks and index masks decoded to class indices, vectorised (no Python loop over pixels)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from falsecl.datasets.errors import DatasetError


def pack_rgb(rgb: NDArray[Any]) -> NDArray[np.int32]:
    """Pack an RGB array (3, H, W) into one int32 code per pixel: ``r << 16 | g << 8 | b``."""
    r, g, b = (rgb[i].astype(np.int32) for i in range(3))
    return np.asarray((r << 16) | (g << 8) | b, dtype=np.int32)


def colours_to_index(
    rgb: NDArray[Any], palette: Mapping[tuple[int, int, int], int], path: Path | str
) -> NDArray[np.int64]:
    """Convert an RGB colour mask to class indices with a vectorised lookup.

    Colours are packed into one int32 per pixel and looked up in the sorted palette codes (``searchsorted``),
    so the cost is O(H W log K) with no Python loop over pixels.

    Args:
        rgb: Colour mask (3, H, W) (or more bands; the first three are used). Read it unpadded: padding
            colours could collide with real class colours (ISPRS impervious is white).
        palette: Colour -> class index (``255`` for ignore colours).
        path: The mask file, named in the error message.

    Returns:
        Class indices (H, W), int64.

    Raises:
        DatasetError: A colour not in the palette; the message lists each colour with its pixel count.
    """
    if rgb.shape[0] < 3:
        raise DatasetError(
            f"mask {path} has {rgb.shape[0]} band(s) but this dataset expects RGB colour masks; "
            "convert index masks with the matching dataset (e.g. 'isprs_mmseg', 'folder' with an index "
            "palette)."
        )
    codes = pack_rgb(rgb[:3])
    colours = list(palette)
    keys = pack_rgb(np.array(colours, dtype=np.int32).T.reshape(3, len(colours), 1))[:, 0]
    values = np.array([palette[c] for c in colours], dtype=np.int64)
    order = np.argsort(keys)
    keys_ext, values_ext = keys[order], values[order]
    pos = np.clip(np.searchsorted(keys_ext, codes), 0, len(keys_ext) - 1)
    known = keys_ext[pos] == codes
    if not known.all():
        bad, counts = np.unique(codes[~known], return_counts=True)
        worst = np.argsort(-counts)[:10]
        listed = ", ".join(
            f"({(int(bad[i]) >> 16) & 255},{(int(bad[i]) >> 8) & 255},{int(bad[i]) & 255}) x "
            f"{int(counts[i])} px"
            for i in worst
        )
        more = f" and {len(bad) - len(worst)} more" if len(bad) > len(worst) else ""
        raise DatasetError(
            f"mask {path} has {len(bad)} colour(s) not in the palette: {listed}{more}. Fix: add these "
            "colours to "
            "the palette (map unwanted ones to 'ignore'), or re-export the mask without anti-aliasing/JPEG."
        )
    out: NDArray[np.int64] = values_ext[pos]
    return out


def index_lookup(mapping: Mapping[int, int]) -> NDArray[np.int64]:
    """A 256-entry lookup table for index masks; entries not in ``mapping`` are ``-1`` (invalid)."""
    lut = np.full(256, -1, dtype=np.int64)
    for raw, cls in mapping.items():
        lut[raw] = cls
    return lut


def remap_index(mask: NDArray[Any], lut: NDArray[np.int64], path: Path | str) -> NDArray[np.int64]:
    """Map raw index-mask values through ``lut`` (from :func:`index_lookup`).

    Args:
        mask: Raw index mask (1, H, W) or (H, W) of integer values 0..255.
        lut: 256-entry table, -1 for values that must not occur.
        path: The mask file, named in the error message.

    Returns:
        Class indices (H, W), int64.

    Raises:
        DatasetError: A value outside 0..255 or not in the table.
    """
    mask = mask[0] if mask.ndim == 3 else mask
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) > 255):
        raise DatasetError(
            f"mask {path} has values outside 0..255 ({mask.min()}..{mask.max()}); expected an 8-bit "
            "index mask."
        )
    out = lut[mask.astype(np.int64)]
    if (out < 0).any():
        bad, counts = np.unique(mask[out < 0], return_counts=True)
        listed = ", ".join(f"{int(v)} x {int(n)} px" for v, n in zip(bad[:10], counts[:10], strict=False))
        raise DatasetError(
            f"mask {path} has value(s) not in the class table: {listed}. Fix: check that this is the right "
            "dataset "
            "layout (index masks vs. colour masks) or map the values in the palette."
        )
    return out
