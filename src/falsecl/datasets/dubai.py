"""Dubai aerial imagery (Humans in the Loop / MBRSC, CC0), vendored in ``data/dubai_aerial``.

Layout: ``Tile {1..8}/images/image_part_00N.jpg`` with RGB colour masks ``Tile N/masks/image_part_00N.png``.
The class colours are those that actually occur in the masks (the dataset's ``classes.json`` lists wrong
ones); "Unlabeled" grey and stray black pixels (0.56 %) are ignored. Splits are by tile, because the images of
one tile are adjacent parts of one scene: mixing them across splits would leak.
"""

from __future__ import annotations

from typing import ClassVar

from falsecl.datasets.base import SampleFiles, SegmentationDataset
from falsecl.datasets.display import Colour
from falsecl.datasets.errors import DatasetNotFoundError


class DubaiAerial(SegmentationDataset):
    """Dubai aerial imagery: 8 tiles, 72 RGB JPEG images with colour masks, 5 classes.

    Splits: train = tiles 1, 4, 5, 6, 7; val = tile 2; test = tiles 3, 8. See :class:`SegmentationDataset` for
    the arguments.
    """

    name = "dubai"
    classes = ("building", "land", "road", "vegetation", "water")
    colours: tuple[Colour, ...] = (
        (60, 16, 152),
        (132, 41, 246),
        (110, 193, 228),
        (254, 221, 58),
        (226, 169, 41),
    )
    ignore_colours: tuple[Colour, ...] = ((155, 155, 155), (0, 0, 0))
    splits = ("train", "val", "test")
    split_tiles: ClassVar[dict[str, tuple[int, ...]]] = {
        "train": (1, 4, 5, 6, 7),
        "val": (2,),
        "test": (3, 8),
    }
    image_pattern = "Tile {tile}/images/*.jpg"
    mask_pattern = "Tile {tile}/masks/{stem}.png"
    expected_bands = 3

    def _find_files(self) -> list[SampleFiles]:
        files = []
        for tile in self.split_tiles[self.split]:
            folder = self._require(self.root / f"Tile {tile}" / "images", "tile folder")
            images = sorted(folder.glob("*.jpg"))
            if not images:
                raise DatasetNotFoundError(
                    f"DubaiAerial: no *.jpg images in {folder}. Fix: restore the tile's images."
                )
            for image in images:
                mask = self._require(self.root / self.mask_pattern.format(tile=tile, stem=image.stem), "mask")
                files.append(SampleFiles(image, mask, f"tile{tile}"))
        return files
