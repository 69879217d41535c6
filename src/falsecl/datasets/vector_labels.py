"""Sparse polygon labels (GeoPackage, Shapefile, GeoJSON ...): read with pyogrio, placed on scenes with shapely.

A practitioner's labels are a handful of polygons digitised in a GIS, each with a class attribute, often in
another CRS than the imagery. This module reads them once, checks every feature (geometry, class value) and
names the offending feature id and the fix in each error. Reprojection and rasterisation happen per scene and
per window in :mod:`falsecl.datasets.vector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from falsecl.datasets.errors import DatasetError, DatasetNotFoundError
from falsecl.datasets.io import IGNORE_INDEX

Colour = tuple[int, int, int]
#: Features named in one error message before "... and N more".
_SHOWN = 5
_POLYGONAL = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class LabelLayer:
    """Polygon labels of one vector layer, in the layer's own CRS.

    Attributes:
        path: The vector file.
        layer: Layer name (``None`` for single-layer files).
        class_field: Attribute holding the class.
        crs: CRS of the layer (WKT).
        geometries: ``(N,)`` shapely (Multi)Polygons, valid and non-empty, in file order.
        fids: ``(N,)`` feature ids as the file numbers them (shown in errors and reports).
        class_ids: ``(N,)`` class index of each feature (position in :attr:`classes`).
        classes: Class names, in class-index order.
        colours: Display colour of each class.
    """

    path: Path
    layer: str | None
    class_field: str
    crs: str
    geometries: NDArray[Any]
    fids: NDArray[np.int64]
    class_ids: NDArray[np.int64]
    classes: tuple[str, ...]
    colours: tuple[Colour, ...]

    def __len__(self) -> int:
        return len(self.fids)

    @property
    def where(self) -> str:
        """``"<file>"`` or ``"<file> (layer <name>)"`` for messages."""
        return f"{self.path}" + (f" (layer {self.layer!r})" if self.layer else "")


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _value_name(value: Any) -> str:
    """A class value as a name: integers (also stored as floats) without a decimal point."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _default_colour(i: int) -> Colour:
    import matplotlib

    r, g, b = matplotlib.colormaps["tab20"](i % 20)[:3]
    return (int(r * 255), int(g * 255), int(b * 255))


def _resolve_classes(
    values: Sequence[Any], classes: Sequence[str] | str | None, where: str
) -> tuple[tuple[str, ...], tuple[Colour, ...]]:
    """Class names and colours: given as names, as a palette file (name: colour), or the sorted distinct values."""
    if isinstance(classes, str | Path):
        from falsecl.datasets.folder import load_palette

        names, table, display = load_palette(classes)
        if table and isinstance(next(iter(table)), int):
            display = [_default_colour(i) for i in range(len(names))]
        return tuple(names), tuple(display)
    if classes is not None:
        names = [str(c) for c in classes]
        if len(set(names)) != len(names):
            raise DatasetError(f"classes {names} name a class twice; list each class once.")
        return tuple(names), tuple(_default_colour(i) for i in range(len(names)))
    distinct = set(values)
    numeric = all(isinstance(v, int | float | np.integer | np.floating) for v in distinct)
    ordered = sorted(distinct) if numeric else sorted(distinct, key=str)
    names = [_value_name(v) for v in ordered]
    if not names:
        raise DatasetError(f"labels {where} have no feature with a class value.")
    return tuple(names), tuple(_default_colour(i) for i in range(len(names)))


