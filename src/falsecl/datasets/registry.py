"""Datasets by name (as the command line, the configs and the model card name them), built one way.

:func:`segmentation_dataset` is the one place that turns a name, a root and the shared options into a
dataset: the datamodules (train, val and whole-image splits, pretraining sources), ``falsecl evaluate`` and
``falsecl data`` all go through it, so a dataset option means the same everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from falsecl.datasets.base import SegmentationDataset
from falsecl.datasets.deepglobe import DeepGlobeLandCover
from falsecl.datasets.dubai import DubaiAerial
from falsecl.datasets.folder import FolderDataset
from falsecl.datasets.isprs import ISPRSMMSeg, PotsdamPatches, PotsdamTiles, VaihingenPatches
from falsecl.datasets.loveda import LoveDA
from falsecl.datasets.unlabeled import UnlabeledImagery

#: Dataset name (CLI, datamodules, configs) -> class.
DATASETS: dict[str, type[SegmentationDataset] | type[UnlabeledImagery]] = {
    "dubai": DubaiAerial,
    "potsdam": PotsdamTiles,
    "potsdam_patches": PotsdamPatches,
    "vaihingen_patches": VaihingenPatches,
    "isprs_mmseg": ISPRSMMSeg,
    "deepglobe": DeepGlobeLandCover,
    "loveda": LoveDA,
    "folder": FolderDataset,
    "unlabeled": UnlabeledImagery,
}

#: Labelled dataset name -> class.
SEGMENTATION_DATASETS: dict[str, type[SegmentationDataset]] = {
    k: v for k, v in DATASETS.items() if isinstance(v, type) and issubclass(v, SegmentationDataset)
}


def segmentation_dataset(
    name: str,
    root: str | Path,
    split: str | None,
    patch_size: int | None,
    stride: int | None = None,
    bands: str | Sequence[int] | None = None,
    palette: str | None = None,
) -> SegmentationDataset:
    """A labelled dataset by name.

    Args:
        name: Key of :data:`SEGMENTATION_DATASETS` (``dubai``, ``potsdam``, ``folder`` ...).
        root: Dataset root folder.
        split: Split name; ``None``: the dataset's default (its first; ``all`` for ``folder``).
        patch_size: Square patch size; ``None``: whole images.
        stride: Step between patches (``None``: ``patch_size``).
        bands: Band set name or 0-based indices (``None``: the dataset's default).
        palette: Palette file, used by ``folder`` only.

    Returns:
        The dataset.

    Raises:
        ValueError: Unknown name.
    """
    if name not in SEGMENTATION_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; use one of {', '.join(SEGMENTATION_DATASETS)}")
    cls = SEGMENTATION_DATASETS[name]
    kwargs: dict[str, Any] = {
        "split": cls.default_split(root) if split is None else split,
        "patch_size": patch_size,
        "stride": stride,
    }
    if bands is not None:
        kwargs["bands"] = bands
    if cls.name == "folder":
        kwargs["palette"] = palette
    return cls(root, **kwargs)
