"""Writers of tiny georeferenced scenes and polygon labels (in another CRS than the scenes) for the vector tests.

Scenes are in UTM zone 40N (EPSG:32640, Dubai) with 2 m pixels; labels are written in WGS 84 (EPSG:4326) unless
asked otherwise, as a GIS user digitising on a web basemap would have them. Polygons are given in *scene pixel
coordinates* (col, row) so the tests can state the expected mask exactly: a pixel is labelled when its centre
lies inside a polygon.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.warp import transform_geom

SCENE_CRS = "EPSG:32640"
LABEL_CRS = "EPSG:4326"
PIXEL = 2.0


def scene_transform(x0: float = 300_000.0, y0: float = 2_780_000.0) -> Affine:
    return Affine(PIXEL, 0.0, x0, 0.0, -PIXEL, y0)


def write_scene(
    path: Path, height: int, width: int, transform: Affine | None = None, crs: str | None = SCENE_CRS, seed: int = 0
) -> Path:
    """A 3-band uint8 GeoTIFF of random pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(0, 256, size=(3, height, width), dtype=np.uint8)
    profile: dict[str, Any] = dict(driver="GTiff", height=height, width=width, count=3, dtype="uint8")
    if crs is not None:
        profile |= dict(crs=crs, transform=transform or scene_transform())
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def pixel_box(col0: float, row0: float, col1: float, row1: float, transform: Affine | None = None) -> Any:
    """A rectangle given in scene pixel coordinates, as a polygon in the scene's CRS."""
    t = transform or scene_transform()
    return shapely.Polygon([t @ (col0, row0), t @ (col1, row0), t @ (col1, row1), t @ (col0, row1)])


def write_labels(
    path: Path,
    geoms: Sequence[Any],
    values: Sequence[Any],
    field: str = "class",
    crs: str | None = LABEL_CRS,
    source_crs: str = SCENE_CRS,
    layer: str | None = None,
    append: bool = False,
) -> Path:
    """Polygons (in ``source_crs``) reprojected to ``crs`` and written with one attribute ``field``.

    ``crs=None`` writes them without a CRS (a Shapefile without .prj), coordinates left in ``source_crs``.
    """
    import pyogrio

    path.parent.mkdir(parents=True, exist_ok=True)
    out = list(geoms)
    if crs is not None and crs != source_crs:
        out = [
            g
            if g is None or g.is_empty
            else shapely.geometry.shape(transform_geom(source_crs, crs, shapely.geometry.mapping(g)))
            for g in geoms
        ]
    wkb = np.array([None if g is None else shapely.to_wkb(g) for g in out], dtype=object)
    data = np.array(list(values), dtype=object if isinstance(values[0], str) else np.int64)
    kwargs: dict[str, Any] = {"layer": layer} if layer else {}
    pyogrio.raw.write(path, wkb, [data], [field], geometry_type="Unknown", crs=crs, append=append, **kwargs)
    return path


def expected_mask(
    height: int, width: int, boxes: Sequence[tuple[float, float, float, float]], classes: Sequence[int]
) -> np.ndarray:
    """Naive reference: pixel (r, c) gets the class of the last box holding its centre, else 255."""
    out = np.full((height, width), 255, dtype=np.int64)
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    for (c0, r0, c1, r1), k in zip(boxes, classes, strict=True):
        out[(cols > c0) & (cols < c1) & (rows > r0) & (rows < r1)] = k
    return out