def read_label_layer(
    path: str | Path,
    class_field: str,
    layer: str | None = None,
    classes: Sequence[str] | str | None = None,
    make_valid: bool = False,
) -> LabelLayer:
    """Read and check polygon labels from any OGR vector format.

    Args:
        path: GeoPackage, Shapefile, GeoJSON, FlatGeobuf ... file.
        class_field: Attribute holding each polygon's class (text or integer).
        layer: Layer of a multi-layer file (GeoPackage); required when the file has several.
        classes: Class names fixing the class order (a list), or a palette file ``name: [r, g, b]`` fixing
            order and colours; ``None`` takes the sorted distinct values of ``class_field``.
        make_valid: Repair invalid geometries with :func:`shapely.make_valid` (keeping their polygonal part)
            instead of stopping.

    Returns:
        The checked layer.

    Raises:
        DatasetNotFoundError: The file does not exist.
        DatasetError: Several layers and none named, an unknown layer, a missing field or CRS, null, empty,
            non-polygonal or invalid geometries, null class values or values missing from ``classes``. Each
            message names the feature ids and the fix.
    """
    import pyogrio
    import shapely

    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"label file {path} not found. Fix: pass the GeoPackage/Shapefile/GeoJSON file.")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as err:  # noqa: BLE001 - any OGR error: not a vector file
        raise DatasetError(f"cannot read labels {path}: {err}. Is it a vector file (GPKG, SHP, GeoJSON)?") from err
    if layer is None and len(layers) > 1:
        raise DatasetError(
            f"labels {path} hold {len(layers)} layers ({', '.join(layers)}). Fix: name one with --layer."
        )
    if layer is not None and layer not in layers:
        raise DatasetError(f"labels {path} have no layer {layer!r}; layers: {', '.join(layers)}.")
    where = f"{path}" + (f" (layer {layer!r})" if layer else "")
    info = pyogrio.read_info(path, layer=layer)
    fields = [str(f) for f in info["fields"]]
    if class_field not in fields:
        raise DatasetError(
            f"labels {where} have no field {class_field!r}; fields: {', '.join(fields) or 'none'}. Fix: pass "
            "the attribute that holds the class with --class_field."
        )
    if not info["crs"]:
        raise DatasetError(
            f"labels {where} have no CRS, so they cannot be placed on the imagery. Fix: assign the CRS they were "
            "digitised in (QGIS: Layer > Set CRS; or ogr2ogr -a_srs EPSG:xxxx out.gpkg in.gpkg)."
        )
    meta, fids, wkb, field_data = pyogrio.raw.read(path, layer=layer, columns=[class_field], return_fids=True)
    fids = np.asarray(fids, dtype=np.int64)
    geoms = shapely.from_wkb(wkb)
    values = list(field_data[0])
    bad = [f"fid {fid}" for fid, g in zip(fids, geoms, strict=True) if g is None or shapely.is_empty(g)]
    if bad:
        raise DatasetError(
            f"labels {where}: {len(bad)} feature(s) without geometry or with an empty one: {_listing(bad)}. "
            "Fix: delete them or redraw their polygons."
        )
    kinds = shapely.get_type_id(geoms)
    wrong = [
        f"fid {fid} ({shapely.geometry_type_name(g)})"
        for fid, g, k in zip(fids, geoms, kinds, strict=True)
        if k not in (3, 6)
    ]
    if wrong:
        raise DatasetError(
            f"labels {where}: {len(wrong)} feature(s) are not polygons: {_listing(wrong)}. Fix: keep polygon "
            "features only (points and lines have no area to label)."
        )
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        if not make_valid:
            reasons = [
                f"fid {fid} ({shapely.is_valid_reason(g)})"
                for fid, g in zip(fids[invalid], geoms[invalid], strict=True)
            ]
            raise DatasetError(
                f"labels {where}: {len(reasons)} invalid geometr{'y' if len(reasons) == 1 else 'ies'}: "
                f"{_listing(reasons)}. Fix: repair them (QGIS: Fix geometries), or pass make_valid=True "
                "(--make_valid true) to repair them with shapely.make_valid."
            )
        geoms[invalid] = [polygonal_part(shapely.make_valid(g)) for g in geoms[invalid]]
        empty = [f"fid {fid}" for fid, g in zip(fids[invalid], geoms[invalid], strict=True) if g.is_empty]
        if empty:
            raise DatasetError(f"labels {where}: repairing left no area for {_listing(empty)}; delete them.")
    nulls = [f"fid {fid}" for fid, v in zip(fids, values, strict=True) if v is None or v != v]
    if nulls:
        raise DatasetError(
            f"labels {where}: {len(nulls)} feature(s) have no value in {class_field!r}: {_listing(nulls)}. "
            "Fix: fill in their class or delete them."
        )
    names, colours = _resolve_classes(values, classes, where)
    if len(names) > 255:
        raise DatasetError(f"labels {where}: {len(names)} classes; at most 255 fit a class map (255 is ignore).")
    index = {n: i for i, n in enumerate(names)}
    missing = [
        f"fid {fid} ({_value_name(v)!r})" for fid, v in zip(fids, values, strict=True) if _value_name(v) not in index
    ]
    if missing:
        raise DatasetError(
            f"labels {where}: {len(missing)} feature(s) have a {class_field!r} value that is not among the "
            f"classes {list(names)}: {_listing(missing)}. Fix: add the value to --classes or correct the features."
        )
    class_ids = np.array([index[_value_name(v)] for v in values], dtype=np.int64)
    return LabelLayer(path, layer, class_field, str(meta["crs"]), geoms, fids, class_ids, names, colours)


