"""The pretraining pool: folders of unlabeled imagery and labelled datasets' training splits, masks ignored.

Each source keeps its own file discovery and the shared tiling (:mod:`falsecl.tiling`); this module
concatenates them, numbers the patches (``"index"``, which MoCo keeps with queued keys), skips patches that are
mostly nodata (``min_valid_fraction``), returns each patch's validity (``"valid"``: nodata, masks, alpha and
padding are invalid) and, for labelled sources, adds the majority class of each patch's mask (``"majority"``,
FALSE diagnostics only; -1 elsewhere).
"""

from __future__ import annotations

import bisect
import copy
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
from falsecl.datasets.heldout import HeldOutRules, summarise
from falsecl.datasets.io import IGNORE_INDEX, has_invalid_pixels, read_valid
from falsecl.datasets.readspeed import warn_slow_layouts
from falsecl.datasets.subsets import files_digest
from falsecl.datasets.unlabeled import UnlabeledImagery
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
        excluded: Held-out images left out of a labelled source, with the reason (unlabeled imagery keeps its
            own in ``dataset.excluded``).
    """

    name: str
    root: Path
    dataset: SegmentationDataset | UnlabeledImagery
    excluded: tuple[tuple[Path, str], ...] = ()

    @property
    def exclusions(self) -> list[tuple[Path, str]]:
        """Every held-out image left out of this source, with the reason."""
        own = self.dataset.excluded if isinstance(self.dataset, UnlabeledImagery) else []
        return list(self.excluded) + list(own)

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


def without_held_out(dataset: SegmentationDataset) -> tuple[SegmentationDataset, list[tuple[Path, str]]]:
    """The dataset minus held-out images (:mod:`falsecl.datasets.heldout`), e.g. test crops in a flat ``all``.

    Returns:
        The (re-tiled) dataset, or ``dataset`` itself when nothing is dropped, and the dropped images with the
        reason.

    Raises:
        DatasetError: Every image is held out.
    """
    rules = HeldOutRules()
    reasons = [rules.reason(f.image, []) for f in dataset.files]
    keep = [i for i, r in enumerate(reasons) if r is None]
    dropped = [(f.image, r) for f, r in zip(dataset.files, reasons, strict=True) if r is not None]
    if not dropped:
        return dataset, []
    if not keep:
        raise DatasetError(
            f"every image of {type(dataset).__name__} under {dataset.root} (split {dataset.split!r}) is held out "
            f"({summarise(dropped)}). Fix: pretrain on the training split, or pass allow_held_out=True knowingly."
        )
    return dataset.with_images(keep, dataset.patch_size, dataset.stride), dropped


class PretrainImagery(Dataset[dict[str, Tensor]]):
    """Concatenated pretraining sources: ``{"image": (C, p, p) float32 raw, "index": int64, "majority": int64}``.

    Args:
        sources: The sources, in order (patch indices follow it).
        min_valid_fraction: Patches whose share of valid pixels (GDAL's mask: nodata, masks, alpha) is below
            this are skipped; 0 keeps every patch.

    Raises:
        DatasetError: No source, sources with different band counts or data types (one normalisation
            cannot fit both), or no patch with enough valid pixels.
    """

    def __init__(self, sources: Sequence[PretrainSource], min_valid_fraction: float = 0.0) -> None:
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
        if not 0.0 <= min_valid_fraction <= 1.0:
            raise ValueError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction}")
        self.min_valid_fraction = min_valid_fraction
        warn_slow_layouts(p for src in self.sources for p in src.image_paths)
        self._invalid: dict[Path, bool] = {}
        #: Patches skipped per source for too few valid pixels.
        self.skipped: list[int] = []
        self.sources = [self._without_empty_patches(src) for src in self.sources]
        self.offsets = [0]
        for src in self.sources:
            self.offsets.append(self.offsets[-1] + len(src.dataset))
        if len(self) == 0:
            raise DatasetError(
                f"no pretraining patch has at least {min_valid_fraction:.0%} valid pixels ({sum(self.skipped)} "
                "skipped). Fix: lower --data.min_valid_fraction, or check the nodata value of the images."
            )
        # Majority classes computed so far (-2: not yet): a mask is decoded once per patch (and worker), not
        # every epoch.
        self._majority = np.full(len(self), -2, dtype=np.int64)

    @staticmethod
    def _image_file(src: PretrainSource, image_index: int) -> Path:
        ds = src.dataset
        return ds.files[image_index].image if isinstance(ds, SegmentationDataset) else ds.files[image_index]

    def _patch_valid(self, src: PretrainSource, patch: Patch) -> NDArray[np.bool_]:
        path = self._image_file(src, patch.image_index)
        if path not in self._invalid:
            self._invalid[path] = has_invalid_pixels(path)
        if self._invalid[path]:
            return read_valid(path, patch.row, patch.col, patch.height, patch.width)
        info = src.dataset.infos[patch.image_index]
        out = np.zeros((patch.height, patch.width), dtype=bool)
        out[: max(0, info.height - patch.row), : max(0, info.width - patch.col)] = True
        return out

    def _without_empty_patches(self, src: PretrainSource) -> PretrainSource:
        """The source with the patches below ``min_valid_fraction`` removed (counted in :attr:`skipped`)."""
        if self.min_valid_fraction <= 0:
            self.skipped.append(0)
            return src
        keep = []
        for p in src.dataset.patches:
            valid = self._patch_valid(src, p)
            info = src.dataset.infos[p.image_index]
            inside = valid[: info.height - p.row, : info.width - p.col]  # padding is the tiling's, not nodata
            if not self._invalid[self._image_file(src, p.image_index)] or inside.mean() >= self.min_valid_fraction:
                keep.append(p)
        self.skipped.append(len(src.dataset.patches) - len(keep))
        if len(keep) == len(src.dataset.patches):
            return src
        dataset = copy.copy(src.dataset)
        dataset.patches = keep
        return PretrainSource(src.name, src.root, dataset, src.excluded)

    def read_valid(self, index: int) -> NDArray[np.bool_]:
        """Validity (p, p) of patch ``index``: False for nodata, masked, alpha-0 and padding pixels."""
        src, j = self._locate(index)
        return self._patch_valid(src, src.dataset.patches[j])

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
            "valid": torch.from_numpy(self.read_valid(index)),
        }

    def summary(self) -> list[str]:
        """One line per source: name, root, image and patch counts, and what was left out."""
        out = []
        for src, skipped in zip(self.sources, self.skipped, strict=True):
            line = f"{src.name}: {len(src.image_paths)} image(s), {len(src.dataset)} patch(es)"
            line += f" from {src.root.resolve()}"
            if skipped:
                line += f"; {skipped} patch(es) skipped: valid fraction below {self.min_valid_fraction:g}"
            left = summarise(src.exclusions)
            out.append(line + (f"; {left}" if left else ""))
        return out

    def source_digests(self) -> list[str]:
        """``"<source>:<digest of relative paths and sizes>"`` per source: what the patches are, not where."""
        out = []
        for src in self.sources:
            sizes = [(p, i.height, i.width) for p, i in zip(src.image_paths, src.dataset.infos, strict=True)]
            out.append(f"{src.name}:{files_digest(src.root, sizes)}")
        return out

    def write_image_list(self, path: str | Path) -> None:
        """Write ``pretrain_images.txt``.

        A ``#`` comment per source (counts, exclusions), ``# excluded <source>:<path> (<reason>)`` per held-out
        image left out, then ``<source>:<relative path>`` per image used.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"# {line}" for line in self.summary()]
        for src in self.sources:
            lines += [f"# excluded {src.name}:{p} ({why})" for p, why in src.exclusions]
        for src in self.sources:
            lines += [f"{src.name}:{rel}" for rel in src.relative_paths()]
        path.write_text("\n".join(lines) + "\n")
