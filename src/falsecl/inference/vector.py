"""Polygons out: a finished class map -> one polygon per connected region, with bounded memory for any size.

Approach (the issue asks which): the sieve and the polygonisation run on the *finished* class-map GeoTIFF, read
in horizontal strips of at most ``strip_pixels`` pixels; no whole-map array is ever held.

1. Pass 1 labels the connected regions of each class in each strip (4-connectivity, :func:`scipy.ndimage.label`)
   and records which strip components continue across the strip border and which components of different
   classes touch. Joining those records (:func:`scipy.sparse.csgraph.connected_components`) gives the regions of
   the whole map and their sizes; memory is one strip plus a few numbers per component.
2. The sieve (``min_area``) works on those regions as GDAL's ``GDALSieveFilter`` does: a region smaller than the
   minimum takes the class of its largest neighbour, so removed regions are filled, never left as holes or
   nodata; rounds repeat until no small region has a larger neighbour. Nodata belongs to no region.
3. Pass 2 writes the final region id of every pixel to a temporary tiled GeoTIFF, strip by strip, and sums the
   confidence per region. Pass 3 hands that raster to GDAL's polygoniser (:func:`rasterio.features.shapes` on the
   band), which reads it line by line; each region becomes exactly one polygon, in the class map's CRS.

Memory is therefore a strip, a few numbers per region, and the output polygons, which GDAL's polygoniser returns
together (measured in ``benchmarks/vector_memory.py``; see docs/vector_labels.md).

Attributes: ``class_id``, ``class_name``, ``pixels``, ``area_m2`` (pixels x pixel area, when the CRS is
projected; otherwise absent and ``pixels`` is the area), ``confidence`` (mean of the per-pixel maximum softmax
probability in percent, when a confidence raster is given).
"""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from numpy.typing import NDArray
from rasterio import features
from rasterio.windows import Window

#: Vector drivers by file extension.
VECTOR_DRIVERS = {
    ".gpkg": "GPKG",
    ".shp": "ESRI Shapefile",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
}
#: GDAL block cache (MB) while polygonising.
GDAL_CACHE_MB = 32
#: Features buffered before they are appended to the file.
_WRITE_BATCH = 5000


@dataclass
class PolygonizeResult:
    """What :func:`polygonize_class_map` wrote.

    Attributes:
        path: The vector file.
        features: Polygons written.
        per_class: Class name -> polygons written.
        removed_regions: Regions below the minimum area, filled with a neighbour's class.
        min_pixels: The minimum area in pixels (0: no sieve).
        pixel_area_m2: Area of one pixel in square metres (``None`` when the CRS is not projected).
        strips: Strips each pass read.
    """

    path: Path
    features: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    removed_regions: int = 0
    min_pixels: int = 0
    pixel_area_m2: float | None = None
    strips: int = 0


def _strips(height: int, width: int, strip_pixels: int) -> list[tuple[int, int]]:
    rows = max(1, strip_pixels // max(width, 1))
    return [(r, min(r + rows, height)) for r in range(0, height, rows)]


def _label_strip(classes: NDArray[Any], valid: NDArray[np.bool_], first_id: int) -> tuple[NDArray[np.int64], list[int]]:
    """Components of each class in a strip, numbered from ``first_id`` (0 = nodata); and each one's class."""
    from scipy import ndimage

    # int64 ids: numbering runs over the whole map; the strip keeps the memory small.
    labels = np.zeros(classes.shape, dtype=np.int64)
    comp_class: list[int] = []
    next_id = first_id
    for k in np.unique(classes[valid]):
        lab, n = ndimage.label(valid & (classes == k))
        inside = lab > 0
        labels[inside] = lab[inside] + (next_id - 1)
        comp_class += [int(k)] * n
        next_id += n
    return labels, comp_class


def _pairs(a: NDArray[np.int64], b: NDArray[np.int64]) -> NDArray[np.int64]:
    """Distinct ``(min, max)`` id pairs of neighbouring pixels ``a``/``b`` that are both valid and differ."""
    keep = (a > 0) & (b > 0) & (a != b)
    if not keep.any():
        return np.zeros((0, 2), dtype=np.int64)
    p = np.stack([np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])], axis=1)
    return np.unique(p, axis=0)


