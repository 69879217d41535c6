"""The fine-tuning datamodule: labelled patches with seeded label-fraction subsets.

Raw patches go to the loader; augmentation (train only) and :func:`falsecl.transforms.normalize` run on the
device in ``on_after_batch_transfer``, once, with per-band statistics of the training data (cached as JSON).
Constructor arguments are simple typed values so LightningCLI YAML can set them.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, cast

from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from falsecl.datamodules.shared import loader, run_folder_of, training
from falsecl.datasets import SEGMENTATION_DATASETS, SegmentationDataset, segmentation_dataset
from falsecl.datasets.dubai import resolve_bundled
from falsecl.datasets.errors import DatasetError, DatasetNotFoundError
from falsecl.datasets.heldout import split_problems
from falsecl.datasets.io import IGNORE_INDEX
from falsecl.datasets.mask_check import check_masks
from falsecl.datasets.stats import cached_band_stats, value_range
from falsecl.datasets.subsets import (
    files_digest,
    fingerprint_mismatch,
    ids_to_indices,
    label_fraction_subset,
    load_fingerprint,
    load_ids,
    save_ids,
)
from falsecl.datasets.vector import VectorSource
from falsecl.transforms import SegmentationAugmentation, normalize

log = logging.getLogger(__name__)


class SegmentationDataModule(LightningDataModule):
    """Labelled patches for fine-tuning, with seeded label-fraction subsets.

    Train and val batches are ``{"image": (B, C, H, W) normalised, "mask": (B, H, W)}``; training batches are
    augmented first (random scaled crop, flips, rot90, per-band photometric). The val split is every patch of
    the val tiles; whole images for sliding-window evaluation come from :meth:`whole_image_dataset`.

    Args:
        dataset: Name in :data:`falsecl.datasets.DATASETS` (``dubai``, ``potsdam``, ``folder`` ...).
        root: Dataset root.
        palette: Palette file for ``folder`` (default ``<root>/palette.yaml``).
        bands: Band choice passed to the dataset (``"rgb"``, ``"rgbir"``, indices, or ``None`` for all).
        label_fraction: Share of training patches with labels, in (0, 1] (1 %: 0.01).
        seed: Seed of the subset draw and of the statistics sample.
        subset_path: File of patch ids of the subset: loaded when it exists, written otherwise. ``None``:
            ``<trainer.default_root_dir>/label_subset.txt`` when a trainer is attached (not written
            otherwise).
        patch_size: Training/validation patch size.
        stride: Step between training patches (``None``: ``patch_size``).
        crop_size: Training crop after random scaling (``None``: ``patch_size``).
        scale_min: Lower bound of the random scale factor.
        scale_max: Upper bound of the random scale factor.
        flips: Random flips.
        rot90: Random 90 degree rotations.
        band_brightness: Per-band brightness shift.
        band_contrast: Per-band contrast spread.
        photometric_p: Probability of the photometric change.
        batch_size: Patches per batch.
        num_workers: DataLoader workers.
        train_split: Split name used for training.
        val_split: Split name used for validation.
        stats_path: JSON cache of band statistics (``None``: next to the run when a trainer is attached).
        stats_patches: Patches sampled for the statistics.
        allow_held_out: Proceed although training touches held-out data or validation overlaps training
            (refused otherwise); the run then records what was allowed (:attr:`held_out_override`, in the
            checkpoint as ``data_held_out_override`` and in ``val_description``).
        labels: ``vector`` dataset: the polygon file (GeoPackage, Shapefile, GeoJSON); ``root`` holds the scenes.
            Its label fraction applies to labelled patches; ``val`` is a spatial block carve.
        class_field: ``vector``: the attribute holding the class.
        layer: ``vector``: the layer of a multi-layer file.
        classes: ``vector``: class names fixing their order, or a palette file (default: sorted field values).
        make_valid: ``vector``: repair invalid polygons instead of stopping.
        val_block_size: ``vector``: side of the validation blocks in scene pixels.
    """

    def __init__(
        self,
        dataset: str = "dubai",
        root: str = "data/dubai_aerial",
        palette: str | None = None,
        bands: str | list[int] | None = None,
        label_fraction: float = 1.0,
        seed: int = 0,
        subset_path: str | None = None,
        patch_size: int = 256,
        stride: int | None = None,
        crop_size: int | None = None,
        scale_min: float = 0.75,
        scale_max: float = 1.5,
        flips: bool = True,
        rot90: bool = True,
        band_brightness: float = 0.1,
        band_contrast: float = 0.1,
        photometric_p: float = 0.5,
        batch_size: int = 8,
        num_workers: int = 0,
        train_split: str = "train",
        val_split: str = "val",
        stats_path: str | None = None,
        stats_patches: int = 256,
        allow_held_out: bool = False,
        labels: str | None = None,
        class_field: str | None = None,
        layer: str | None = None,
        classes: list[str] | str | None = None,
        make_valid: bool = False,
        val_block_size: int = 1024,
    ) -> None:
        super().__init__()
        if dataset not in SEGMENTATION_DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; use one of {', '.join(SEGMENTATION_DATASETS)}")
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction} (1 % is 0.01)")
        self.save_hyperparameters()
        # One rule for paths a run records (checkpoint, model card): absolute, plus the root as typed, so a run
        # folder works from any working folder and evaluate can still try the relative one after a move.
        self.root_as_given = root
        self.root = str(Path(resolve_bundled(root)).resolve())
        self.palette = str(Path(palette).resolve()) if palette is not None else None
        self.dataset_name, self.bands = dataset, bands
        self.label_fraction, self.seed, self.subset_path = label_fraction, seed, subset_path
        self.patch_size, self.stride = patch_size, stride
        self.crop_size = crop_size
        self.scale_range = (scale_min, scale_max)
        self.flips, self.rot90 = flips, rot90
        self.band_brightness, self.band_contrast, self.photometric_p = (
            band_brightness,
            band_contrast,
            photometric_p,
        )
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_split, self.val_split = train_split, val_split
        self.stats_path, self.stats_patches = stats_path, stats_patches
        self.allow_held_out = allow_held_out
        #: What held-out data the run was allowed to touch (``allow_held_out``), in words; None when nothing.
        self.held_out_override: str | None = None
        self.ignore_index = IGNORE_INDEX
        self.vector = VectorSource(labels, class_field, layer, classes, make_valid, val_block_size)
        cls = SEGMENTATION_DATASETS[dataset]
        # Known before setup() for classes with fixed classes (all but 'folder'), so models can be built
        # early.
        self.class_names: list[str] = list(cls.classes)
        self.num_classes = len(self.class_names)
        self.mean: list[float] = []
        self.std: list[float] = []
        self.in_channels = 0
        self.train_full: SegmentationDataset | None = None
        self.train_set: Dataset[dict[str, Tensor]] | None = None
        self.train_indices: list[int] = []
        self.subset_file: str | None = None
        #: How the validation split (which picks the best checkpoint) was chosen, in words.
        self.val_description = ""
        self.class_colours: list[list[int]] = [list(c) for c in cls.colours]
        self.val_set: SegmentationDataset | None = None
        self.augment: SegmentationAugmentation | None = None

    def make_dataset(
        self, split: str, patch_size: int | None, stride: int | None = None
    ) -> SegmentationDataset:
        """Build the configured dataset for ``split`` (``patch_size=None``: whole images)."""
        return segmentation_dataset(
            self.dataset_name, self.root, split, patch_size, stride, self.bands, self.palette, self.vector
        )

    def setup(self, stage: str | None = None) -> None:
        """Index train/val patches, draw (or load) the label subset and compute (or load) band statistics."""
        if self.train_full is not None:
            return
        train = self.make_dataset(self.train_split, self.patch_size, self.stride)
        self.train_full = train
        self.class_names, self.num_classes = list(train.classes), train.num_classes
        self.in_channels = train.in_channels
        run_dir = run_folder_of(self)
        source = self.source_fingerprint(train)
        self.train_indices, self.subset_file = self._label_subset(train, source, run_dir)
        self.train_set = train if len(self.train_indices) == len(train) else Subset(train, self.train_indices)
        stats_file = self.stats_path or (str(run_dir / "band_stats.json") if run_dir is not None else None)
        # Statistics use every training patch's imagery (pixels need no label), sampled for speed.
        stats = cached_band_stats(
            train, stats_file, self.stats_patches, self.seed, bands=self.in_channels, fingerprint=source
        )
        self.mean, self.std = list(stats.mean), list(stats.std)
        # Recorded in the checkpoint so predict can refuse another data type or value range (issue 17).
        self.input_dtype, self.input_range = value_range(train, seed=self.seed)
        self.val_set = self.make_dataset(self.val_split, self.patch_size)
        # Every mask the run reads, decoded now: a bad colour stops the run before training, not in a worker.
        cache = run_dir / "mask_check.json" if run_dir is not None else None
        check_masks(train, self.train_indices, cache)
        check_masks(self.val_set, range(len(self.val_set)), cache)
        self.val_description = f"{self.val_split}: {self.val_set.split_description}"
        self._check_held_out(train)
        self.class_colours = [list(c) for c in train.colours]
        if run_dir is not None and self.val_set.val_tiles:
            # Recorded next to the label subset: which training tiles were held out to choose the checkpoint.
            save_ids(self.val_set.val_tiles, run_dir / "val_tiles.txt", {**source, "split": self.val_split})
        self.augment = SegmentationAugmentation(
            self.crop_size,
            scale=self.scale_range,
            flips=self.flips,
            rot90=self.rot90,
            band_brightness=self.band_brightness,
            band_contrast=self.band_contrast,
            photometric_p=self.photometric_p,
            value_range=stats.max,
            ignore_index=self.ignore_index,
        )

    def _check_held_out(self, train: SegmentationDataset) -> None:
        """Refuse training on test data or validating on training data, unless ``allow_held_out``."""
        try:
            test: SegmentationDataset | None = self.make_dataset("test", None)
        except (DatasetNotFoundError, ValueError):
            test = None  # the dataset has no test split here
        problems = split_problems(train, self.val_set, test)
        if not problems:
            return
        text = "; ".join(problems)
        if not self.allow_held_out:
            raise DatasetError(
                f"{self.dataset_name} under {self.root}: {text}. Fix: train on train_split='train' and validate "
                "on val_split='val' (docs/data.md, Splits), or pass --data.allow_held_out true to proceed "
                "knowingly (the run then records it)."
            )
        log.warning("allow_held_out: proceeding although %s", text)
        self.held_out_override = text
        self.val_description += f" [HELD-OUT DATA ALLOWED: {text}]"

    def source_fingerprint(self, train: SegmentationDataset) -> dict[str, Any]:
        """What the training patches are drawn from: recorded with every artefact derived from them.

        Not where the data sits: the images' paths relative to the root and their sizes, so moving or copying
        the data folder keeps the label subset and statistics valid.
        """
        sizes = [(f.image, i.height, i.width) for f, i in zip(train.files, train.infos, strict=True)]
        return {
            "dataset": self.dataset_name,
            "files": files_digest(train.root, sizes),
            "split": self.train_split,
            "bands": train.band_indices,
            "patch_size": self.patch_size,
            "stride": self.stride,
            "num_files": len(train.files),
            "num_patches": len(train),
            **(self._labels_fingerprint() if self.dataset_name == "vector" else {}),
        }

    def _labels_fingerprint(self) -> dict[str, Any]:
        """The polygon labels by content (file name, SHA-256 of its bytes, layer, class field), not by location."""
        path = Path(self.vector.labels or "")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"
        return {"labels": f"{path.name}:{digest}", "layer": self.vector.layer, "class_field": self.vector.class_field}

    def _label_subset(
        self, train: SegmentationDataset, source: dict[str, Any], run_dir: Path | None
    ) -> tuple[list[int], str | None]:
        """Load the subset file that matches this fraction, seed and source, or draw one and save it.

        Without an explicit ``subset_path`` the file is named after what it holds
        (``label_subset_<dataset>_<split>_f<fraction>_s<seed>.txt``), so another fraction or seed in the same
        run folder draws its own. A file with a fingerprint from other settings is refused; a file without one
        (a list written by hand) is used as given.
        """
        wanted = {**source, "fraction": self.label_fraction, "seed": self.seed}
        name = f"label_subset_{self.dataset_name}_{self.train_split}_f{self.label_fraction:g}_s{self.seed}.txt"
        subset_file = self.subset_path or (str(run_dir / name) if run_dir is not None else None)
        if subset_file is not None and Path(subset_file).is_file():
            saved = load_fingerprint(subset_file)
            changed = fingerprint_mismatch(saved, wanted) if saved is not None else []
            if changed:
                raise DatasetError(
                    f"label subset {subset_file} was drawn under other settings ({'; '.join(changed)}). Fix: "
                    "delete it to draw a new subset, or pass another --data.subset_path."
                )
            if saved is None:
                log.warning("label subset %s has no fingerprint; using its patch ids as given", subset_file)
            return ids_to_indices(load_ids(subset_file), train.patch_ids, subset_file), subset_file
        indices = label_fraction_subset(train.patches, self.label_fraction, self.seed)
        if subset_file is not None:
            save_ids([train.patch_ids[i] for i in indices], subset_file, wanted)
        return indices, subset_file

    def train_dataloader(self) -> DataLoader[Any]:
        """Raw labelled patches of the subset, shuffled."""
        if self.train_set is None:
            self.setup("fit")
        return loader(cast(Dataset[Any], self.train_set), self.batch_size, self.num_workers, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        """Every patch of the val tiles, in order."""
        if self.val_set is None:
            self.setup("validate")
        return loader(
            cast(SegmentationDataset, self.val_set), self.batch_size, self.num_workers, shuffle=False
        )

    def whole_image_dataset(self, split: str) -> SegmentationDataset:
        """Whole images (raw, not normalised, not tiled) of ``split`` for sliding-window evaluation."""
        return self.make_dataset(split, None)

    def test_dataset(self, split: str = "test") -> SegmentationDataset:
        """Whole test images; same as :meth:`whole_image_dataset`."""
        return self.whole_image_dataset(split)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches, then normalise every batch."""
        if not isinstance(batch, dict) or "image" not in batch:
            return batch
        image, mask = batch["image"], batch.get("mask")
        if training(self) and self.augment is not None and mask is not None:
            image, mask = self.augment(image, mask)
        out = {**batch, "image": normalize(image, self.mean, self.std)}
        if mask is not None:
            out["mask"] = mask
        return out
