"""Band roles and validity of a raster: which bands are imagery, which pixels hold data, and the fill of the rest.

Band roles come from the colour interpretation: an alpha band is never an image band, it is validity. A pixel is
valid unless GDAL's dataset mask says otherwise (in GDAL's order: an internal or external ``.msk`` mask, the alpha
band, else the nodata value in every band). Invalid pixels are filled with the band mean before normalisation
(:func:`fill_invalid`), so a model never sees what is stored under nodata. Everything here works on an open
rasterio dataset; :mod:`falsecl.datasets.io` reads files with it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

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
_ROLES_CACHE_SIZE = 64


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
    if len(_roles) > _ROLES_CACHE_SIZE:
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
