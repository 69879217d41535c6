"""ISPRS Potsdam and Vaihingen in the three layouts users have on disk.

* :class:`PotsdamTiles`: the original release, 38 GeoTIFF tiles of 6000 x 6000 px at 5 cm,
  ``4_Ortho_RGBIR/top_potsdam_<r>_<c>_RGBIR.tif`` (4 bands R, G, B, IR) with RGB colour labels
  ``5_Labels_all/top_potsdam_<r>_<c>_label.tif``; official split of 24 training and 14 test tiles. Patches are
  read with rasterio windows, never whole tiles.
* :class:`PotsdamPatches` / :class:`VaihingenPatches`: the 256 x 256 patch folders distributed with FALSE
  (Zhang et al., GRSL 2022): ``<split>_RGBIR/<name>.tif`` (4 bands, uint8) and ``<split>_lbl/<name>.tif`` (RGB
  colour label of the same name).
* :class:`ISPRSMMSeg`: the mmsegmentation-converted layout ``img_dir[/<split>]/*.png`` with index masks
  ``ann_dir[/<split>]/*.png`` where 0 is boundary/ignore and 1..6 the classes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from falsecl.datasets.base import SampleFiles, SegmentationDataset
from falsecl.datasets.display import Colour
from falsecl.datasets.errors import DatasetNotFoundError

ISPRS_CLASSES = ("impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter")
ISPRS_COLOURS: tuple[Colour, ...] = (
    (255, 255, 255),
    (0, 0, 255),
    (0, 255, 255),
    (0, 255, 0),
    (255, 255, 0),
    (255, 0, 0),
)
# Black marks the eroded boundaries of the "no boundary" label variant: not a class.
ISPRS_IGNORE: tuple[Colour, ...] = ((0, 0, 0),)

POTSDAM_TRAIN = (
    "2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11", "5_12",
    "6_7", "6_8", "6_9", "6_10", "6_11", "6_12", "7_7", "7_8", "7_9", "7_10", "7_11", "7_12",
)  # fmt: skip
POTSDAM_TEST = (
    "2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15", "6_13", "6_14", "6_15",
    "7_13",
)  # fmt: skip
#: Official ISPRS Vaihingen split: areas with published ground truth (training) and the held-out test areas.
VAIHINGEN_TRAIN = (1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37)
VAIHINGEN_TEST = (2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38)


class PotsdamTiles(SegmentationDataset):
    """ISPRS Potsdam, original release: 4-band GeoTIFF tiles with RGB colour labels, read in windows.

    Splits: ``test`` = the 14 official test tiles; ``val`` = 3 of the 24 official training tiles, drawn with a
    fixed seed, and ``train`` = the other 21, so model selection never looks at the test tiles (mmsegmentation
    and most papers validate on the test tiles themselves).

    Args:
        root: Folder holding ``4_Ortho_RGBIR/`` and ``5_Labels_all/``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        patch_size: Patch size (256 by default); ``None`` yields whole 6000 x 6000 tiles.
        stride: Step between patches.
        padding: Tiling policy.
        bands: ``"rgb"`` or ``"rgbir"`` (default), or 0-based band indices.
        tiles: Explicit tile ids (``"2_10"`` ...) instead of the official split.
    """

    name = "potsdam"
    classes = ISPRS_CLASSES
    colours = ISPRS_COLOURS
    ignore_colours = ISPRS_IGNORE
    split_tiles: ClassVar[dict[str, tuple[str, ...]]] = {"train": POTSDAM_TRAIN, "test": POTSDAM_TEST}
    carve_val = True
    image_pattern = "4_Ortho_RGBIR/top_potsdam_{tile}_RGBIR.tif"
    mask_pattern = "5_Labels_all/top_potsdam_{tile}_label.tif"
    expected_bands = 4
    band_sets: ClassVar[dict[str, tuple[int, ...]]] = {"rgb": (0, 1, 2), "rgbir": (0, 1, 2, 3)}

    def __init__(
        self,
        root: str,
        split: str = "train",
        patch_size: int | None = 256,
        stride: int | None = None,
        padding: str = "flush",
        bands: str | list[int] | None = "rgbir",
        tiles: list[str] | None = None,
    ) -> None:
        self.tiles = list(tiles) if tiles is not None else None
        super().__init__(root, split, patch_size, stride, padding, bands)  # type: ignore[arg-type]

    def _carves_val(self) -> bool:
        return self.tiles is None  # explicit tiles are the user's own choice, taken as given

    def _find_files(self) -> list[SampleFiles]:
        tiles = self.tiles if self.tiles is not None else self.split_tiles[self.split]
        for folder in ("4_Ortho_RGBIR", "5_Labels_all"):
            if not (self.root / folder).is_dir():
                raise DatasetNotFoundError(
                    f"PotsdamTiles: folder {self.root / folder} not found. Fix: pass the folder of the "
                    "original ISPRS "
                    "release that holds 4_Ortho_RGBIR/ and 5_Labels_all/ (unzip both archives there)."
                )
        return [
            SampleFiles(
                self._require(self.root / self.image_pattern.format(tile=t), "image tile"),
                self._require(self.root / self.mask_pattern.format(tile=t), "label tile"),
                t,
            )
            for t in tiles
        ]


class ISPRSPatches(SegmentationDataset):
    """ISPRS patch folders as distributed with FALSE: ``<split>_RGBIR/*.tif`` + ``<split>_lbl/*.tif``.

    The tile of a patch (for label-fraction stratification) is its name without trailing ``_<number>`` groups.
    The distributed ``val`` folder holds the patches papers report on, so it is falsecl's ``test`` split; ``val``
    is a seeded carve of the training tiles (``train`` excludes them).
    """

    classes = ISPRS_CLASSES
    colours = ISPRS_COLOURS
    ignore_colours = ISPRS_IGNORE
    splits = ("train", "val", "test")
    split_sources: ClassVar[dict[str, str]] = {"test": "val"}
    carve_val = True
    image_pattern = "{split}_RGBIR/*.tif"
    mask_pattern = "{split}_lbl/{name}"
    band_sets: ClassVar[dict[str, tuple[int, ...]]] = {"rgb": (0, 1, 2), "rgbir": (0, 1, 2, 3)}

    def _find_files(self) -> list[SampleFiles]:
        folder = self._require(self.root / f"{self.split}_RGBIR", "image folder")
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        return [
            SampleFiles(
                image,
                self._require(
                    self.root / self.mask_pattern.format(split=self.split, name=image.name), "label"
                ),
                re.sub(r"(_\d+){1,2}$", "", image.stem) or image.stem,
            )
            for image in images
        ]


class PotsdamPatches(ISPRSPatches):
    """Potsdam 256 x 256 patches (4 bands R, G, B, IR, uint8) with RGB colour labels."""

    name = "potsdam_patches"
    expected_bands = 4


class VaihingenPatches(ISPRSPatches):
    """Vaihingen patches in the same folder layout (bands as stored; every file must have the same count)."""

    name = "vaihingen_patches"
    expected_bands = None
    rgb_bands = None  # Vaihingen is IR-R-G false colour: no true RGB triplet for colour jitter


class ISPRSMMSeg(SegmentationDataset):
    """ISPRS crops converted by mmsegmentation: ``img_dir[/<split>]/*.png`` + ``ann_dir[/<split>]/*.png``.

    Index masks: 0 = boundary/ignore, 1..6 = impervious, building, low vegetation, tree, car, clutter. With
    split sub-folders (``img_dir/train``, ``img_dir/val``) use those splits; a flat ``img_dir`` is the split
    ``"all"``. The tile of a crop ``2_10_0_0_512_512.png`` is ``2_10`` (the name without the four offsets).
    With split folders, ``img_dir/val`` (the test tiles in mmsegmentation's conversion) is falsecl's ``test``
    split and ``val`` is a seeded carve of the training tiles.
    """

    name = "isprs_mmseg"
    classes = ISPRS_CLASSES
    colours = ISPRS_COLOURS
    index_map: dict[int, int] = {0: 255, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5}
    splits = ("train", "val", "test", "all")
    image_pattern = "img_dir/{split}/*.png"
    mask_pattern = "ann_dir/{split}/{name}"

    split_sources: ClassVar[dict[str, str]] = {"test": "val"}

    def _carves_val(self) -> bool:
        # mmsegmentation's conversion has train/ and val/ (the test tiles); a layout with its own test/ keeps val.
        img_dir = self.root / "img_dir"
        return (img_dir / "train").is_dir() and not (img_dir / "test").is_dir()

    @classmethod
    def default_split(cls, root: str | Path) -> str:
        """``"train"`` when ``img_dir/train`` exists, else ``"all"`` (flat layout)."""
        return "train" if (Path(root) / "img_dir" / "train").is_dir() else "all"

    def _find_files(self) -> list[SampleFiles]:
        img_dir = self._require(self.root / "img_dir", "folder")
        sub = "" if self.split == "all" else self.split
        folder = img_dir / sub
        if sub and not folder.is_dir():
            raise DatasetNotFoundError(
                f"ISPRSMMSeg: no split folder {folder}. Fix: a flat img_dir/ (no split sub-folders) is the "
                "split "
                "'all' (use --split all / split='all')."
            )
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
        out = []
        for image in images:
            mask = self._require(self.root / "ann_dir" / sub / image.name, "annotation")
            tile = re.sub(r"(_\d+){4}$", "", image.stem) or image.stem
            out.append(SampleFiles(image, mask, tile))
        return out
