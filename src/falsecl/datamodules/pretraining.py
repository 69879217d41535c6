"""The pretraining datamodule: unlabeled patches from image folders and labelled datasets' training splits.

Raw patches go to the loader; the two augmented views and :func:`falsecl.transforms.normalize` are made on the
device in ``on_after_batch_transfer``, with band statistics computed from the pretraining images (cached as
JSON in the run folder).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader

from falsecl.datamodules.shared import loader, run_folder_of, training
from falsecl.datasets import SEGMENTATION_DATASETS, UnlabeledImagery, segmentation_dataset
from falsecl.datasets.pretrain import PretrainImagery, PretrainSource, without_held_out
from falsecl.datasets.stats import BandStats, cached_band_stats
from falsecl.datasets.unlabeled import is_vaihingen
from falsecl.transforms import SSLAugmentation, normalize

log = logging.getLogger(__name__)

DEFAULT_SSL_ROOTS = ("data/dubai_aerial",)
#: Extra unlabeled pools used when they exist. Empty: a default must not depend on the working directory.
DEFAULT_EXTRA_ROOTS: tuple[str, ...] = ()


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
        run_dir = run_folder_of(self)
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
            root = cast(str, self.root)
            labelled = segmentation_dataset(
                self.dataset_name, root, self.split, self.patch_size, self.stride, self.bands, self.palette
            )
            if not self.include_held_out:
                labelled, dropped = without_held_out(labelled)
                if dropped:
                    log.info("official test tiles left out of pretraining: %s", ", ".join(dropped))
            if self.split != "train":
                log.warning("pretraining on the %r split of %s, not its training split", self.split, cls.name)
            sources.append(PretrainSource(f"{self.dataset_name}-{self.split}", Path(root), labelled))
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
        return loader(cast(PretrainImagery, self.dataset), self.batch_size, self.num_workers, shuffle=True)

    def make_views(self, image: Tensor) -> list[Tensor]:
        """Two independently augmented, normalised views (each (B, C, crop, crop)) of a raw batch."""
        if self.augment is None:
            raise RuntimeError("SSLDataModule.setup() must run before views can be made")
        return [normalize(self.augment(image), self.mean, self.std) for _ in range(2)]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Turn raw training batches into ``{"views": [v0, v1], "index", "majority"}``; others are normalised."""
        if training(self):
            meta = {k: v for k, v in batch.items() if k in ("index", "majority")}
            return {"views": self.make_views(batch["image"]), **meta}
        return {**batch, "image": normalize(batch["image"], self.mean, self.std)}
