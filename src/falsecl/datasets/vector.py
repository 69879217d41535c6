"""Sparse polygon labels over georeferenced scenes: the practitioner's few-labels case.

Scenes are GeoTIFFs or VRT mosaics (a folder searched recursively, one file, or a VRT); labels are polygons in
any OGR format with a class attribute (:mod:`falsecl.datasets.vector_labels`). The polygons are reprojected to
each scene's CRS once, then rasterised *per window* when a patch is read (all-touched off: a pixel is labelled
when its centre lies inside a polygon), never as a whole-scene mask. Pixels outside every polygon get the ignore
index 255, so the loss and the metrics skip them; they are not "background". Where polygons of different classes
overlap, the feature that comes later in the file wins (GDAL's rasterisation order).

Patches: the shared tiling of each scene, keeping only windows that hold at least one labelled pixel; the label
fraction of the datamodule therefore applies to *labelled patches*. Validation is a seeded **spatial block
carve**: each scene is cut into blocks of ``val_block_size`` pixels, a seeded share of the blocks that hold
labelled patches is held out (:func:`~falsecl.datasets.subsets.carve_tiles`, the rule every dataset uses), and
``train`` keeps only patches that touch no held-out block, ``val`` only patches lying inside held-out blocks;
patches straddling the border are used by neither. Masks are filtered the same way, so even whole-scene reads
of one split never show the other split's labels. The held-out blocks go to ``val_tiles.txt`` like the carved
tiles of other datasets.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from falsecl.datasets.base import SampleFiles, SegmentationDataset, resolve_bands
from falsecl.datasets.errors import DatasetError, DatasetNotFoundError
from falsecl.datasets.io import IGNORE_INDEX, ImageInfo, read_info
from falsecl.datasets.subsets import carve_tiles
from falsecl.datasets.vector_labels import SceneLabels, rasterize_window, read_label_layer, reproject_labels
from falsecl.tiling import POLICIES, PaddingPolicy, Patch, tile_patches

#: Raster files taken from a scenes folder.
SCENE_SUFFIXES = (".tif", ".tiff", ".vrt")


@dataclass(frozen=True)
class VectorSource:
    """The options of the vector dataset beyond those every dataset has (``--data.labels`` ...).

    Attributes:
        labels: The vector file.
        class_field: Attribute holding the class.
        layer: Layer of a multi-layer file.
        classes: Class names fixing their order, or a palette file fixing order and colours.
        make_valid: Repair invalid geometries instead of stopping.
        val_block_size: Side of the validation blocks in scene pixels.
    """

    labels: str | None = None
    class_field: str | None = None
    layer: str | None = None
    classes: Sequence[str] | str | None = None
    make_valid: bool = False
    val_block_size: int = 1024

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`VectorLabels`."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def find_scenes(root: str | Path) -> list[Path]:
    """GeoTIFF/VRT scenes: ``root`` itself when it is a file, else every such file below it (sorted).

    Raises:
        DatasetNotFoundError: ``root`` does not exist or holds no scene.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DatasetNotFoundError(f"scenes {root} not found. Fix: pass a GeoTIFF, a VRT or a folder of them.")
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SCENE_SUFFIXES)
    if not found:
        raise DatasetNotFoundError(f"no GeoTIFF or VRT scene ({', '.join(SCENE_SUFFIXES)}) under {root}.")
    return found


