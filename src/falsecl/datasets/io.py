"""Readers for image and mask files: headers without decoding, windowed reads, validity.

GeoTIFFs (``.tif``/``.tiff``) are read with rasterio *windows*, so a 6000 x 6000 ortho tile is never loaded
whole. JPEG/PNG are small in practice and decoded whole by Pillow; decoded images stay in a per-process LRU
cache bounded in bytes, so the patches of one image do not decode it again.

Band roles and validity come from :mod:`falsecl.datasets.validity`: an alpha band is never an image band;
:func:`read_valid` reads a window's validity (GDAL's dataset mask, or Pillow's alpha channel). Colour and index
masks are decoded by :mod:`falsecl.datasets.label_masks` (re-exported here, where callers have always found them).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from falsecl.datasets.errors import DatasetError, DatasetNotFoundError
from falsecl.datasets.label_masks import colours_to_index, index_lookup, pack_rgb, remap_index
from falsecl.datasets.validity import band_roles, may_have_invalid, valid_pixels

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_SUFFIXES",
    "ImageInfo",
    "close_handles",
    "colours_to_index",
    "has_invalid_pixels",
    "index_lookup",
    "is_tiff",
    "pack_rgb",
    "read_info",
    "read_valid",
    "read_window",
    "remap_index",
]

IGNORE_INDEX = 255
TIFF_SUFFIXES = (".tif", ".tiff", ".vrt")  # read with rasterio (windowed); VRT mosaics too
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
# Decoded JPEG/PNG kept per process (MiB). Shuffled training visits the patches of an image in random order;
# without a cache every patch would decode its whole image and mask again (20 patches/s instead of thousands).
DECODE_CACHE_MB = int(os.environ.get("FALSECL_DECODE_CACHE_MB", "512"))
_HANDLE_CACHE_SIZE = 16

# GDAL's block cache defaults to 5 % of RAM per process; reading every window of a large tile would fill it
# with the whole tile in each DataLoader worker. Each window is read once per epoch: a small cache is enough.
os.environ.setdefault("GDAL_CACHEMAX", "64")

# Pillow refuses very large images by default ("decompression bomb"); aerial scenes are legitimately large.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageInfo:
    """Header facts of a raster file, read without decoding pixels.

    Attributes:
        height: Rows.
        width: Columns.
        bands: Number of bands (channels).
        dtype: NumPy dtype name of the pixels, e.g. ``"uint8"`` or ``"uint16"``.
        crs: Coordinate reference system as WKT/string, ``None`` when the file is not georeferenced.
        mode: Pillow mode for JPEG/PNG (``"P"``: palette image, one band of indices that can also be shown as
            RGB colours), ``None`` for TIFF.
    """

    height: int
    width: int
    bands: int
    dtype: str
    crs: str | None = None
    mode: str | None = None


def is_tiff(path: Path) -> bool:
    """Whether ``path`` is read with rasterio (GeoTIFF) rather than Pillow."""
    return path.suffix.lower() in TIFF_SUFFIXES


def _corrupt(path: Path, err: Exception) -> DatasetError:
    return DatasetError(
        f"cannot read {path}: {type(err).__name__}: {err}. The file is corrupt, truncated or not an image; "
        "re-download or re-export it, or delete it together with its mask."
    )


def _missing(path: Path) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"file not found: {path}. Check the dataset root and layout (see docs/data.md)."
    )


# ----------------------------------------------------------------------------------------------------------
# rasterio
_handles: OrderedDict[tuple[int, str], Any] = OrderedDict()


def _rasterio_open(path: Path) -> Any:
    """Open ``path`` once per process (GDAL handles must not cross a fork) and keep it for later windows."""
    import rasterio
    from rasterio.errors import RasterioIOError

    key = (os.getpid(), str(path))
    if key in _handles:
        _handles.move_to_end(key)
        return _handles[key]
    if not path.exists():
        raise _missing(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning for plain TIFF patches
            handle = rasterio.open(path)
    except RasterioIOError as err:
        raise _corrupt(path, err) from err
    _handles[key] = handle
    while len(_handles) > _HANDLE_CACHE_SIZE:
        (pid, _), old = _handles.popitem(last=False)
        if pid == os.getpid():  # a handle inherited through fork belongs to the parent: leave it alone
            old.close()
    return handle


def close_handles() -> None:
    """Close every cached rasterio handle (tests, or before forking many workers)."""
    while _handles:
        (pid, _), handle = _handles.popitem()
        if pid == os.getpid():
            handle.close()


# ----------------------------------------------------------------------------------------------------------
# Pillow
_decoded: OrderedDict[tuple[str, float], NDArray[Any]] = OrderedDict()
_decoded_bytes = 0


def _pil_decode(path: Path, mode: str | None) -> NDArray[Any]:
    """Decode a JPEG/PNG whole into (H, W) or (H, W, C), through a byte-bounded LRU cache.

    The cache holds ``FALSECL_DECODE_CACHE_MB`` (512 by default) per process, keyed on path, mode and mtime.
    """
    try:
        stamp = path.stat().st_mtime
    except FileNotFoundError:
        raise _missing(path) from None
    key = (f"{path}|{mode}", stamp)
    if key in _decoded:
        _decoded.move_to_end(key)
        return _decoded[key]
    try:
        with Image.open(path) as opened:
            img: Image.Image = opened
            if mode == "index":
                pass  # index masks: keep palette ("P") indices and 16-bit values as stored
            elif mode == "A":
                img = img.getchannel("A")  # validity of an image with transparency
            elif mode is not None and img.mode != mode:
                img = img.convert(mode)
            elif img.mode == "P":
                img = img.convert("RGB")
            elif img.mode in ("RGBA", "LA"):
                img = img.convert(img.mode[:-1])  # alpha is not a band of the scene
            array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _corrupt(path, err) from err
    global _decoded_bytes
    _decoded[key] = array
    _decoded_bytes += array.nbytes
    while len(_decoded) > 1 and _decoded_bytes > DECODE_CACHE_MB * 2**20:
        _, old = _decoded.popitem(last=False)
        _decoded_bytes -= old.nbytes
    return array


_PIL_BANDS = {
    "1": 1,
    "L": 1,
    "P": 1,
    "I": 1,
    "F": 1,
    "I;16": 1,
    "I;16B": 1,
    "I;16L": 1,
    "RGB": 3,
    "RGBA": 3,
    "LA": 1,
    "CMYK": 4,
    "YCbCr": 3,
}
_PIL_DTYPES = {"I": "int32", "F": "float32", "I;16": "uint16", "I;16B": "uint16", "I;16L": "uint16"}


def read_info(path: Path) -> ImageInfo:
    """Read size, band count and dtype from the file header only.

    Args:
        path: A JPEG, PNG or (Geo)TIFF file.

    Returns:
        The header facts.

    Raises:
        DatasetNotFoundError: The file does not exist.
        DatasetError: The file is not a readable image.
    """
    path = Path(path)
    if not path.exists():
        raise _missing(path)
    if is_tiff(path):
        src = _rasterio_open(path)
        crs = src.crs.to_string() if src.crs is not None else None
        bands = band_roles(src).image  # an alpha band is validity, not imagery
        return ImageInfo(int(src.height), int(src.width), len(bands), str(src.dtypes[bands[0] - 1]), crs)
    try:
        with Image.open(path) as img:
            width, height = img.size
            mode = img.mode
    except (UnidentifiedImageError, OSError) as err:
        raise _corrupt(path, err) from err
    return ImageInfo(
        int(height), int(width), _PIL_BANDS.get(mode, 3), _PIL_DTYPES.get(mode, "uint8"), None, mode
    )


def _pad(array: NDArray[Any], height: int, width: int, fill: float) -> NDArray[Any]:
    """Pad the last two axes of ``array`` at the bottom/right to ``height x width``."""
    ph, pw = height - array.shape[-2], width - array.shape[-1]
    if ph <= 0 and pw <= 0:
        return array
    pad = [(0, 0)] * (array.ndim - 2) + [(0, max(ph, 0)), (0, max(pw, 0))]
    return np.pad(array, pad, mode="constant", constant_values=fill)


def read_window(
    path: Path,
    row: int = 0,
    col: int = 0,
    height: int | None = None,
    width: int | None = None,
    bands: Sequence[int] | None = None,
    fill: float = 0,
    mode: str | None = None,
) -> NDArray[Any]:
    """Read a window of a raster as a band-first array, padding where it leaves the image.

    Args:
        path: Raster file.
        row: Top row of the window.
        col: Left column of the window.
        height: Window height; ``None`` means to the bottom border.
        width: Window width; ``None`` means to the right border.
        bands: 0-based indices of the image bands to keep (alpha bands are not counted); ``None`` keeps all.
        fill: Value for the pixels outside the image (0 for images, 255 = ignore for masks).
        mode: Pillow mode to convert JPEG/PNG to (e.g. ``"RGB"`` for colour masks; ``"index"`` keeps the
            stored values, palette indices included, for index masks); ignored for TIFF.

    Returns:
        Array (C, height, width) in the file's dtype.

    Raises:
        DatasetError: Unreadable file.
    """
    path = Path(path)
    if is_tiff(path):
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        src = _rasterio_open(path)
        h, w, rh, rw = _window_size(src.height, src.width, row, col, height, width)
        image_bands = band_roles(src).image
        indexes = [image_bands[b] for b in bands] if bands is not None else image_bands
        try:
            data = src.read(indexes, window=Window(col, row, rw, rh))
        except RasterioIOError as err:
            raise _corrupt(path, err) from err
        return _pad(np.asarray(data), h, w, fill)
    array = _pil_decode(path, mode)
    array = array[:, :, None] if array.ndim == 2 else array
    h = array.shape[0] - row if height is None else height
    w = array.shape[1] - col if width is None else width
    window = array[row : row + h, col : col + w].transpose(2, 0, 1)
    if bands is not None:
        window = window[list(bands)]
    return _pad(np.ascontiguousarray(window), h, w, fill)


def _window_size(
    total_h: int, total_w: int, row: int, col: int, height: int | None, width: int | None
) -> tuple[int, int, int, int]:
    """``(h, w)`` of a window (``None``: to the border) and ``(rh, rw)``, the part of it inside the image."""
    h = total_h - row if height is None else height
    w = total_w - col if width is None else width
    return h, w, max(0, min(h, total_h - row)), max(0, min(w, total_w - col))


def has_invalid_pixels(path: Path) -> bool:
    """Whether an image file declares invalid pixels: GDAL nodata/mask/alpha (TIFF), an alpha channel (Pillow)."""
    path = Path(path)
    if is_tiff(path):
        return may_have_invalid(_rasterio_open(path))
    return read_info(path).mode in ("RGBA", "LA")


def read_valid(path: Path, row: int = 0, col: int = 0, height: int | None = None, width: int | None = None) -> NDArray[
    np.bool_
]:
    """Validity of a window of an image file, ``True`` = the pixel holds data; ``False`` outside the image.

    Args:
        path: Image file (GeoTIFF: GDAL's dataset mask; JPEG/PNG: the alpha channel, if any).
        row: Top row of the window.
        col: Left column of the window.
        height: Window height; ``None`` means to the bottom border.
        width: Window width; ``None`` means to the right border.

    Returns:
        ``(height, width)`` booleans.
    """
    path = Path(path)
    if is_tiff(path):
        from rasterio.windows import Window

        src = _rasterio_open(path)
        h, w, rh, rw = _window_size(src.height, src.width, row, col, height, width)
        valid = valid_pixels(src, Window(col, row, rw, rh)) if may_have_invalid(src) else np.ones((rh, rw), bool)
        return _pad(valid, h, w, False)
    info = read_info(path)
    h = info.height - row if height is None else height
    w = info.width - col if width is None else width
    if info.mode in ("RGBA", "LA"):
        alpha = _pil_decode(path, "A")[row : row + h, col : col + w] > 0
    else:
        alpha = np.ones((max(0, min(h, info.height - row)), max(0, min(w, info.width - col))), dtype=bool)
    return _pad(np.ascontiguousarray(alpha), h, w, False)
