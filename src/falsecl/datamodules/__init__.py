"""LightningDataModules for pretraining and label-efficient fine-tuning.

- :mod:`falsecl.datamodules.pretraining`: :class:`SSLDataModule` (unlabeled patches, two augmented views).
- :mod:`falsecl.datamodules.segmentation`: :class:`SegmentationDataModule` (label fractions, augmentation).
- :mod:`falsecl.datamodules.shared`: the loader policy and run-folder lookup both use.

Datasets are built by :func:`falsecl.datasets.segmentation_dataset`, the one place dataset options are read.
"""

from falsecl.datamodules.pretraining import DEFAULT_EXTRA_ROOTS, DEFAULT_SSL_ROOTS, SSLDataModule
from falsecl.datamodules.segmentation import SegmentationDataModule
from falsecl.datasets import DubaiAerial

__all__ = [
    "DEFAULT_EXTRA_ROOTS",
    "DEFAULT_SSL_ROOTS",
    "DubaiAerial",
    "SSLDataModule",
    "SegmentationDataModule",
]