class VectorLabels(SegmentationDataset):
    """Scenes (GeoTIFF/VRT) with sparse polygon labels; patches only where labels are.

    Args:
        root: A folder of scenes (searched recursively), one GeoTIFF, or a VRT mosaic.
        labels: The vector file (GeoPackage, Shapefile, GeoJSON ...).
        class_field: Attribute holding the class.
        layer: Layer of a multi-layer file.
        classes: Class names fixing their order (a list), or a palette file (``name: [r, g, b]``) fixing order
            and colours; ``None``: the sorted distinct values of ``class_field``.
        split: ``"train"``, ``"val"`` (the block carve) or ``"all"`` (every labelled patch).
        patch_size: Patch size; ``None`` gives whole scenes (masks still rasterised per read window).
        stride: Step between patches.
        padding: Tiling policy.
        bands: Band indices to keep (``None``: all).
        make_valid: Repair invalid geometries instead of stopping.
        val_block_size: Side of the validation blocks in scene pixels (at least ``patch_size``).
        val_fraction: Share of labelled blocks held out for validation.
        val_seed: Seed of the block carve.

    Raises:
        DatasetNotFoundError: Missing scenes or label file.
        DatasetError: Bad labels (see :func:`read_label_layer`), scenes without CRS, labels overlapping no
            scene, or too few labelled blocks to carve a validation split.
    """

    name = "vector"
    splits = ("train", "val", "all")
    image_pattern = "*.tif / *.vrt scenes"

    def __init__(
        self,
        root: str | Path,
        labels: str | Path | None = None,
        class_field: str | None = None,
        layer: str | None = None,
        classes: Sequence[str] | str | None = None,
        split: str = "train",
        patch_size: int | None = 256,
        stride: int | None = None,
        padding: PaddingPolicy = "flush",
        bands: str | Sequence[int] | None = None,
        make_valid: bool = False,
        val_block_size: int = 1024,
        val_fraction: float = 0.2,
        val_seed: int = 0,
    ) -> None:
        if labels is None or class_field is None:
            raise ValueError("the vector dataset needs --labels <vector file> and --class_field <attribute>")
        if split not in self.splits:
            raise ValueError(f"VectorLabels: unknown split {split!r}; use one of {', '.join(self.splits)}")
        if padding not in POLICIES:
            raise ValueError(f"unknown padding policy {padding!r}; use one of {', '.join(POLICIES)}")
        if patch_size is not None and val_block_size < patch_size:
            raise ValueError(f"val_block_size ({val_block_size}) must be at least the patch size ({patch_size})")
        self.root, self.split, self.patch_size, self.stride = Path(root), split, patch_size, stride
        self.padding: PaddingPolicy = padding
        self.band_indices = resolve_bands(bands, {"rgb": (0, 1, 2)})
        self.block_size, self.block_fraction, self.block_seed = val_block_size, val_fraction, val_seed
        self.labels = read_label_layer(labels, class_field, layer, classes, make_valid)
        self.classes, self.colours = self.labels.classes, self.labels.colours
        self.files: list[SampleFiles] = []
        self.infos: list[ImageInfo] = []
        self.scenes: list[SceneLabels] = []
        self._load_scenes()
        self._verify()
        labelled = self._labelled_patches(patch_size or 256, stride)
        self.val_tiles: list[str] = []
        self.held: set[str] = set()
        #: Blocks holding at least one labelled patch (the pool of the carve).
        self.num_blocks = len({p.tile for p in labelled})
        if split != "all":
            try:
                self.val_tiles = carve_tiles([p.tile for p in labelled], val_fraction, val_seed)
            except ValueError as err:
                raise DatasetError(
                    f"VectorLabels: the labels {self.labels.where} fall in {len({p.tile for p in labelled})} "
                    f"block(s) of {val_block_size} px: {err}. Fix: lower val_block_size or add polygons elsewhere."
                ) from err
            self.held = set(self.val_tiles)
        self.patches = self._split_patches(labelled) if patch_size is not None else self._whole_scenes()
        if not self.patches:
            raise DatasetError(
                f"VectorLabels: no {split} patch of {patch_size} px lies wholly on the {split} side of the "
                f"validation blocks ({val_block_size} px). Fix: raise val_block_size or lower the patch size."
            )

    # ------------------------------------------------------------------------------------------ scenes
    def _load_scenes(self) -> None:
        import rasterio

        any_labels = False
        for path in find_scenes(self.root):
            with rasterio.open(path) as src:
                if src.crs is None:
                    raise DatasetError(
                        f"scene {path} has no CRS, so the labels cannot be placed on it. Fix: georeference it "
                        "(gdal_edit.py -a_srs EPSG:xxxx, or export it with a CRS)."
                    )
                scene = reproject_labels(self.labels, src.crs, src.transform, src.height, src.width)
            key = path.relative_to(self.root).as_posix() if self.root.is_dir() else path.name
            self.files.append(SampleFiles(path, None, key))
            self.scenes.append(scene)
            any_labels = any_labels or len(scene.geometries) > 0
        if not any_labels:
            b = np.round(np.asarray(_total_bounds(self.labels.geometries)), 3).tolist()
            raise DatasetError(
                f"labels {self.labels.where} overlap none of the {len(self.files)} scene(s) under {self.root} "
                f"(labels' bounds {b} in their CRS). Fix: check that the labels belong to these scenes and that "
                "both CRSs are declared correctly."
            )

    def _verify(self) -> None:
        """Header checks of every scene (readable, same band count, band selection), as the other datasets."""
        for files in self.files:
            info = read_info(files.image)
            if self.infos and info.bands != self.infos[0].bands:
                raise DatasetError(
                    f"scene {files.image} has {info.bands} band(s) while {self.files[0].image} has "
                    f"{self.infos[0].bands}; all scenes need the same bands. Fix: select bands or split the scenes."
                )
            if self.band_indices is not None and max(self.band_indices) >= info.bands:
                raise DatasetError(f"scene {files.image} has {info.bands} band(s); cannot select {self.band_indices}.")
            self.infos.append(info)

    # ------------------------------------------------------------------------------------------ patches, blocks
    def _block(self, image: int, row: int, col: int) -> str:
        b = self.block_size
        return f"{self.files[image].tile}/block_r{row // b}_c{col // b}"

    def _blocks_touched(self, p: Patch) -> set[str]:
        b = self.block_size
        return {
            self._block(p.image_index, r * b, c * b)
            for r in range(p.row // b, (p.row + p.height - 1) // b + 1)
            for c in range(p.col // b, (p.col + p.width - 1) // b + 1)
        }

    def _labelled_patches(self, size: int, stride: int | None) -> list[Patch]:
        """Every window holding at least one labelled pixel; its tile is the block of its centre."""
        out = []
        for i, (info, scene) in enumerate(zip(self.infos, self.scenes, strict=True)):
            if len(scene.geometries) == 0:
                continue
            for p in tile_patches(i, "", info.height, info.width, size, stride, self.padding):
                h, w = min(p.height, info.height - p.row), min(p.width, info.width - p.col)
                if (rasterize_window(scene, p.row, p.col, h, w) != IGNORE_INDEX).any():
                    tile = self._block(i, p.row + p.height // 2, p.col + p.width // 2)
                    out.append(p._replace(tile=tile))
        return out

    def _split_patches(self, labelled: list[Patch]) -> list[Patch]:
        if self.split == "all":
            return labelled
        if self.split == "train":
            return [p for p in labelled if not self._blocks_touched(p) & self.held]
        return [p for p in labelled if self._blocks_touched(p) <= self.held]

    def _whole_scenes(self) -> list[Patch]:
        return [
            Patch(i, f.tile, 0, 0, info.height, info.width)
            for i, (f, info) in enumerate(zip(self.files, self.infos, strict=True))
            if len(self.scenes[i].geometries)
        ]

    def with_images(self, keep: Sequence[int], patch_size: int | None, stride: int | None = None) -> VectorLabels:
        """A view of the scenes ``keep`` tiled anew (``patch_size=None``: whole scenes); same labels and blocks."""
        view = copy.copy(self)
        view.files = [self.files[i] for i in keep]
        view.infos = [self.infos[i] for i in keep]
        view.scenes = [self.scenes[i] for i in keep]
        view.patch_size, view.stride = patch_size, stride
        if patch_size is None:
            view.patches = view._whole_scenes()
        else:
            view.patches = view._split_patches(view._labelled_patches(patch_size, stride))
        return view

    def split_units(self) -> set[Path]:
        """The blocks this split's patches touch, ``<scene>/block_r<i>_c<j>``.

        Train and val share scenes but never blocks, so the held-out checks compare blocks.
        """
        units = set()
        for p in self.patches:
            scene = self.files[p.image_index].image.resolve()
            units |= {scene / block.rsplit("/", 1)[1] for block in self._blocks_touched(p)}
        return units

    @property
    def split_description(self) -> str:
        """The block carve in words (recorded with checkpoints and metrics)."""
        if self.split == "all":
            return f"every labelled patch of {len(self.files)} scene(s)"
        return (
            f"spatial block carve of the labelled area: {len(self.val_tiles)} of {self.num_blocks} blocks of "
            f"{self.block_size} x {self.block_size} px held out (seed {self.block_seed}): " + ", ".join(self.val_tiles)
        )

    # ------------------------------------------------------------------------------------------ reading
    def read_patch_mask(self, p: Patch) -> NDArray[np.int64]:
        """Class indices ``(h, w)`` of window ``p``: polygons rasterised now, 255 elsewhere and off-split."""
        info = self.infos[p.image_index]
        h, w = max(0, min(p.height, info.height - p.row)), max(0, min(p.width, info.width - p.col))
        mask = np.full((p.height, p.width), IGNORE_INDEX, dtype=np.int64)
        if h and w:
            mask[:h, :w] = rasterize_window(self.scenes[p.image_index], p.row, p.col, h, w)
            if self.held:
                self._hide_other_split(mask, p)
        return mask

    def _hide_other_split(self, mask: NDArray[np.int64], p: Patch) -> None:
        """Set the pixels of blocks that belong to the other split to ignore (in place)."""
        b = self.block_size
        for r in range(p.row // b, (p.row + p.height - 1) // b + 1):
            for c in range(p.col // b, (p.col + p.width - 1) // b + 1):
                held = self._block(p.image_index, r * b, c * b) in self.held
                if held != (self.split == "val"):
                    r0, c0 = max(r * b - p.row, 0), max(c * b - p.col, 0)
                    mask[r0 : (r + 1) * b - p.row, c0 : (c + 1) * b - p.col] = IGNORE_INDEX


def _total_bounds(geoms: NDArray[Any]) -> tuple[float, float, float, float]:
    import shapely

    b = shapely.total_bounds(geoms)
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
