"""Unlabeled imagery for self-supervised pretraining: folders of JPEG/PNG/GeoTIFF of any size.

Images are cut into patches with the shared tiling routine; GeoTIFFs are read in windows. Several roots can be
combined (e.g. the Dubai training tiles plus an extra unlabeled pool). Held-out data never enters pretraining
by
default: in a Dubai-layout root only the training tiles are used; the official test tiles of ISPRS Potsdam
(``top_potsdam_<r>_<c>_*``) and Vaihingen (``top_mosaic_09cm_area<N>*``) are recognised by name wherever they
sit; folders named ``test``/``val``/``valid``/``validation`` (or starting with ``test_``/``val_``) are skipped,
as are label folders (``masks``, ``masks_png``, ``ann_dir``, ``labels``, ``*_lbl``, ``gts*``) and files named
``*_mask.*``/``*_label.*``. Each exclusion is logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from falsecl.datasets.base import resolve_bands
from falsecl.datasets.display import display_rgb
from falsecl.datasets.dubai import DubaiAerial
from falsecl.datasets.errors import DatasetError, DatasetNotFoundError
from falsecl.datasets.io import IMAGE_SUFFIXES, ImageInfo, read_info, read_window
from falsecl.datasets.isprs import POTSDAM_TEST, VAIHINGEN_TEST
from falsecl.tiling import POLICIES, PaddingPolicy, Patch, tile_patches

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

HELD_OUT_DIRS = ("test", "val", "valid", "validation")
LABEL_DIRS = ("masks", "masks_png", "ann_dir", "labels", "label", "5_labels_all")
_LABEL_FILE = re.compile(r"_(mask|label|lbl)$", re.IGNORECASE)
_POTSDAM_TILE = re.compile(r"^top_potsdam_(\d+_\d+)(?:_|$)", re.IGNORECASE)
_VAIHINGEN_AREA = re.compile(r"^top_mosaic_09cm_area(\d+)(?:\D|$)", re.IGNORECASE)
# mmsegmentation's conversion names crops <tile>_<x0>_<y0>_<x1>_<y1>: "2_13_0_0_512_512", "area2_0_0_512_512".
_MMSEG_POTSDAM = re.compile(r"^(\d+_\d+)(?:_\d+){4}$")
_MMSEG_VAIHINGEN = re.compile(r"^area(\d+)(?:_\d+){4}$", re.IGNORECASE)


def is_vaihingen(name: str) -> bool:
    """Whether a file name is a Vaihingen tile (or a patch of one): IR-R-G false colour, no true RGB."""
    stem = Path(name).stem
    return _VAIHINGEN_AREA.match(stem) is not None or _MMSEG_VAIHINGEN.match(stem) is not None


def held_out_tile(name: str) -> str | None:
    """``"potsdam <r>_<c>"`` / ``"vaihingen area <N>"`` when a file name is an official ISPRS test tile, else None.

    Patches cut from a test tile keep the tile's name as prefix (``top_potsdam_2_13_RGBIR_0_1.tif``), so they are
    recognised too, as are mmsegmentation's crops (``2_13_0_0_512_512.png``, ``area2_0_0_512_512.png``).
    """
    stem = Path(name).stem
    if (m := _POTSDAM_TILE.match(stem) or _MMSEG_POTSDAM.match(stem)) and m.group(1) in POTSDAM_TEST:
        return f"potsdam {m.group(1)}"
    if (m := _VAIHINGEN_AREA.match(stem) or _MMSEG_VAIHINGEN.match(stem)) and int(m.group(1)) in VAIHINGEN_TEST:
        return f"vaihingen area {int(m.group(1))}"
    return None


def _held_out(part: str) -> bool:
    low = part.lower()
    return low in HELD_OUT_DIRS or low.startswith(("test_", "val_"))


def _is_label(part: str) -> bool:
    low = part.lower()
    # Vaihingen ground truth (gts_for_participants/, ..._ground_truth_...) has the image file names.
    return low in LABEL_DIRS or low.endswith("_lbl") or low.startswith("gts") or "ground_truth" in low


def find_images(root: Path, include_held_out: bool = False) -> list[Path]:
    """Image files under ``root`` (recursive, sorted) for pretraining, minus label and held-out folders.

    Args:
        root: A folder or a single image file.
        include_held_out: Also take test/validation folders, the Dubai val/test tiles and the official ISPRS
            Potsdam/Vaihingen test tiles.

    Returns:
        Sorted image paths.

    Raises:
        DatasetNotFoundError: ``root`` does not exist.
    """
    if not root.exists():
        raise DatasetNotFoundError(
            f"unlabeled imagery root {root} does not exist. Fix: pass an existing folder."
        )
    if root.is_file():
        return [root]
    dubai_train = {f"Tile {t}" for t in DubaiAerial.split_tiles["train"]}
    is_dubai = any((root / f"Tile {t}" / "images").is_dir() for t in range(1, 9))
    images, skipped = [], 0
    tiles: set[str] = set()
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        parts = path.relative_to(root).parts
        dirs = parts[:-1]
        if any(_is_label(d) for d in dirs) or _LABEL_FILE.search(path.stem):
            continue
        if not include_held_out and (
            any(_held_out(d) for d in dirs) or (is_dubai and dirs and dirs[0] not in dubai_train)
        ):
            skipped += 1
            continue
        tile = None if include_held_out else held_out_tile(path.name)
        if tile is not None:
            tiles.add(tile)
            skipped += 1
            continue
        images.append(path)
    if skipped:
        log.info(
            "unlabeled imagery: %d held-out image(s) under %s not used (include_held_out=False)%s",
            skipped,
            root,
            f"; official ISPRS test tiles among them: {', '.join(sorted(tiles))}" if tiles else "",
        )
    return images


class UnlabeledImagery(Dataset[dict[str, Tensor]]):
    """Patches of unlabeled images: ``{"image": (C, patch, patch) float32 raw DN}``.

    Args:
        roots: Folders (searched recursively) or image files; combined in the given order.
        patch_size: Square patch size.
        stride: Step between patches (``None``: ``patch_size``).
        padding: Tiling policy (``"flush"`` by default: patches stay inside the image; images smaller than a
            patch are zero-padded).
        bands: 0-based band indices to keep, ``"rgb"`` (first three), or ``None`` for all; all images must
            then have the same band count.
        include_held_out: Use test/validation folders too (off: they must not leak into pretraining).

    Raises:
        DatasetNotFoundError: A root is missing or holds no images.
        DatasetError: Unreadable files, or images with different band counts or dtypes.
    """

    name = "unlabeled"

    def __init__(
        self,
        roots: Sequence[str | Path] | str | Path,
        patch_size: int = 256,
        stride: int | None = None,
        padding: PaddingPolicy = "flush",
        bands: str | Sequence[int] | None = None,
        include_held_out: bool = False,
    ) -> None:
        if padding not in POLICIES:
            raise ValueError(f"unknown padding policy {padding!r}; use one of {', '.join(POLICIES)}")
        self.roots = [Path(roots)] if isinstance(roots, str | Path) else [Path(r) for r in roots]
        if not self.roots:
            raise ValueError("UnlabeledImagery needs at least one root folder")
        self.patch_size = patch_size
        self.band_indices = resolve_bands(bands, {"rgb": (0, 1, 2)})
        self.files: list[Path] = []
        self.infos: list[ImageInfo] = []
        self.patches: list[Patch] = []
        for root in self.roots:
            found = find_images(root, include_held_out)
            if not found:
                raise DatasetNotFoundError(
                    f"no JPEG/PNG/GeoTIFF images under {root} (searched recursively; label and held-out "
                    "folders "
                    "excluded). Fix: check the path, or pass the folder that holds the images."
                )
            for path in found:
                info = read_info(path)
                self._check(path, info)
                tile = str(path.relative_to(root)) if root.is_dir() else path.name
                self.patches += tile_patches(
                    len(self.files),
                    f"{root.name}/{tile}",
                    info.height,
                    info.width,
                    patch_size,
                    stride,
                    padding,
                )
                self.files.append(path)
                self.infos.append(info)

    def _check(self, path: Path, info: ImageInfo) -> None:
        if self.band_indices is not None and max(self.band_indices) >= info.bands:
            raise DatasetError(
                f"image {path} has {info.bands} band(s); cannot select bands {self.band_indices}. Fix: "
                "choose "
                "bands that every image has (e.g. bands='rgb'), or remove this image."
            )
        if not self.infos:
            return
        first, ref = self.files[0], self.infos[0]
        if self.band_indices is None and info.bands != ref.bands:
            raise DatasetError(
                f"image {path} has {info.bands} band(s) but {first} has {ref.bands}. Fix: pass bands='rgb' "
                "(or a "
                "list of band indices) to use the bands they share, or pretrain on them separately."
            )
        if info.dtype != ref.dtype:
            raise DatasetError(
                f"image {path} is {info.dtype} but {first} is {ref.dtype}: their value ranges differ and one "
                "normalisation cannot fit both. Fix: rescale one of them, or pretrain on them separately."
            )

    @property
    def in_channels(self) -> int:
        """Bands per sample after band selection."""
        return len(self.band_indices) if self.band_indices is not None else self.infos[0].bands

    @property
    def patch_ids(self) -> list[str]:
        """Stable patch identifiers ``"<root>/<relative path>/<index>:<row>:<col>"``."""
        return [p.id for p in self.patches]

    def __len__(self) -> int:
        return len(self.patches)

    def read_image(self, index: int) -> NDArray[Any]:
        """Raw pixels (C, patch, patch) of patch ``index`` in the file's dtype."""
        p = self.patches[index]
        return read_window(
            self.files[p.image_index], p.row, p.col, p.height, p.width, self.band_indices, fill=0
        )

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"image": torch.from_numpy(self.read_image(index).astype(np.float32))}

    def plot(
        self, sample: dict[str, Tensor], show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Show a sample's image (first three bands, 2-98 % stretch).

        Args:
            sample: ``{"image": (C, H, W)}``.
            show_titles: Put a title over the panel.
            suptitle: Figure title.

        Returns:
            The matplotlib figure.
        """
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 1, figsize=(4, 4))
        ax.imshow(display_rgb(sample["image"], (0, 1, 2)))
        ax.axis("off")
        if show_titles:
            ax.set_title("image")
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig
