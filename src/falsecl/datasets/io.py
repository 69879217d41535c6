"""Readers for image and mask files: headers without decoding, windowed reads, validity, colour/index masks.

GeoTIFFs (``.tif``/``.tiff``) are read with rasterio *windows*, so a 6000 x 6000 ortho tile is never loaded
whole. JPEG/PNG are small in practice and decoded whole by Pillow; decoded images stay in a per-process LRU
cache bounded in bytes, so the patches of one image do not decode it again.

Band roles come from the colour interpretation: an alpha band is never an image band, it is validity. A pixel is
valid unless GDAL's dataset mask says otherwise (in GDAL's order: an internal or external ``.msk`` mask, the alpha
band, else the nodata value in every band), or Pillow's alpha channel is 0. Invalid pixels are filled with the band
mean before normalisation (:func:`fill_invalid`), so a model never sees what is stored under nodata.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from falsecl.datasets.errors import DatasetError, DatasetNotFoundError

IGNORE_INDEX = 255
TIFF_SUFFIXES = (".tif", ".tiff")
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


#: A band tagged alpha is taken as transparency only when at least this share of its sampled pixels are 0 or
#: opaque (255, 65535): GDAL and rasterio tag the 4th band of any 4-band 8-bit GeoTIFF as alpha unless told
#: otherwise, so an RGBIR file written with the defaults carries its near-infrared band under the alpha tag.
ALPHA_MASK_SHARE = 0.9


@dataclass(frozen=True)
class BandRoles:
    """What the bands of a raster are, from their colour interpretation (and, for alpha, their values).

    Attributes:
        image: 1-based indexes of the bands that carry imagery (what a model sees).
        alpha: 1-based index of the alpha band taken as the validity mask, or ``None``.
        mistagged: 1-based index of a band tagged alpha whose values are imagery, not transparency (kept as an
            image band; validity then comes from the nodata value alone), or ``None``.
    """

    image: list[int]
    alpha: int | None = None
    mistagged: int | None = None


def _mask_like(src: Any, band: int) -> bool:
    """Whether a band's sampled values are transparency: nearly all 0 or opaque (255, 65535 or the type's maximum).

    A constant or all-zero band says nothing either way; it stays a band, as it always was.
    """
    from rasterio.enums import Resampling

    shape = (min(int(src.height), 256), min(int(src.width), 256))
    values = np.asarray(src.read(band, out_shape=shape, resampling=Resampling.nearest))
    dtype = np.dtype(src.dtypes[band - 1])
    opaque = {255, 65535} | ({int(np.iinfo(dtype).max)} if dtype.kind in "ui" else set())
    top = int(values.max()) if values.size else 0
    return top in opaque and bool(np.mean((values == 0) | (values == top)) >= ALPHA_MASK_SHARE)


_roles: dict[tuple[int, str], BandRoles] = {}


def band_roles(src: Any) -> BandRoles:
    """Image bands and validity of an open rasterio dataset (cached per process, file name and modification time).

    A band tagged alpha is the validity mask, never an image band, when its values look like transparency
    (:data:`ALPHA_MASK_SHARE`); otherwise it is imagery under GDAL's default RGBA tag and stays a band.
    """
    from rasterio.enums import ColorInterp

    name = str(src.name)
    stamp = os.stat(name).st_mtime_ns if os.path.exists(name) else 0  # a rewritten file is looked at again
    key = (os.getpid(), f"{name}|{stamp}")
    if key in _roles:
        return _roles[key]
    tagged = [i + 1 for i, interp in enumerate(src.colorinterp) if interp == ColorInterp.alpha]
    roles = BandRoles(list(range(1, int(src.count) + 1)))
    if len(tagged) == 1 and int(src.count) > 1:
        band = tagged[0]
        if _mask_like(src, band):
            roles = BandRoles([b for b in roles.image if b != band], alpha=band)
        else:
            roles = BandRoles(roles.image, mistagged=band)
    if len(_roles) > 4 * _HANDLE_CACHE_SIZE:
        _roles.clear()
    _roles[key] = roles
    return roles


def image_band_indexes(src: Any) -> list[int]:
    """1-based indexes of the bands of an open rasterio dataset that carry imagery (all but an alpha band)."""
    return band_roles(src).image


def may_have_invalid(src: Any) -> bool:
    """Whether an open rasterio dataset declares invalid pixels (nodata value, mask or alpha band).

    Only such rasters pay for reading :func:`valid_pixels`; the others are valid everywhere.
    """
    from rasterio.enums import MaskFlags

    if band_roles(src).mistagged is not None:
        return src.nodata is not None
    return any(MaskFlags.all_valid not in flags for flags in src.mask_flag_enums)


def valid_pixels(src: Any, window: Any = None, out_shape: tuple[int, int] | None = None) -> NDArray[np.bool_]:
    """GDAL's dataset mask of an open rasterio dataset as booleans, ``True`` = valid: ``(h, w)``.

    In GDAL's order: an internal or external ``.msk`` mask, the alpha band, else the nodata value (a pixel is
    valid when any band differs from it). With a mis-tagged alpha band (:class:`BandRoles`) only the nodata value.

    Args:
        src: Open rasterio dataset.
        window: Region to read (whole raster when ``None``).
        out_shape: Read decimated to ``(rows, cols)`` (nearest neighbour), e.g. for a value-range sample.
    """
    roles = band_roles(src)
    if roles.mistagged is not None:
        from rasterio.enums import Resampling

        kw: dict[str, Any] = {"window": window}
        if out_shape is not None:
            kw.update(out_shape=(len(roles.image), *out_shape), resampling=Resampling.nearest)
        pixels = np.asarray(src.read(roles.image, **kw))
        if src.nodata is None:
            return np.ones(pixels.shape[1:], dtype=bool)
        out: NDArray[np.bool_] = (pixels != src.nodata).any(axis=0)
        return out
    mask = src.dataset_mask(window=window, out_shape=out_shape)
    valid: NDArray[np.bool_] = np.asarray(mask) != 0
    return valid


def fill_invalid(image: NDArray[Any], valid: NDArray[np.bool_], values: Sequence[float]) -> NDArray[Any]:
    """Set every band of the invalid pixels to ``values`` (the band means), in place.

    Filling with the training mean puts invalid pixels at 0 after normalisation, so valid pixels near nodata are
    classified the same whatever value the file stores under nodata (0, 65535, -9999 ...).

    Args:
        image: Float pixels ``(C, h, w)``.
        valid: ``(h, w)``, ``True`` where the pixel holds data.
        values: One fill value per band (``C``).

    Returns:
        ``image``, filled.
    """
    if len(values) != image.shape[0]:
        raise ValueError(f"{len(values)} fill values for {image.shape[0]} bands")
    if not valid.all():
        image[:, ~valid] = np.asarray(values, dtype=image.dtype)[:, None]
    return image


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
        bands = image_band_indexes(src)  # an alpha band is validity, not imagery
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
        h = src.height - row if height is None else height
        w = src.width - col if width is None else width
        rh, rw = max(0, min(h, src.height - row)), max(0, min(w, src.width - col))
        image_bands = image_band_indexes(src)
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
        h = src.height - row if height is None else height
        w = src.width - col if width is None else width
        rh, rw = max(0, min(h, src.height - row)), max(0, min(w, src.width - col))
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


# ----------------------------------------------------------------------------------------------------------
# masks
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
