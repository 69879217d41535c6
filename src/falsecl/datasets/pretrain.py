"""The pretraining pool: folders of unlabeled imagery and labelled datasets' training splits, masks ignored.

Each source keeps its own file discovery and the shared tiling (:mod:`falsecl.tiling`); this module
only concatenates them, numbers the patches (``"index"``, which MoCo keeps with queued keys) and, for labelled
sources, adds the majority class of each patch's mask (``"majority"``, FALSE diagnostics only; -1 elsewhere).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from falsecl.datasets.base import SegmentationDataset
from falsecl.datasets.errors import DatasetError
from falsecl.datasets.io import IGNORE_INDEX
from falsecl.datasets.unlabeled import UnlabeledImagery, held_out_tile
from falsecl.tiling import Patch


def majority_class(mask: NDArray[Any], num_classes: int) -> int:
    """Most frequent class of a mask (ignore pixels excluded; ties go to the lower class), -1 if none."""
    values = mask[(mask != IGNORE_INDEX) & (mask >= 0) & (mask < num_classes)]
    if values.size == 0:
        return -1
    return int(np.bincount(values.ravel().astype(np.int64), minlength=num_classes).argmax())


@dataclass(frozen=True)
class PretrainSource:
    """One source of the pretraining pool.

    Attributes:
        name: Unambiguous label, the prefix of its lines in ``pretrain_images.txt`` (``"potsdam-train"``,
            ``"folder0-<folder name>"``).
        root: The folder its image paths are relative to.
        dataset: Its patches: a labelled dataset (masks give ``"majority"``) or unlabeled imagery.
    """

    name: str
    root: Path
    dataset: SegmentationDataset | UnlabeledImagery

    @property
    def labelled(self) -> bool:
        """Whether the source has masks."""
        return isinstance(self.dataset, SegmentationDataset)

    @property
    def image_paths(self) -> list[Path]:
        """The source's image files."""
        ds = self.dataset
        return [f.image for f in ds.files] if isinstance(ds, SegmentationDataset) else list(ds.files)

    def relative_paths(self) -> list[str]:
        """Image paths relative to :attr:`root` (the file name when the root is a file)."""
        out = []
        for path in self.image_paths:
            try:
                out.append(path.relative_to(self.root).as_posix())
            except ValueError:
                out.append(path.name)
        return out


def without_held_out(dataset: SegmentationDataset) -> tuple[SegmentationDataset, list[str]]:
    """The dataset minus images that are official ISPRS test tiles by name (e.g. in a flat ``all`` split).

    Returns:
        The (re-tiled) dataset, or ``dataset`` itself when nothing is dropped, and the dropped tiles.
    """
    keep = [i for i, f in enumerate(dataset.files) if held_out_tile(f.image.name) is None]
    if len(keep) == len(dataset.files):
        return dataset, []
    if not keep:
        raise DatasetError(
            f"every image of {type(dataset).__name__} under {dataset.root} (split {dataset.split!r}) is an official "
            "test tile. Fix: pretrain on the training split, or pass include_held_out=True knowingly."
        )
    dropped = sorted({str(held_out_tile(f.image.name)) for f in dataset.files} - {"None"})
    return dataset.with_images(keep, dataset.patch_size, dataset.stride), dropped


class PretrainImagery(Dataset[dict[str, Tensor]]):
    """Concatenated pretraining sources: ``{"image": (C, p, p) float32 raw, "index": int64, "majority": int64}``.

    Args:
        sources: The sources, in order (patch indices follow it).

    Raises:
        DatasetError: No source, or sources with different band counts or data types (one normalisation
            cannot fit both).
    """

    def __init__(self, sources: Sequence[PretrainSource]) -> None:
        if not sources:
            raise DatasetError(
                "no pretraining source. Fix: pass --data.roots (image folders) and/or --data.dataset with "
                "--data.root."
            )
        self.sources = list(sources)
        first = self.sources[0]
        for src in self.sources[1:]:
            if src.dataset.in_channels != first.dataset.in_channels:
                raise DatasetError(
                    f"pretraining source {src.name} ({src.root}) gives {src.dataset.in_channels} band(s) but "
                    f"{first.name} ({first.root}) gives {first.dataset.in_channels}. Fix: select the same "
                    "bands for all (--data.bands), or pretrain on them separately."
                )
            if src.dataset.infos[0].dtype != first.dataset.infos[0].dtype:
                raise DatasetError(
                    f"pretraining source {src.name} ({src.root}) is {src.dataset.infos[0].dtype} but "
                    f"{first.name} is {first.dataset.infos[0].dtype}: one normalisation cannot fit both "
                    "value ranges. Fix: rescale one of them, or pretrain on them separately."
                )
        self.offsets = [0]
        for src in self.sources:
            self.offsets.append(self.offsets[-1] + len(src.dataset))
        # Majority classes computed so far (-2: not yet): a mask is decoded once per patch (and worker), not
        # every epoch.
        self._majority = np.full(len(self), -2, dtype=np.int64)

    def _locate(self, index: int) -> tuple[PretrainSource, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"patch index {index} out of range for {len(self)} patches")
        k = bisect.bisect_right(self.offsets, index) - 1
        return self.sources[k], index - self.offsets[k]

    def __len__(self) -> int:
        return self.offsets[-1]

    @property
    def in_channels(self) -> int:
        """Bands per sample (the same for every source)."""
        return self.sources[0].dataset.in_channels

    @property
    def files(self) -> list[Path]:
        """Every image file of every source, in order."""
        return [p for src in self.sources for p in src.image_paths]

    @property
    def patches(self) -> list[Patch]:
        """Every patch of every source (image indices are per source)."""
        return [p for src in self.sources for p in src.dataset.patches]

    @property
    def patch_ids(self) -> list[str]:
        """``"<source>:<patch id within the source>"``, unique across sources."""
        return [f"{src.name}:{pid}" for src in self.sources for pid in src.dataset.patch_ids]

    def read_image(self, index: int) -> NDArray[Any]:
        """Raw pixels (C, p, p) of patch ``index``."""
        src, j = self._locate(index)
        return src.dataset.read_image(j)

    def majority(self, index: int) -> int:
        """Majority class of patch ``index``'s mask, -1 for unlabeled sources (their masks are never read)."""
        if self._majority[index] != -2:
            return int(self._majority[index])
        src, j = self._locate(index)
        ds = src.dataset
        value = majority_class(ds.read_mask(j), ds.num_classes) if isinstance(ds, SegmentationDataset) else -1
        self._majority[index] = value
        return value

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {
            "image": torch.from_numpy(self.read_image(index).astype(np.float32)),
            "index": torch.tensor(index, dtype=torch.int64),
            "majority": torch.tensor(self.majority(index), dtype=torch.int64),
        }

    def summary(self) -> list[str]:
        """One line per source: name, root, image and patch counts."""
        return [
            f"{src.name}: {len(src.image_paths)} image(s), {len(src.dataset)} patch(es) from {src.root.resolve()}"
            for src in self.sources
        ]

    def write_image_list(self, path: str | Path) -> None:
        """Write ``pretrain_images.txt``: a ``#`` comment per source, then ``<source>:<relative path>`` per image."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"# {line}" for line in self.summary()]
        for src in self.sources:
            lines += [f"{src.name}:{rel}" for rel in src.relative_paths()]
        path.write_text("\n".join(lines) + "\n")
