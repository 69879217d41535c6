"""Unlabeled imagery for self-supervised pretraining: folders of JPEG/PNG/GeoTIFF of any size.

Images are cut into patches with the shared tiling routine; GeoTIFFs are read in windows. Several roots can be
combined (e.g. the Dubai training tiles plus an extra unlabeled pool). Held-out data never enters pretraining
by default: the rules (dataset layouts recognised wherever they sit, ISPRS test tiles by name, held-out folder
names, symlinks judged by their target, label files never imagery) live in :mod:`falsecl.datasets.heldout`;
every exclusion is logged and kept in :attr:`UnlabeledImagery.excluded`.
"""

from __future__ import annotations

import logging
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
from falsecl.datasets.errors import DatasetError, DatasetNotFoundError
from falsecl.datasets.heldout import HeldOutRules, ImageScan, summarise
from falsecl.datasets.io import IMAGE_SUFFIXES, ImageInfo, read_info, read_window
from falsecl.tiling import POLICIES, PaddingPolicy, Patch, tile_patches

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

def scan_images(root: Path, include_held_out: bool = False) -> ImageScan:
    """Image files under ``root`` (recursive, sorted) for pretraining, minus labels and held-out images.

    The held-out rules (dataset layouts found above, at or below ``root``, ISPRS test tiles by name, held-out
    folder names, symlinks judged by their target) are those of :mod:`falsecl.datasets.heldout`.

    Args:
        root: A folder or a single image file.
        include_held_out: Also take validation/test images (label files are never taken).

    Returns:
        The images, and what was left out and why.

    Raises:
        DatasetNotFoundError: ``root`` does not exist.
    """
    if not root.exists():
        raise DatasetNotFoundError(
            f"unlabeled imagery root {root} does not exist. Fix: pass an existing folder."
        )
    rules = HeldOutRules()
    candidates: list[tuple[Path, list[str]]]
    if root.is_file():
        candidates = [(root, [])]
    else:
        candidates = [
            (path, list(path.relative_to(root).parts[:-1]))
            for path in sorted(root.rglob("*"))
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        ]
    scan = ImageScan(root, [], [])
    for path, dirs in candidates:
        if rules.is_label(path, dirs) or rules.is_label(path.resolve(), []):
            scan.labels += 1
            continue
        root_name = root.name if root.is_dir() else None
        reason = None if include_held_out else rules.reason(path, dirs, root_name)
        if reason is None:
            scan.images.append(path)
        else:
            scan.excluded.append((path, reason))
    if scan.excluded:
        log.warning("pretraining images under %s: %s", root, summarise(scan.excluded))
    return scan


def find_images(root: Path, include_held_out: bool = False) -> list[Path]:
    """The images :func:`scan_images` keeps (sorted paths)."""
    return scan_images(root, include_held_out).images


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
        #: Held-out images left out, with the reason (see :mod:`falsecl.datasets.heldout`).
        self.excluded: list[tuple[Path, str]] = []
        for root in self.roots:
            scan = scan_images(root, include_held_out)
            self.excluded += scan.excluded
            if not scan.images:
                why = f" ({summarise(scan.excluded)})" if scan.excluded else ""
                raise DatasetNotFoundError(
                    f"no JPEG/PNG/GeoTIFF images under {root} to pretrain on (searched recursively; "
                    f"{scan.labels} label file(s) and {len(scan.excluded)} held-out image(s) excluded{why}). "
                    "Fix: pass the folder that holds the training images; include_held_out=True only if "
                    "no model selection or evaluation will use these images."
                )
            for path in scan.images:
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
