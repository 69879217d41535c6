"""LightningDataModules for pretraining and label-efficient fine-tuning.

Both hand raw patches to the loaders and do the rest on the device in ``on_after_batch_transfer``:
augmentation (train only) then :func:`falsecl.transforms.normalize`, once, with per-band statistics computed
from the training data (and cached as JSON). Constructor arguments are simple typed values so LightningCLI
YAML can set them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from falsecl.datasets import SEGMENTATION_DATASETS, DubaiAerial, SegmentationDataset, UnlabeledImagery
from falsecl.datasets.errors import DatasetError
from falsecl.datasets.io import IGNORE_INDEX
from falsecl.datasets.pretrain import PretrainImagery, PretrainSource, without_held_out
from falsecl.datasets.stats import BandStats, cached_band_stats, value_range
from falsecl.datasets.subsets import (
    fingerprint_mismatch,
    ids_to_indices,
    label_fraction_subset,
    load_fingerprint,
    load_ids,
    save_ids,
)
from falsecl.datasets.unlabeled import is_vaihingen
from falsecl.transforms import SegmentationAugmentation, SSLAugmentation, normalize

log = logging.getLogger(__name__)

DEFAULT_SSL_ROOTS = ("data/dubai_aerial",)
#: Extra unlabeled pools used when they exist. Empty: a default must not depend on the working directory.
DEFAULT_EXTRA_ROOTS: tuple[str, ...] = ()


def _run_dir(dm: LightningDataModule) -> Path | None:
    trainer = getattr(dm, "trainer", None)
    return Path(trainer.default_root_dir) if trainer is not None else None


def _training(dm: LightningDataModule) -> bool:
    trainer = getattr(dm, "trainer", None)
    return bool(trainer is not None and trainer.training)


def _loader(dataset: Dataset[Any], batch_size: int, num_workers: int, shuffle: bool) -> DataLoader[Any]:
    size = len(dataset)  # type: ignore[arg-type]
    sampler: RandomSampler | None = None
    if shuffle and size < batch_size:
        # Fewer patches than one batch (a tiny label fraction): resample them so every batch is full, since
        # batch norm cannot train on a batch of one and a ragged batch would weight patches unevenly.
        log.info("%d training patch(es) for batches of %d: sampling with replacement", size, batch_size)
        sampler = RandomSampler(dataset, replacement=True, num_samples=batch_size)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        # A last batch of one sample breaks BatchNorm; drop it when there is more than one batch.
        drop_last=shuffle and size > batch_size,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
    )


class SSLDataModule(LightningDataModule):
    """Unlabeled patches for contrastive pretraining; batches become ``{"views": [v0, v1], "index", "majority"}``.

    Sources: a labelled dataset's training split (``dataset``/``root``/``split``, masks ignored except for the
    ``"majority"`` diagnostic) and/or image folders (``roots``). Every run writes ``pretrain_images.txt`` (one
    line ``<source>:<path relative to its root>`` per image used) into ``trainer.default_root_dir``.

    Args:
        roots: Image folders/files (recursive). Default: ``data/dubai_aerial`` when no ``dataset`` is given
            (none otherwise), of which only the training tiles are used (Dubai val/test tiles, the official
            Potsdam/Vaihingen test tiles by name, and test/val folders never enter pretraining unless
            ``include_held_out``).
        extra_roots: Optional extra pools, used only when they exist (default: none).
        dataset: A labelled dataset name (``dubai``, ``potsdam``, ``loveda``, ``folder`` ...) whose ``split``
            is used as a pretraining source, found with the dataset's own file discovery.
        root: Root of ``dataset``.
        split: Split of ``dataset`` to pretrain on (``"train"``: its carved validation tiles stay out too).
        palette: Palette file for ``dataset="folder"``.
        patch_size: Size of the patches cut from the images (the loader's sample size).
        stride: Step between patches (``None``: ``patch_size``).
        crop_size: Size of each augmented view (random resized crop of a patch).
        batch_size: Patches per batch.
        num_workers: DataLoader workers.
        bands: 0-based bands to keep (``None``: all; every image must then have the same count).
        rgb_bands: Which of the kept bands are R, G, B (colour jitter and grayscale luma); ``[]`` if none are.
            ``None``: the labelled dataset's own (none for Vaihingen IR-R-G), else the first three bands.
        include_held_out: Also use test/validation folders and tiles.
        crop_scale: Area range of the random resized crop.
        color_strength: RGB colour-jitter strength ``s`` (SimCLR's is 1.0; moderate 0.5 by default).
        color_p: Probability of colour jitter.
        band_brightness: Per-band brightness shift (all bands).
        band_contrast: Per-band contrast spread (all bands).
        grayscale_p: Probability of the band-weighted grayscale.
        blur_p: Probability of Gaussian blur.
        stats_path: JSON cache of the band statistics; ``None``:
            ``<trainer.default_root_dir>/band_stats.json`` when a trainer is attached.
        stats_patches: Patches sampled for the statistics.
        seed: Seed of the statistics sample.
    """

    def __init__(
        self,
        roots: list[str] | None = None,
        extra_roots: list[str] | None = None,
        dataset: str | None = None,
        root: str | None = None,
        split: str = "train",
        palette: str | None = None,
        patch_size: int = 256,
        stride: int | None = None,
        crop_size: int = 96,
        batch_size: int = 64,
        num_workers: int = 0,
        bands: list[int] | None = None,
        rgb_bands: list[int] | None = None,
        include_held_out: bool = False,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        color_strength: float = 0.5,
        color_p: float = 0.8,
        band_brightness: float = 0.1,
        band_contrast: float = 0.2,
        grayscale_p: float = 0.1,
        blur_p: float = 0.5,
        stats_path: str | None = None,
        stats_patches: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if dataset is not None and dataset not in SEGMENTATION_DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; use one of {', '.join(SEGMENTATION_DATASETS)}")
        if dataset is not None and root is None:
            raise ValueError(f"dataset {dataset!r} needs its root folder: pass --data.root")
        self.save_hyperparameters()
        self.dataset_name, self.root, self.split, self.palette = dataset, root, split, palette
        default_roots = list(DEFAULT_SSL_ROOTS) if dataset is None else []
        self.roots = list(roots) if roots is not None else default_roots
        self.extra_roots = list(extra_roots) if extra_roots is not None else list(DEFAULT_EXTRA_ROOTS)
        self.patch_size, self.stride, self.crop_size = patch_size, stride, crop_size
        self.batch_size, self.num_workers = batch_size, num_workers
        self.bands, self.rgb_bands, self.include_held_out = bands, rgb_bands, include_held_out
        self.crop_scale = tuple(crop_scale)
        self.color_strength, self.color_p = color_strength, color_p
        self.band_brightness, self.band_contrast = band_brightness, band_contrast
        self.grayscale_p, self.blur_p = grayscale_p, blur_p
        self.stats_path, self.stats_patches, self.seed = stats_path, stats_patches, seed
        self.dataset: PretrainImagery | None = None
        self.stats: BandStats | None = None
        self.mean: list[float] = []
        self.std: list[float] = []
        self.in_channels = 0
        self.augment: SSLAugmentation | None = None

    def setup(self, stage: str | None = None) -> None:
        """Index the patches, compute (or load) band statistics and build the view augmentation."""
        if self.dataset is not None:
            return
        self.dataset = PretrainImagery(self._sources())
        for line in self.dataset.summary():
            log.info("pretraining source %s", line)
        self.in_channels = self.dataset.in_channels
        run_dir = _run_dir(self)
        if run_dir is not None and getattr(self.trainer, "is_global_zero", True):
            self.dataset.write_image_list(run_dir / "pretrain_images.txt")
        path = self.stats_path or (str(run_dir / "band_stats.json") if run_dir is not None else None)
        fingerprint = {
            "sources": self.dataset.summary(),
            "bands": self.bands,
            "patch_size": self.patch_size,
            "stride": self.stride,
            "num_files": len(self.dataset.files),
        }
        self.stats = cached_band_stats(
            self.dataset, path, self.stats_patches, self.seed, bands=self.in_channels, fingerprint=fingerprint
        )
        self.mean, self.std = list(self.stats.mean), list(self.stats.std)
        self.augment = SSLAugmentation(
            self.crop_size,
            scale=(float(self.crop_scale[0]), float(self.crop_scale[1])),
            rgb_bands=self._rgb_bands(),
            value_range=self.stats.max,
            color_strength=self.color_strength,
            color_p=self.color_p,
            band_brightness=self.band_brightness,
            band_contrast=self.band_contrast,
            grayscale_p=self.grayscale_p,
            blur_p=self.blur_p,
        )

    def _sources(self) -> list[PretrainSource]:
        """The labelled dataset's split (if any), then each folder root, each with its own discovery."""
        sources: list[PretrainSource] = []
        if self.dataset_name is not None:
            cls = SEGMENTATION_DATASETS[self.dataset_name]
            kwargs: dict[str, Any] = {"split": self.split, "patch_size": self.patch_size, "stride": self.stride}
            if self.bands is not None:
                kwargs["bands"] = self.bands
            if cls.name == "folder":
                kwargs["palette"] = self.palette
            labelled = cls(cast(str, self.root), **kwargs)
            if not self.include_held_out:
                labelled, dropped = without_held_out(labelled)
                if dropped:
                    log.info("official test tiles left out of pretraining: %s", ", ".join(dropped))
            if self.split != "train":
                log.warning("pretraining on the %r split of %s, not its training split", self.split, cls.name)
            sources.append(PretrainSource(f"{self.dataset_name}-{self.split}", Path(cast(str, self.root)), labelled))
        roots = list(self.roots)
        for extra in self.extra_roots:
            if Path(extra).exists():
                roots.append(extra)
            else:
                log.info("optional unlabeled root %s not found; pretraining without it", extra)
        for k, folder in enumerate(roots):
            images = UnlabeledImagery(
                folder, self.patch_size, self.stride, bands=self.bands, include_held_out=self.include_held_out
            )
            sources.append(PretrainSource(f"folder{k}-{Path(folder).name}", Path(folder), images))
        return sources

    def _rgb_bands(self) -> list[int] | None:
        """R, G, B band positions for colour jitter: explicit, else the labelled dataset's, else the first three."""
        if self.rgb_bands is not None:
            return list(self.rgb_bands) or None
        if self.dataset is not None and any(is_vaihingen(p.name) for p in self.dataset.files):
            log.info("Vaihingen tiles (IR, R, G) among the pretraining images: no RGB colour jitter")
            return None
        if self.dataset_name is not None:
            own = SEGMENTATION_DATASETS[self.dataset_name].rgb_bands
            if own is None:
                return None
            if self.bands is None:
                return list(own)
            # Positions of the dataset's R, G, B among the kept bands (none if a colour band was dropped).
            kept = [int(b) for b in self.bands] if not isinstance(self.bands, str) else list(own)
            return [kept.index(b) for b in own] if all(b in kept for b in own) else None
        return [0, 1, 2] if self.in_channels >= 3 else None

    def train_dataloader(self) -> DataLoader[Any]:
        """Raw patches ``{"image": (B, C, patch, patch), "index": (B,), "majority": (B,)}``, shuffled."""
        if self.dataset is None:
            self.setup("fit")
        return _loader(cast(PretrainImagery, self.dataset), self.batch_size, self.num_workers, shuffle=True)

    def make_views(self, image: Tensor) -> list[Tensor]:
        """Two independently augmented, normalised views (each (B, C, crop, crop)) of a raw batch."""
        if self.augment is None:
            raise RuntimeError("SSLDataModule.setup() must run before views can be made")
        return [normalize(self.augment(image), self.mean, self.std) for _ in range(2)]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Turn raw training batches into ``{"views": [v0, v1], "index", "majority"}``; others are normalised."""
        if _training(self):
            meta = {k: v for k, v in batch.items() if k in ("index", "majority")}
            return {"views": self.make_views(batch["image"]), **meta}
        return {**batch, "image": normalize(batch["image"], self.mean, self.std)}


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
    ) -> None:
        super().__init__()
        if dataset not in SEGMENTATION_DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; use one of {', '.join(SEGMENTATION_DATASETS)}")
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction} (1 % is 0.01)")
        self.save_hyperparameters()
        self.dataset_name, self.root, self.palette, self.bands = dataset, root, palette, bands
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
        self.ignore_index = IGNORE_INDEX
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
        cls = SEGMENTATION_DATASETS[self.dataset_name]
        kwargs: dict[str, Any] = {"split": split, "patch_size": patch_size, "stride": stride}
        if self.bands is not None:
            kwargs["bands"] = self.bands
        if cls.name == "folder":
            kwargs["palette"] = self.palette
        return cls(self.root, **kwargs)

    def setup(self, stage: str | None = None) -> None:
        """Index train/val patches, draw (or load) the label subset and compute (or load) band statistics."""
        if self.train_full is not None:
            return
        train = self.make_dataset(self.train_split, self.patch_size, self.stride)
        self.train_full = train
        self.class_names, self.num_classes = list(train.classes), train.num_classes
        self.in_channels = train.in_channels
        run_dir = _run_dir(self)
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
        self.val_description = f"{self.val_split}: {self.val_set.split_description}"
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

    def source_fingerprint(self, train: SegmentationDataset) -> dict[str, Any]:
        """What the training patches are drawn from: recorded with every artefact derived from them."""
        return {
            "dataset": self.dataset_name,
            "root": str(Path(self.root).resolve()),
            "split": self.train_split,
            "bands": train.band_indices,
            "patch_size": self.patch_size,
            "stride": self.stride,
            "num_files": len(train.files),
            "num_patches": len(train),
        }

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
        return _loader(cast(Dataset[Any], self.train_set), self.batch_size, self.num_workers, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        """Every patch of the val tiles, in order."""
        if self.val_set is None:
            self.setup("validate")
        return _loader(
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
        if _training(self) and self.augment is not None and mask is not None:
            image, mask = self.augment(image, mask)
        out = {**batch, "image": normalize(image, self.mean, self.std)}
        if mask is not None:
            out["mask"] = mask
        return out


__all__ = [
    "DEFAULT_EXTRA_ROOTS",
    "DEFAULT_SSL_ROOTS",
    "DubaiAerial",
    "SSLDataModule",
    "SegmentationDataModule",
]
