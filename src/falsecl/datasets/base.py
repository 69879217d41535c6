"""Common base of the labelled datasets: file discovery, verification, patch index, reading, plotting.

The pattern follows torchgeo's ``datasets/potsdam.py`` (class constants for classes, colours, splits and file
patterns; ``_verify()`` with a helpful error; ``plot()``), but the datasets are plain map-style
:class:`torch.utils.data.Dataset` objects over a *patch index*: a list of
:class:`~falsecl.tiling.Patch` windows computed from image sizes read from the file headers, without
decoding pixels.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from falsecl.datasets.display import Colour, plot_sample
from falsecl.datasets.errors import DatasetError, DatasetNotFoundError
from falsecl.datasets.io import (
    IGNORE_INDEX,
    ImageInfo,
    colours_to_index,
    index_lookup,
    read_info,
    read_window,
    remap_index,
)
from falsecl.datasets.subsets import carve_tiles
from falsecl.tiling import POLICIES, PaddingPolicy, Patch, tile_patches

if TYPE_CHECKING:
    from matplotlib.figure import Figure



@dataclass(frozen=True)
class SampleFiles:
    """One image of a dataset, with its mask (``None`` for unlabeled imagery) and its tile (scene).

    Attributes:
        image: Image file.
        mask: Mask file, or ``None``.
        tile: Tile identifier; all patches of one tile stay in one split and one subset stratum.
    """

    image: Path
    mask: Path | None
    tile: str


def resolve_bands(
    bands: str | Sequence[int] | None, band_sets: Mapping[str, Sequence[int]]
) -> list[int] | None:
    """Turn a band choice (``"rgb"``, ``"rgbir"``, 0-based indices, or ``None`` = all) into indices."""
    if bands is None:
        return None
    if isinstance(bands, str):
        if bands not in band_sets:
            raise ValueError(
                f"unknown band set {bands!r}; use one of {sorted(band_sets)} or a list of band indices"
            )
        return list(band_sets[bands])
    return [int(b) for b in bands]


def _pad_mask(mask: NDArray[np.int64], height: int, width: int) -> NDArray[np.int64]:
    ph, pw = height - mask.shape[0], width - mask.shape[1]
    if ph <= 0 and pw <= 0:
        return mask
    return np.pad(mask, [(0, ph), (0, pw)], mode="constant", constant_values=IGNORE_INDEX)


class SegmentationDataset(Dataset[dict[str, Tensor]]):
    """Map-style dataset of ``{"image": (C, H, W) float32 raw DN, "mask": (H, W) int64}`` patches.

    Subclasses set the class constants and implement :meth:`_find_files`. Masks are decoded through
    :attr:`palette` (RGB colour masks) or :attr:`index_map` (index masks); ignore pixels get 255.

    Args:
        root: Dataset root folder.
        split: One of :attr:`splits`.
        patch_size: Square patch size; ``None`` yields whole images (sliding-window evaluation).
        stride: Step between patches; ``None`` means ``patch_size``.
        padding: Tiling policy ``"flush"``, ``"pad"`` or ``"drop"`` (see :mod:`falsecl.tiling`).
        bands: Band subset: a name from :attr:`band_sets`, 0-based indices, or ``None`` for all bands.

    Raises:
        DatasetNotFoundError: Missing root, split folder or files.
        DatasetError: Corrupt files, wrong band counts, image/mask size mismatch.
    """

    #: Dataset name in :data:`falsecl.datasets.DATASETS`.
    name: ClassVar[str] = ""
    classes: tuple[str, ...] = ()
    #: Display colour of each class (for ``plot``); for colour-mask datasets also the mask colour.
    colours: tuple[Colour, ...] = ()
    #: Mask colours mapped to the ignore index.
    ignore_colours: tuple[Colour, ...] = ()
    #: Raw index-mask value -> class index (255 = ignore); empty for colour-mask datasets.
    index_map: dict[int, int] = {}
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    image_pattern: ClassVar[str] = ""
    mask_pattern: ClassVar[str] = ""
    #: Band count the image files must have; ``None`` accepts any count that is the same for every image.
    expected_bands: int | None = None
    band_sets: ClassVar[dict[str, tuple[int, ...]]] = {}
    #: Which (0-based) bands are red, green, blue, for display and RGB-only colour augmentation.
    rgb_bands: tuple[int, int, int] | None = (0, 1, 2)
    #: Split whose files another split reads (e.g. ``{"test": "val"}``: the official val folder is the test set).
    split_sources: ClassVar[dict[str, str]] = {}
    #: Whether ``val`` is carved from the training tiles (``train`` then excludes them), for layouts whose own
    #: val split is what papers report on as the test set, or that have none.
    carve_val: ClassVar[bool] = False
    #: Share of training tiles held out by the carve, and its seed.
    val_fraction: ClassVar[float] = 0.125
    val_seed: ClassVar[int] = 0

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        patch_size: int | None = 256,
        stride: int | None = None,
        padding: PaddingPolicy = "flush",
        bands: str | Sequence[int] | None = None,
    ) -> None:
        self.root = Path(root)
        if self.splits and split not in self.splits:
            raise ValueError(
                f"{type(self).__name__}: unknown split {split!r}; use one of {', '.join(self.splits)}"
            )
        if padding not in POLICIES:
            raise ValueError(f"unknown padding policy {padding!r}; use one of {', '.join(POLICIES)}")
        self.split = split
        self.patch_size = patch_size
        self.stride = stride
        self.padding: PaddingPolicy = padding
        self.band_indices = resolve_bands(bands, self.band_sets)
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"{type(self).__name__}: dataset root {self.root} does not exist or is not a folder. Pass "
                "the folder "
                f"that contains {self.image_pattern or 'the images'} (layouts: docs/data.md)."
            )
        #: Training tiles held out for validation when ``val`` is carved (empty otherwise).
        self.val_tiles: list[str] = []
        self.files: list[SampleFiles] = self._split_files()
        if not self.files:
            raise DatasetNotFoundError(
                f"{type(self).__name__}: no images for split {split!r} under {self.root} (expected "
                f"{self.image_pattern}). Check the root folder and the layout in docs/data.md."
            )
        self.infos: list[ImageInfo] = []
        self._verify()
        self.patches: list[Patch] = []
        for i, (files, info) in enumerate(zip(self.files, self.infos, strict=True)):
            self.patches += tile_patches(i, files.tile, info.height, info.width, patch_size, stride, padding)
        if not self.patches:
            raise DatasetError(
                f"{type(self).__name__}: every image under {self.root} is smaller than "
                f"patch_size={patch_size} and "
                "padding='drop' dropped them all; use padding='flush' or a smaller patch size."
            )

    # ------------------------------------------------------------------------------------------ subclass
    # hooks
    @classmethod
    def default_split(cls, root: str | Path) -> str:
        """Split used when none is named (the CLI's default): the first of :attr:`splits`."""
        return cls.splits[0]

    def _find_files(self) -> list[SampleFiles]:
        """List the split's image/mask files (sorted, so indices are stable)."""
        raise NotImplementedError

    def _carves_val(self) -> bool:
        """Whether this dataset's ``val`` split is carved from its training tiles."""
        return self.carve_val

    def _files_of(self, split: str) -> list[SampleFiles]:
        own, self.split = self.split, split
        try:
            return self._find_files()
        finally:
            self.split = own

    def _split_files(self) -> list[SampleFiles]:
        """The split's files: its own, another split's (:attr:`split_sources`), or a tile carve of train."""
        if not self._carves_val():
            return self._files_of(self.split)
        if self.split not in ("train", "val"):
            return self._files_of(self.split_sources.get(self.split, self.split))
        pool = self._files_of("train")
        if self.split == "train" and len({f.tile for f in pool}) < 2:
            return pool  # nothing to hold out; asking for ``val`` says so
        try:
            self.val_tiles = carve_tiles([f.tile for f in pool], self.val_fraction, self.val_seed)
        except ValueError as err:
            raise DatasetError(f"{type(self).__name__} under {self.root}: {err}.") from err
        held = set(self.val_tiles)
        return [f for f in pool if (f.tile in held) == (self.split == "val")]

    @property
    def split_description(self) -> str:
        """Where the split's images come from, in words (recorded with checkpoints and metrics)."""
        if self.val_tiles:
            pool = len({f.tile for f in self._files_of("train")})
            return (
                f"carved from train: {len(self.val_tiles)} of {pool} tiles (seed {self.val_seed}): "
                + ", ".join(self.val_tiles)
            )
        source = self.split_sources.get(self.split, self.split) if self._carves_val() else self.split
        tiles = sorted({f.tile for f in self.files})
        shown = ", ".join(tiles[:8]) + (", ..." if len(tiles) > 8 else "")
        origin = f"the official '{source}' folder" if source != self.split else f"the '{self.split}' split"
        return f"{origin}: {len(tiles)} tile(s): {shown}"

    @property
    def palette(self) -> dict[Colour, int]:
        """Mask colour -> class index, ignore colours -> 255 (empty for index-mask datasets)."""
        if self.index_map:
            return {}
        table = {c: i for i, c in enumerate(self.colours)}
        table.update({c: IGNORE_INDEX for c in self.ignore_colours})
        return table

    # ------------------------------------------------------------------------------------------ verification
    def _verify(self) -> None:
        """Check every file's header: existence, readability, band count, image/mask size agreement.

        Reads headers only (no pixel decoding), so it is fast even for 6000 x 6000 GeoTIFFs. Pixel-level
        problems (unknown mask colours, truncated data) surface when a file is read; ``falsecl data check``
        reads them all.
        """
        bands_seen: tuple[int, Path] | None = None
        for files in self.files:
            info = read_info(files.image)
            if self.expected_bands is not None and info.bands != self.expected_bands:
                raise DatasetError(
                    f"image {files.image} has {info.bands} band(s) but {type(self).__name__} expects "
                    f"{self.expected_bands}. Fix: use the original {self.expected_bands}-band files of this "
                    "layout "
                    "or a dataset class that matches your files (docs/data.md)."
                )
            if bands_seen is not None and info.bands != bands_seen[0]:
                raise DatasetError(
                    f"image {files.image} has {info.bands} band(s) while {bands_seen[1]} has "
                    f"{bands_seen[0]}; all "
                    "images of a dataset need the same bands. Fix: convert the odd file or select bands."
                )
            bands_seen = bands_seen or (info.bands, files.image)
            if self.band_indices is not None and max(self.band_indices) >= info.bands:
                raise DatasetError(
                    f"image {files.image} has {info.bands} band(s); cannot select bands {self.band_indices}. "
                    "Fix: choose band indices below the band count (e.g. bands='rgb')."
                )
            if files.mask is not None:
                minfo = read_info(files.mask)
                if (minfo.height, minfo.width) != (info.height, info.width):
                    raise DatasetError(
                        f"mask {files.mask} is {minfo.width}x{minfo.height} but its image {files.image} is "
                        f"{info.width}x{info.height} (width x height). Fix: re-export the mask at the image "
                        "size, "
                        "or check that the file names pair the right image and mask."
                    )
                want_rgb = not self.index_map
                if want_rgb and minfo.bands < 3 and minfo.mode != "P":
                    raise DatasetError(
                        f"mask {files.mask} has {minfo.bands} band(s) but {type(self).__name__} expects RGB "
                        "colour "
                        "masks. Fix: use the dataset for index masks (e.g. 'isprs_mmseg') or colour masks "
                        "here."
                    )
                if not want_rgb and minfo.bands != 1:
                    raise DatasetError(
                        f"mask {files.mask} has {minfo.bands} bands but {type(self).__name__} expects "
                        "single-band "
                        "index masks. Fix: use the colour-mask variant of this dataset."
                    )
            self.infos.append(info)

    def _require(self, path: Path, what: str = "file") -> Path:
        if not path.exists():
            raise DatasetNotFoundError(
                f"{type(self).__name__}: missing {what} {path}. Fix: restore it, or check the layout in "
                "docs/data.md."
            )
        return path

    # ------------------------------------------------------------------------------------------ reading
    @property
    def num_classes(self) -> int:
        """Number of classes (ignore excluded)."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Bands per sample after band selection."""
        return len(self.band_indices) if self.band_indices is not None else self.infos[0].bands

    @property
    def patch_ids(self) -> list[str]:
        """Stable patch identifiers, ``"<tile>/<image index>:<row>:<col>"``."""
        return [p.id for p in self.patches]

    def __len__(self) -> int:
        return len(self.patches)

    def read_image(self, index: int) -> NDArray[Any]:
        """Raw pixels (C, h, w) of patch ``index`` in the file's dtype, zero-padded outside the image."""
        return self.read_patch_image(self.patches[index])

    def read_mask(self, index: int) -> NDArray[np.int64]:
        """Class indices (h, w) of patch ``index``, 255 outside the image and on ignore colours/values."""
        return self.read_patch_mask(self.patches[index])

    def read_patch_image(self, p: Patch) -> NDArray[Any]:
        """Raw pixels (C, h, w) of any window ``p`` of an image of this dataset (see :meth:`read_image`)."""
        return read_window(
            self.files[p.image_index].image, p.row, p.col, p.height, p.width, self.band_indices, fill=0
        )

    def read_patch_mask(self, p: Patch) -> NDArray[np.int64]:
        """Class indices (h, w) of any window ``p`` of an image of this dataset (see :meth:`read_mask`)."""
        files, info = self.files[p.image_index], self.infos[p.image_index]
        if files.mask is None:
            raise DatasetError(f"{type(self).__name__} has no masks")
        # Read the part inside the image only, decode it, then pad with ignore: padding colours could collide
        # with real class colours (ISPRS impervious surfaces are white).
        h, w = min(p.height, info.height - p.row), min(p.width, info.width - p.col)
        if self.index_map:
            raw = read_window(files.mask, p.row, p.col, h, w, mode="index")
            mask = remap_index(raw, index_lookup(self.index_map), files.mask)
        else:
            raw = read_window(files.mask, p.row, p.col, h, w, mode="RGB")
            mask = colours_to_index(self._clean_colours(raw), self.palette, files.mask)
        return _pad_mask(mask, p.height, p.width)

    def _clean_colours(self, rgb: NDArray[Any]) -> NDArray[Any]:
        """Hook for datasets whose official masks need colour clean-up (DeepGlobe thresholds at 128)."""
        return rgb

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image = torch.from_numpy(self.read_image(index).astype(np.float32))
        mask = torch.from_numpy(self.read_mask(index))
        return {"image": image, "mask": mask}

    def with_patch_size(self, patch_size: int | None, stride: int | None = None) -> SegmentationDataset:
        """A copy of this dataset re-tiled with another patch size (``None``: whole images); no re-read."""
        return self.with_images(range(len(self.files)), patch_size, stride)

    def with_images(
        self, keep: Sequence[int], patch_size: int | None, stride: int | None = None
    ) -> SegmentationDataset:
        """A copy holding only the images ``keep`` (indices into :attr:`files`), tiled anew; no re-read.

        The copy shares everything else (palette, bands, split) with this dataset: it is a view for another
        tiling or a subset of images, built without listing and verifying the files again.
        """
        view = copy.copy(self)
        view.files = [self.files[i] for i in keep]
        view.infos = [self.infos[i] for i in keep]
        view.patch_size, view.stride = patch_size, stride
        view.patches = []
        for i, (files, info) in enumerate(zip(view.files, view.infos, strict=True)):
            view.patches += tile_patches(i, files.tile, info.height, info.width, patch_size, stride, self.padding)
        return view

    # ------------------------------------------------------------------------------------------ display
    def plot(
        self, sample: Mapping[str, Tensor], show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Show a sample's image (RGB bands, 2-98 % stretch) next to its mask in the class colours.

        Args:
            sample: ``{"image": (C, H, W), "mask": (H, W)}``, optionally ``"prediction": (H, W)``.
            show_titles: Put titles over the panels.
            suptitle: Figure title.

        Returns:
            The matplotlib figure.
        """
        return plot_sample(sample, self.colours, self.rgb_bands, show_titles, suptitle)
