"""Map-style datasets for remote-sensing segmentation and pretraining.

Labelled datasets return ``{"image": (C, H, W) float32 raw digital numbers, "mask": (H, W) int64}`` with
ignore index 255; :class:`UnlabeledImagery` returns only ``"image"``. See docs/data.md for the layouts.
"""

from __future__ import annotations

from falsecl.datasets.base import SampleFiles, SegmentationDataset
from falsecl.datasets.deepglobe import DeepGlobeLandCover
from falsecl.datasets.dubai import DubaiAerial
from falsecl.datasets.errors import DatasetError, DatasetNotFoundError
from falsecl.datasets.folder import FolderDataset, load_palette
from falsecl.datasets.io import IGNORE_INDEX
from falsecl.datasets.isprs import ISPRSMMSeg, PotsdamPatches, PotsdamTiles, VaihingenPatches
from falsecl.datasets.loveda import LoveDA
from falsecl.datasets.registry import DATASETS, SEGMENTATION_DATASETS, segmentation_dataset
from falsecl.datasets.stats import BandStats, cached_band_stats, compute_band_stats
from falsecl.datasets.subsets import label_fraction_subset
from falsecl.datasets.unlabeled import UnlabeledImagery
from falsecl.tiling import Patch, grid_windows, window_starts

__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "SEGMENTATION_DATASETS",
    "BandStats",
    "DatasetError",
    "DatasetNotFoundError",
    "DeepGlobeLandCover",
    "DubaiAerial",
    "FolderDataset",
    "ISPRSMMSeg",
    "LoveDA",
    "Patch",
    "PotsdamPatches",
    "PotsdamTiles",
    "SampleFiles",
    "SegmentationDataset",
    "UnlabeledImagery",
    "VaihingenPatches",
    "cached_band_stats",
    "compute_band_stats",
    "grid_windows",
    "label_fraction_subset",
    "load_palette",
    "segmentation_dataset",
    "window_starts",
]
