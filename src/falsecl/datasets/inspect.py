"""Inspect a dataset before training on it (``falsecl data check`` and ``falsecl data plot``).

:func:`check` reads every file and reports the number of images and patches, image sizes, bands, and the
per-class pixel histogram, raising :class:`~falsecl.datasets.errors.DatasetError` naming the file and the fix
on bad data. :func:`plot` writes a grid of images with their masks in the class colours, to see that the
colour -> class mapping is right.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from falsecl.datasets.base import SegmentationDataset
from falsecl.datasets.display import colourise, display_rgb
from falsecl.datasets.io import IGNORE_INDEX
from falsecl.datasets.registry import DATASETS, segmentation_dataset
from falsecl.datasets.unlabeled import UnlabeledImagery


def build_dataset(
    name: str,
    root: str,
    split: str | None,
    patch_size: int | None,
    palette: str | None = None,
    bands: str | None = None,
) -> SegmentationDataset | UnlabeledImagery:
    """Instantiate a dataset by name, as the CLI and the configs name them.

    Args:
        name: Key of :data:`falsecl.datasets.DATASETS`.
        root: Dataset root.
        split: Split name; ``None`` uses the dataset's first split (``"all"`` for ``folder``).
        patch_size: Patch size (``None``: whole images; ignored by nothing).
        palette: Palette file for ``folder``.
        bands: Band set name for datasets that have them.

    Returns:
        The dataset.
    """
    if DATASETS.get(name) is UnlabeledImagery:
        return UnlabeledImagery([root], patch_size or 256, bands=bands)
    return segmentation_dataset(name, root, split, patch_size, bands=bands, palette=palette)


def check(dataset: SegmentationDataset | UnlabeledImagery, out: Any = None) -> dict[str, Any]:
    """Read every image and mask of ``dataset`` whole and print a summary.

    Args:
        dataset: Dataset to check.
        out: Text stream for the report (``None``: standard output).

    Returns:
        The summary: ``images``, ``patches``, ``sizes``, ``bands``, ``dtype``, ``histogram`` (class name ->
        pixels, labelled datasets only).

    Raises:
        DatasetError: Any bad file (unknown colours, corrupt data ...).
    """
    from falsecl.datasets.io import read_window

    out = sys.stdout if out is None else out
    sizes = Counter((info.height, info.width) for info in dataset.infos)
    dtypes = sorted({info.dtype for info in dataset.infos})
    print(f"dataset : {type(dataset).__name__} ({dataset.name})", file=out)
    if isinstance(dataset, SegmentationDataset):
        print(f"root    : {dataset.root}   split: {dataset.split}", file=out)
    print(f"images  : {len(dataset.files)}", file=out)
    print(f"patches : {len(dataset)} (patch size {dataset.patch_size})", file=out)
    size_text = ", ".join(f"{w}x{h} ({n})" for (h, w), n in sorted(sizes.items())[:8])
    more = f" and {len(sizes) - 8} more" if len(sizes) > 8 else ""
    print(f"sizes   : {size_text}{more}  (width x height (images))", file=out)
    print(
        f"bands   : {dataset.infos[0].bands} in files, {dataset.in_channels} used; dtype {', '.join(dtypes)}",
        file=out,
    )
    summary: dict[str, Any] = {
        "images": len(dataset.files),
        "patches": len(dataset),
        "sizes": dict(sizes),
        "bands": dataset.in_channels,
        "dtype": dtypes,
    }
    if isinstance(dataset, UnlabeledImagery):
        for path in dataset.files:
            read_window(path)  # decode whole: truncated files fail here, not mid-training
        print("ok", file=out)
        return summary
    whole = dataset.with_patch_size(None)
    counts = np.zeros(256, dtype=np.int64)
    for i in range(len(whole)):
        whole.read_image(i)
        counts += np.bincount(whole.read_mask(i).ravel(), minlength=256)[:256]
    total = int(counts.sum())
    hist = {name: int(counts[c]) for c, name in enumerate(dataset.classes)}
    hist["ignore"] = int(counts[IGNORE_INDEX])
    print("classes : pixels (share)", file=out)
    for name, n in hist.items():
        print(f"  {name:<22} {n:>14,d}  {100.0 * n / max(total, 1):6.2f} %", file=out)
    print("ok", file=out)
    summary["histogram"] = hist
    return summary


def plot(dataset: SegmentationDataset | UnlabeledImagery, out_path: str | Path, num: int = 4, seed: int = 0) -> Path:
    """Write a PNG grid: one row per random patch, image and (when labelled) mask in the class colours.

    Args:
        dataset: Dataset to show.
        out_path: PNG file to write.
        num: Patches to show.
        seed: Seed of the patch choice.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch as LegendPatch

    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(dataset), size=min(num, len(dataset)), replace=False).tolist())
    labelled = isinstance(dataset, SegmentationDataset)
    cols = 2 if labelled else 1
    fig, axes = plt.subplots(len(picks), cols, figsize=(3.2 * cols, 3.2 * len(picks)), squeeze=False)
    rgb = dataset.rgb_bands if isinstance(dataset, SegmentationDataset) else (0, 1, 2)
    for row, index in enumerate(picks):
        sample = dataset[index]
        ax = axes[row][0]
        ax.imshow(display_rgb(sample["image"], rgb))
        ax.set_title(dataset.patches[index].id, fontsize=7)
        ax.axis("off")
        if isinstance(dataset, SegmentationDataset):
            axes[row][1].imshow(colourise(sample["mask"], dataset.colours), interpolation="nearest")
            axes[row][1].axis("off")
    if isinstance(dataset, SegmentationDataset):
        handles = [
            LegendPatch(color=(c[0] / 255, c[1] / 255, c[2] / 255), label=n)
            for n, c in zip(dataset.classes, dataset.colours, strict=True)
        ]
        handles.append(LegendPatch(color="black", label="ignore"))
        fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=7)
    fig.tight_layout(rect=(0, 0.06 if labelled else 0, 1, 1))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
