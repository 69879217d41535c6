"""``falsecl data check vector`` and ``data plot vector``: what the polygon labels give, before training on them.

:func:`check_vector` counts, per class and in total, the polygons that fall on a scene and the pixels they label
at each scene's resolution after reprojection (all-touched off, overlaps resolved as in training: the later
feature in the file wins), lists polygons outside every scene, polygons that label no pixel (smaller than a
pixel centre spacing) and overlapping polygons of different classes. Scenes are rasterised in blocks, never
whole. :func:`plot_scene` draws a scene with its polygons outlined in the class colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from falsecl.datasets.vector import VectorLabels
from falsecl.datasets.vector_labels import rasterize_window

#: Side of the blocks a scene is counted in.
COUNT_BLOCK = 1024
#: Share of the smaller polygon two polygons must have in common to count as overlapping.
OVERLAP_TOLERANCE = 1e-6


@dataclass
class VectorCheck:
    """The result of :func:`check_vector`.

    Attributes:
        classes: Class names.
        polygons: Polygons per class that fall on at least one scene.
        pixels: Labelled pixels per class, over all scenes.
        scene_pixels: Pixels of all scenes.
        outside: Feature ids of polygons that overlap no scene.
        empty: Feature ids of polygons on a scene that label no pixel.
        overlaps: ``(fid, class, later fid, its class)`` of overlapping polygons of different classes; the later
            feature wins.
    """

    classes: tuple[str, ...]
    polygons: list[int]
    pixels: list[int]
    scene_pixels: int
    outside: list[int] = field(default_factory=list)
    empty: list[int] = field(default_factory=list)
    overlaps: list[tuple[int, str, int, str]] = field(default_factory=list)

    @property
    def labelled_share(self) -> float:
        """Labelled pixels / scene pixels."""
        return sum(self.pixels) / max(self.scene_pixels, 1)

    def lines(self) -> list[str]:
        """The report as printed by ``falsecl data check vector``."""
        total = max(sum(self.pixels), 1)
        out = [f"{'class':<20} {'polygons':>9} {'pixels':>14} {'share':>8}"]
        for name, n, px in zip(self.classes, self.polygons, self.pixels, strict=True):
            out.append(f"{name:<20} {n:>9,d} {px:>14,d} {100 * px / total:>7.2f} %")
        out.append(f"{'total':<20} {sum(self.polygons):>9,d} {sum(self.pixels):>14,d} {100.0:>7.2f} %")
        out.append(
            f"labelled share of the scenes: {100 * self.labelled_share:.3f} % of {self.scene_pixels:,d} pixels "
            "(the rest is ignored by the loss and the metrics)"
        )
        out.append(f"polygons outside every scene: {len(self.outside)}" + _fids(self.outside))
        out.append(f"polygons on a scene that label no pixel centre: {len(self.empty)}" + _fids(self.empty))
        out.append(
            f"overlapping polygons of different classes: {len(self.overlaps)} (the later feature in the file wins)"
        )
        out += [f"  fid {a} ({ca}) under fid {b} ({cb})" for a, ca, b, cb in self.overlaps[:10]]
        return out


def _fids(fids: list[int]) -> str:
    return (" (fid " + ", ".join(map(str, fids[:10])) + (" ..." if len(fids) > 10 else "") + ")") if fids else ""


def check_vector(dataset: VectorLabels) -> VectorCheck:
    """Count what the labels of ``dataset`` give on its scenes (see the module docstring).

    Args:
        dataset: The vector dataset (any split: the counts cover every polygon).

    Returns:
        The counts.
    """
    import shapely

    labels = dataset.labels
    k = len(labels.classes)
    per_feature = np.zeros(len(labels), dtype=np.int64)
    on_scene = np.zeros(len(labels), dtype=bool)
    scene_pixels = 0
    for info, scene in zip(dataset.infos, dataset.scenes, strict=True):
        scene_pixels += info.height * info.width
        on_scene[scene.features] = True
        burn = scene.features + 1  # feature position + 1; 0 = unlabelled
        for r0 in range(0, info.height, COUNT_BLOCK):
            for c0 in range(0, info.width, COUNT_BLOCK):
                h, w = min(COUNT_BLOCK, info.height - r0), min(COUNT_BLOCK, info.width - c0)
                ids = rasterize_window(scene, r0, c0, h, w, values=burn, fill=0, dtype="int32")
                per_feature += np.bincount(ids.ravel(), minlength=len(labels) + 1)[1:]
    polygons = np.bincount(labels.class_ids[on_scene], minlength=k)
    pixels = np.bincount(labels.class_ids, weights=per_feature, minlength=k).astype(np.int64)
    result = VectorCheck(labels.classes, polygons.tolist(), pixels.tolist(), scene_pixels)
    result.outside = labels.fids[~on_scene].tolist()
    result.empty = labels.fids[on_scene & (per_feature == 0)].tolist()
    tree = shapely.STRtree(labels.geometries)
    a, b = tree.query(labels.geometries, predicate="intersects")
    keep = (a < b) & (labels.class_ids[a] != labels.class_ids[b])
    a, b = a[keep], b[keep]
    if len(a):
        area = shapely.area(shapely.intersection(labels.geometries[a], labels.geometries[b]))
        # Neighbours sharing an edge overlap by rounding only (after reprojection): not an overlap.
        smaller = np.minimum(shapely.area(labels.geometries[a]), shapely.area(labels.geometries[b]))
        real = area > OVERLAP_TOLERANCE * smaller
        a, b = a[real], b[real]
    names = labels.classes
    result.overlaps = [
        (int(labels.fids[i]), names[labels.class_ids[i]], int(labels.fids[j]), names[labels.class_ids[j]])
        for i, j in zip(a, b, strict=True)
    ]
    return result


def plot_scene(dataset: VectorLabels, out_path: str | Path, scene: int | None = None, max_size: int = 1024) -> Path:
    """Write a PNG of one scene (RGB, 2-98 % stretch, read at reduced size) with its polygons outlined.

    Args:
        dataset: The vector dataset.
        out_path: PNG file.
        scene: Index of the scene in ``dataset.files`` (``None``: the one with the most polygons).
        max_size: Longest side of the picture in pixels (the scene is read decimated, never whole).

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    import shapely
    import torch
    from matplotlib.patches import Patch as LegendPatch

    from falsecl.datasets.display import display_rgb

    if scene is None:
        scene = int(np.argmax([len(s.geometries) for s in dataset.scenes]))
    if not 0 <= scene < len(dataset.files):
        raise ValueError(f"scene {scene} does not exist; there are {len(dataset.files)} scene(s)")
    path, info = dataset.files[scene].image, dataset.infos[scene]
    scale = min(1.0, max_size / max(info.height, info.width))
    shape = (max(1, round(info.height * scale)), max(1, round(info.width * scale)))
    with rasterio.open(path) as src:
        bands = [b + 1 for b in (dataset.band_indices or range(src.count))][:3]
        image = src.read(bands, out_shape=(len(bands), *shape))
    fig, ax = plt.subplots(figsize=(8, 8 * shape[0] / shape[1]))
    ax.imshow(display_rgb(torch.from_numpy(image.astype(np.float32)), (0, 1, 2) if len(bands) >= 3 else None))
    lines = dataset.scenes[scene]
    inverse = ~lines.transform
    for geom, k in zip(lines.geometries, lines.class_ids, strict=True):
        colour = tuple(c / 255 for c in dataset.colours[k])
        for ring in _rings(geom):
            xy = np.array([inverse * tuple(p) for p in shapely.get_coordinates(ring)]) * [
                shape[1] / info.width,
                shape[0] / info.height,
            ]
            ax.plot(xy[:, 0] - 0.5, xy[:, 1] - 0.5, color=colour, linewidth=1.2)
    handles: list[Any] = [
        LegendPatch(edgecolor=(col[0] / 255, col[1] / 255, col[2] / 255), facecolor="none", label=name)
        for name, col in zip(dataset.classes, dataset.colours, strict=True)
    ]
    ax.legend(handles=handles, loc="lower right", fontsize=7)
    ax.set_title(f"{path.name}: {len(lines.geometries)} polygon(s)", fontsize=8)
    ax.axis("off")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def _rings(geom: Any) -> list[Any]:
    import shapely

    rings = []
    for poly in shapely.get_parts(geom):
        rings.append(shapely.get_exterior_ring(poly))
        rings += list(shapely.get_rings(poly)[1:])
    return rings
