"""DeepGlobe 2018 Land Cover (Demir et al., CVPRW 2018).

Layout: ``<root>/<split>/<id>_sat.jpg`` with colour masks ``<root>/<split>/<id>_mask.png``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from falsecl.datasets.base import SampleFiles, SegmentationDataset
from falsecl.datasets.display import Colour
from falsecl.datasets.errors import DatasetNotFoundError


class DeepGlobeLandCover(SegmentationDataset):
    """DeepGlobe Land Cover: 2448 x 2448 RGB JPEG with RGB colour masks, 6 classes, "unknown" ignored.

    The challenge notes that mask values are not exactly 0/255 and are to be thresholded at 128; masks are
    binarised per channel before the colour lookup, so only the 8 corner colours can occur. Without a labelled
    ``val/`` or ``valid/`` folder, ``val`` is a seeded carve of 1/8 of the ``train/`` images (``train`` excludes
    them); ``test`` is ``test/`` as you provide it.
    """

    name = "deepglobe"
    classes = ("urban_land", "agriculture_land", "rangeland", "forest_land", "water", "barren_land")
    colours: tuple[Colour, ...] = (
        (0, 255, 255),
        (255, 255, 0),
        (255, 0, 255),
        (0, 255, 0),
        (0, 0, 255),
        (255, 255, 255),
    )
    ignore_colours: tuple[Colour, ...] = ((0, 0, 0),)
    splits = ("train", "val", "valid", "test")
    image_pattern = "{split}/*_sat.jpg"
    mask_pattern = "{split}/{id}_mask.png"
    expected_bands = 3

    def _carves_val(self) -> bool:
        # The official valid/ and test/ folders ship without masks: with no labelled val/ or valid/, validation
        # is a seeded carve of train/ (by image), so the checkpoint is never chosen on the test images.
        return not any(any((self.root / s).glob("*_mask.png")) for s in ("val", "valid"))

    def _find_files(self) -> list[SampleFiles]:
        folder = self._require(self.root / self.split, "split folder")
        images = sorted(folder.glob("*_sat.jpg"))
        if not images:
            raise DatasetNotFoundError(f"DeepGlobeLandCover: no *_sat.jpg files in {folder}.")
        out = []
        for image in images:
            ident = image.name[: -len("_sat.jpg")]
            out.append(SampleFiles(image, self._require(folder / f"{ident}_mask.png", "mask"), ident))
        return out

    def _clean_colours(self, rgb: NDArray[Any]) -> NDArray[Any]:
        return np.where(rgb >= 128, 255, 0).astype(np.uint8)