def polygonal_part(geom: Any) -> Any:
    """The polygonal part of a repaired geometry (make_valid may return a collection with lines)."""
    import shapely

    if shapely.get_type_id(geom) in (3, 6):
        return geom
    parts = [p for p in shapely.get_parts(geom) if shapely.get_type_id(p) in (3, 6)]
    return shapely.union_all(parts) if parts else shapely.Polygon()


@dataclass
class SceneLabels:
    """The polygons of one scene, reprojected to its CRS, in file order.

    Attributes:
        transform: The scene's affine pixel -> map transform.
        geometries: ``(M,)`` shapely polygons in the scene's CRS.
        class_ids: ``(M,)`` class index of each.
        features: ``(M,)`` position of each in the :class:`LabelLayer` (file order).
    """

    transform: Any
    geometries: NDArray[Any]
    class_ids: NDArray[np.int64]
    features: NDArray[np.int64]
    _tree: Any = None

    def query(self, bounds: tuple[float, float, float, float]) -> NDArray[np.int64]:
        """Positions (ascending, i.e. file order) of polygons whose box meets ``(left, bottom, right, top)``."""
        import shapely

        if len(self.geometries) == 0:
            return np.zeros(0, dtype=np.int64)
        if self._tree is None:
            self._tree = shapely.STRtree(self.geometries)
        return np.sort(self._tree.query(shapely.box(*bounds))).astype(np.int64)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tree": None}  # rebuilt in each DataLoader worker


def rasterize_window(
    scene: SceneLabels,
    row: int,
    col: int,
    height: int,
    width: int,
    values: NDArray[Any] | None = None,
    fill: int = IGNORE_INDEX,
    dtype: str = "uint8",
) -> NDArray[Any]:
    """Burn the scene's polygons into one window (all-touched off; later features win where they overlap).

    Args:
        scene: The scene's polygons.
        row: Top row of the window.
        col: Left column of the window.
        height: Window rows.
        width: Window columns.
        values: Value burnt for each polygon (default: its class index).
        fill: Value of pixels outside every polygon.
        dtype: Output dtype.

    Returns:
        ``(height, width)`` array.
    """
    from rasterio import features, windows

    out = np.full((height, width), fill, dtype=dtype)
    window = windows.Window(col, row, width, height)
    bounds = windows.bounds(window, scene.transform)
    left, bottom, right, top = bounds
    hits = scene.query((min(left, right), min(bottom, top), max(left, right), max(bottom, top)))
    if len(hits) == 0:
        return out
    burn = scene.class_ids if values is None else values
    shapes = ((scene.geometries[i], int(burn[i])) for i in hits)
    transform = windows.transform(window, scene.transform)
    burnt: NDArray[Any] = features.rasterize(shapes, out=out, transform=transform, all_touched=False)
    return burnt


def reproject_labels(labels: LabelLayer, crs: Any, transform: Any, height: int, width: int) -> SceneLabels:
    """The polygons of ``labels`` that overlap a scene, reprojected into the scene's CRS.

    Args:
        labels: The label layer.
        crs: The scene's CRS (rasterio ``CRS``).
        transform: The scene's transform.
        height: Scene rows.
        width: Scene columns.

    Returns:
        The scene's polygons, in file order.
    """
    import shapely
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds, transform_geom

    corners = np.array([transform @ (c, r) for r, c in ((0, 0), (0, width), (height, width), (height, 0))])
    footprint = shapely.Polygon(corners)
    src = CRS.from_user_input(labels.crs)
    box = transform_bounds(crs, src, *footprint.bounds, densify_pts=21)
    tree = shapely.STRtree(labels.geometries)
    candidates = np.sort(tree.query(shapely.box(*box))).astype(np.int64)
    if len(candidates) and src != crs:
        moved = transform_geom(src, crs, [shapely.geometry.mapping(g) for g in labels.geometries[candidates]])
        geoms = np.array([shapely.geometry.shape(g) for g in moved], dtype=object)
    else:
        geoms = labels.geometries[candidates]
    keep = shapely.intersects(geoms, footprint) if len(geoms) else np.zeros(0, dtype=bool)
    geoms = geoms[keep]
    # Reprojection can fold a valid ring (near-degenerate slivers); repair those, keeping only areas.
    broken = ~shapely.is_valid(geoms) if len(geoms) else np.zeros(0, dtype=bool)
    if broken.any():
        geoms[broken] = [polygonal_part(shapely.make_valid(g)) for g in geoms[broken]]
    return SceneLabels(transform, geoms, labels.class_ids[candidates[keep]], candidates[keep])