def _components(n: int, pairs: NDArray[np.int64]) -> NDArray[np.int64]:
    """Connected components of ids ``0..n-1`` joined by ``pairs`` (``(E, 2)``); component index per id."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return np.asarray(connected_components(graph, directed=False)[1], dtype=np.int64)


def sieve_targets(sizes: NDArray[np.int64], edges: NDArray[np.int64], min_pixels: int) -> NDArray[np.int64]:
    """Where each region goes in GDAL's sieve: itself, or (small ones) their largest neighbour's final region.

    Args:
        sizes: ``(R,)`` pixels per region.
        edges: ``(E, 2)`` pairs of neighbouring regions of different classes.
        min_pixels: Regions with fewer pixels are merged into their largest neighbour.

    Returns:
        ``(R,)`` target region of every region. A small region points to its largest neighbour (ties: lower
        index); chains of small regions are followed to their end, which is a large region or a small one with
        no larger neighbour (kept: e.g. a speck surrounded by nodata).
    """
    target = np.arange(len(sizes), dtype=np.int64)
    if len(edges) == 0 or min_pixels <= 1:
        return target
    src = np.concatenate([edges[:, 0], edges[:, 1]])
    dst = np.concatenate([edges[:, 1], edges[:, 0]])
    # Only moves towards a strictly "larger" neighbour (size, then lower index) are allowed: no cycles.
    up = (sizes[dst] > sizes[src]) | ((sizes[dst] == sizes[src]) & (dst < src))
    small = sizes[src] < min_pixels
    src, dst = src[up & small], dst[up & small]
    order = np.lexsort((dst, -sizes[dst], src))  # per source: largest neighbour first, then lower index
    src, dst = src[order], dst[order]
    first = np.ones(len(src), dtype=bool)
    first[1:] = src[1:] != src[:-1]
    target[src[first]] = dst[first]
    while True:  # pointer jumping to the end of every chain
        nxt = target[target]
        if np.array_equal(nxt, target):
            return target
        target = nxt


def sieve_regions(
    sizes: NDArray[np.int64], kinds: NDArray[np.int64], edges: NDArray[np.int64], min_pixels: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """Merge regions below ``min_pixels`` into their largest neighbour, repeatedly, until none can merge.

    Each round applies :func:`sieve_targets`, joins each small region with its target and every pair of
    neighbours that now share a class. The rounds stop when no small region has a larger neighbour, which
    leaves every region at ``min_pixels`` or more unless it has no neighbour at all (e.g. a speck surrounded
    by nodata or in a corner of the map alone).

    Args:
        sizes: ``(R,)`` pixels per region.
        kinds: ``(R,)`` class per region.
        edges: ``(E, 2)`` pairs of neighbouring regions (of different classes).
        min_pixels: Minimum region size in pixels (0 or 1: no sieve).

    Returns:
        ``(region of each input region (R,), class of each output region, number of regions merged away)``.
    """
    mapping = np.arange(len(sizes), dtype=np.int64)
    sizes, kinds, removed = sizes.astype(np.int64), kinds.astype(np.int64), 0
    while min_pixels > 1 and len(edges):
        target = sieve_targets(sizes, edges, min_pixels)
        moved = np.flatnonzero(target != np.arange(len(sizes)))
        if len(moved) == 0:
            break
        removed += len(moved)
        kinds = kinds[target]
        same = edges[kinds[edges[:, 0]] == kinds[edges[:, 1]]]
        comp = _components(len(sizes), np.concatenate([same, np.stack([moved, target[moved]], axis=1)]))
        mapping = comp[mapping]
        sizes = np.bincount(comp, weights=sizes, minlength=int(comp.max()) + 1).astype(np.int64)
        new_kinds = np.empty(len(sizes), dtype=np.int64)
        new_kinds[comp] = kinds
        kinds = new_kinds
        edges = np.unique(np.sort(comp[edges], axis=1), axis=0)
        edges = edges[edges[:, 0] != edges[:, 1]]
    return mapping, kinds, removed


def _pixel_area_m2(src: Any) -> float | None:
    t = src.transform
    if src.crs is None or not src.crs.is_projected:
        return None
    factor = src.crs.linear_units_factor[1]
    return float(abs(t.a * t.e - t.b * t.d) * factor * factor)


def polygonize_class_map(
    class_map: str | Path,
    out_path: str | Path,
    class_names: Sequence[str],
    confidence: str | Path | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    strip_pixels: int = 1 << 20,
    overwrite: bool = False,
) -> PolygonizeResult:
    """Write one polygon per connected region of a class-map GeoTIFF (see the module docstring).

    Args:
        class_map: uint8 class map (nodata = its declared nodata, 255 for falsecl's maps).
        out_path: Vector file; the driver follows the extension (``.gpkg``, ``.shp``, ``.geojson``, ``.fgb``).
        class_names: Name of each class index.
        confidence: Optional uint8 confidence raster on the same grid (percent), for the ``confidence`` field.
        min_area: Minimum mapping unit in square metres (in pixels when the CRS is not projected); smaller
            regions are merged into their largest neighbour before polygonising.
        simplify: Douglas-Peucker tolerance in map units (0: exact pixel outlines). Each polygon is simplified
            on its own (topology kept within it), so shared borders may part by up to the tolerance.
        strip_pixels: Pixels read per strip (bounds the memory).
        overwrite: Replace an existing file.

    Returns:
        Counts of what was written.

    Raises:
        ValueError: Unknown extension, existing output, class values without a name, mismatching grids.
    """
    out = Path(out_path)
    driver = VECTOR_DRIVERS.get(out.suffix.lower())
    if driver is None:
        raise ValueError(f"--vector {out}: unknown extension; use one of {', '.join(VECTOR_DRIVERS)}")
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite true to replace it")
        for sidecar in out.parent.glob(out.stem + ".*") if driver == "ESRI Shapefile" else [out]:
            sidecar.unlink()
    # Each strip is read once per pass: GDAL's block cache (5 % of RAM by default) would only hold the whole map.
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), rasterio.open(class_map) as src:
        conf = rasterio.open(confidence) if confidence is not None else None
        try:
            if conf is not None and (conf.shape != src.shape or conf.transform != src.transform):
                raise ValueError(f"confidence raster {confidence} is not on the grid of {class_map}")
            return _polygonize(src, conf, out, driver, list(class_names), min_area, simplify, strip_pixels)
        finally:
            if conf is not None:
                conf.close()


def _read(src: Any, r0: int, r1: int) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    data = src.read(1, window=Window(0, r0, src.width, r1 - r0))
    nodata = 255 if src.nodata is None else int(src.nodata)
    return data, data != nodata


def _polygonize(
    src: Any, conf: Any, out: Path, driver: str, names: list[str], min_area: float, simplify: float, strip_pixels: int
) -> PolygonizeResult:
    area = _pixel_area_m2(src)
    result = PolygonizeResult(out, pixel_area_m2=area)
    unit = area if area is not None else 1.0
    result.min_pixels = int(math.ceil(min_area / unit)) if min_area > 0 else 0
    strips = _strips(src.height, src.width, strip_pixels)
    result.strips = len(strips)
    # ---- pass 1: strip components, their sizes, continuations and neighbours
    comp_class: list[int] = [-1]  # id 0 = nodata
    sizes: list[NDArray[np.int64]] = [np.zeros(1, dtype=np.int64)]
    joins, touches = [], []
    prev: tuple[NDArray[np.int64], NDArray[Any]] | None = None
    for r0, r1 in strips:
        classes, valid = _read(src, r0, r1)
        if valid.any() and int(classes[valid].max()) >= len(names):
            raise ValueError(f"class map holds class {int(classes[valid].max())} but only {len(names)} names")
        labels, kinds = _label_strip(classes, valid, len(comp_class))
        comp_class += kinds
        first = len(comp_class) - len(kinds)
        sizes.append(np.bincount(labels[labels > 0] - first, minlength=len(kinds)).astype(np.int64))
        touches += [_pairs(labels[:, :-1], labels[:, 1:]), _pairs(labels[:-1], labels[1:])]
        if prev is not None:
            a, b = prev[0], labels[0]
            same = prev[1] == classes[0]
            joins.append(_pairs(np.where(same, a, 0), np.where(same, b, 0)))
            touches.append(_pairs(np.where(same, 0, a), np.where(same, 0, b)))
        prev = (labels[-1].copy(), classes[-1].copy())
        del labels, classes, valid
    n = len(comp_class)
    kind = np.asarray(comp_class, dtype=np.int64)
    comp = _components(n, np.concatenate([np.zeros((0, 2), dtype=np.int64), *joins]))
    reg_size = np.bincount(comp, weights=np.concatenate(sizes), minlength=n).astype(np.int64)
    reg_kind = np.full(n, -1, dtype=np.int64)
    reg_kind[comp] = kind
    edges = comp[np.concatenate([np.zeros((0, 2), dtype=np.int64), *touches])]
    edges = np.unique(np.sort(edges, axis=1), axis=0) if len(edges) else edges.reshape(0, 2)
    edges = edges[(edges[:, 0] != comp[0]) & (edges[:, 1] != comp[0]) & (edges[:, 0] != edges[:, 1])]
    del joins, touches
    # ---- sieve: small regions take their largest neighbour's class, until none with a neighbour is left
    region_of_comp, final_kind, result.removed_regions = sieve_regions(reg_size, reg_kind, edges, result.min_pixels)
    region = region_of_comp[comp]  # provisional id -> final region
    region[0] = -1
    nreg = int(region_of_comp.max()) + 1
    if nreg >= 2**31 - 1:
        raise ValueError("the class map has more than 2^31 regions; polygonise it in parts")
    r_kind = final_kind
    r_size = np.bincount(region[1:], weights=np.concatenate(sizes)[1:], minlength=nreg).astype(np.int64)
    r_conf = np.zeros(nreg, dtype=np.float64)
    del comp, kind, sizes, edges
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".regions-") as tmp:
        # ---- pass 2: the final region of every pixel, written strip by strip (+1: 0 is nodata), mean confidence
        ids_path = Path(tmp) / "regions.tif"
        profile = dict(
            driver="GTiff",
            height=src.height,
            width=src.width,
            count=1,
            dtype="int32",
            nodata=0,
            transform=src.transform,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            compress="deflate",
        )
        with rasterio.open(ids_path, "w", **profile) as dst:
            next_id = 1
            for r0, r1 in strips:
                classes, valid = _read(src, r0, r1)
                labels, kinds = _label_strip(classes, valid, next_id)
                next_id += len(kinds)
                ids = np.where(labels > 0, region[labels] + 1, 0).astype(np.int32)
                del labels, classes, valid
                if conf is not None:
                    values, _ = _read(conf, r0, r1)
                    r_conf += np.bincount(ids.ravel(), weights=values.ravel(), minlength=nreg + 1)[1:]
                dst.write(ids, 1, window=Window(0, r0, src.width, r1 - r0))
        # ---- pass 3: GDAL's polygoniser streams the region raster line by line; one polygon per region
        writer = _Writer(out, driver, src.crs, names, area is not None, conf is not None)
        with rasterio.open(ids_path) as regions:
            for geom, value in features.shapes(rasterio.band(regions, 1), connectivity=4, transform=src.transform):
                rid = int(value) - 1
                if rid < 0:
                    continue  # nodata is never a polygon
                mean = r_conf[rid] / max(r_size[rid], 1) if conf is not None else None
                shape = shapely.geometry.shape(geom)
                if simplify > 0:
                    shape = shapely.simplify(shape, simplify, preserve_topology=True)
                writer.add(shape, int(r_kind[rid]), int(r_size[rid]), area, mean)
        writer.close()
    result.features, result.per_class = writer.count, dict(writer.per_class)
    return result


class _Writer:
    """Appends polygons to an OGR file in batches (pyogrio), creating it with the first batch."""

    def __init__(self, path: Path, driver: str, crs: Any, names: list[str], projected: bool, confidence: bool) -> None:
        self.path, self.driver, self.names = path, driver, names
        self.crs = crs.to_wkt() if crs is not None else None
        self.projected, self.confidence = projected, confidence
        self.rows: list[tuple[Any, int, int, float | None, float | None]] = []
        self.count = 0
        self.per_class: defaultdict[str, int] = defaultdict(int)
        self.started = False

    def add(self, geom: Any, kind: int, pixels: int, area: float | None, conf: float | None) -> None:
        self.rows.append((geom, kind, pixels, pixels * area if area is not None else None, conf))
        self.per_class[self.names[kind]] += 1
        if len(self.rows) >= _WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        import pyogrio
        import shapely

        if not self.rows and self.started:
            return
        geoms, kinds, pixels, areas, confs = zip(*self.rows, strict=True) if self.rows else ((),) * 5
        data: list[NDArray[Any]] = [
            np.asarray(kinds, dtype=np.int32),
            np.asarray([self.names[k] for k in kinds], dtype=object),
            np.asarray(pixels, dtype=np.int64),
        ]
        fields = ["class_id", "class_name", "pixels"]
        if self.projected:
            data.append(np.asarray(areas, dtype=np.float64))
            fields.append("area_m2")
        if self.confidence:
            data.append(np.round(np.asarray(confs, dtype=np.float64), 2))
            fields.append("confidence")
        wkb = np.asarray([shapely.to_wkb(g) for g in geoms], dtype=object)
        gpkg = {"VERSION": "1.2"} if self.driver == "GPKG" and not self.started else None  # GDAL 3.6 warns on 1.4
        pyogrio.raw.write(self.path, wkb, data, fields, crs=self.crs, driver=self.driver, geometry_type="Polygon",
                          append=self.started, dataset_options=gpkg)
        self.count += len(self.rows)
        self.rows, self.started = [], True

    def close(self) -> None:
        self.flush()
