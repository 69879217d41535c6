"""LoveDA (Wang et al., NeurIPS Datasets and Benchmarks 2021).

Layout: ``<root>/{Train,Val}/{Urban,Rural}/{images_png,masks_png}/*.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from falsecl.datasets.base import SampleFiles, SegmentationDataset
from falsecl.datasets.display import Colour
from falsecl.datasets.errors import DatasetNotFoundError


class LoveDA(SegmentationDataset):
    """LoveDA: 1024 x 1024 RGB PNG with index masks; 0 = no-data (ignored), 1..7 = the classes.

    Args:
        root: Folder holding ``Train/`` and ``Val/``.
        split: ``"train"``, ``"val"`` (a seeded carve of the ``Train`` images) or ``"test"`` (the official
            ``Val`` folder; the official test set has no public masks).
        patch_size: Patch size; ``None`` for whole images.
        stride: Step between patches.
        padding: Tiling policy.
        bands: Band choice (``None``: all three).
        scenes: Domains to include, ``"urban"`` and/or ``"rural"``.
    """

    name = "loveda"
    classes = ("background", "building", "road", "water", "barren", "forest", "agriculture")
    colours: tuple[Colour, ...] = (
        (255, 255, 255),
        (255, 0, 0),
        (255, 255, 0),
        (0, 0, 255),
        (159, 129, 183),
        (0, 255, 0),
        (255, 195, 128),
    )
    index_map: dict[int, int] = {0: 255, **{i: i - 1 for i in range(1, 8)}}
    splits = ("train", "val", "test")
    # The official test set has no public masks, so results are reported on the official Val folder: that is
    # falsecl's test split, and validation is a seeded carve of the training scenes.
    split_sources: ClassVar[dict[str, str]] = {"test": "val"}
    carve_val = True
    image_pattern = "{Split}/{Scene}/images_png/*.png"
    mask_pattern = "{Split}/{Scene}/masks_png/{name}"
    expected_bands = 3

    def __init__(
        self,
        root: str,
        split: str = "train",
        patch_size: int | None = 256,
        stride: int | None = None,
        padding: str = "flush",
        bands: str | list[int] | None = None,
        scenes: Sequence[str] = ("urban", "rural"),
    ) -> None:
        bad = [s for s in scenes if s not in ("urban", "rural")]
        if bad or not scenes:
            raise ValueError(f"LoveDA scenes must be 'urban' and/or 'rural', got {list(scenes)}")
        self.scenes = tuple(scenes)
        super().__init__(root, split, patch_size, stride, padding, bands)  # type: ignore[arg-type]

    def _find_files(self) -> list[SampleFiles]:
        out = []
        for scene in self.scenes:
            folder = self._require(self.root / self.split.capitalize() / scene.capitalize(), "scene folder")
            images = sorted((folder / "images_png").glob("*.png"))
            if not images:
                raise DatasetNotFoundError(f"LoveDA: no PNG images in {folder / 'images_png'}.")
            for image in images:
                mask = self._require(folder / "masks_png" / image.name, "mask")
                out.append(SampleFiles(image, mask, f"{scene}/{image.stem}"))
        return out
