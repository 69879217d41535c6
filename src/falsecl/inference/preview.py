"""Class colours and the preview PNG of a class map: image, class map and legend side by side.

The preview is for a person glancing at a result: it is drawn from subsampled arrays (the longer side at most a
couple of thousand pixels), never from the full-resolution raster, so it costs the same for any image size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Default class colours (RGB); the first six are the Dubai aerial classes' own colours.
DEFAULT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (60, 16, 152),
    (132, 41, 246),
    (110, 193, 228),
    (254, 221, 58),
    (226, 169, 41),
    (155, 155, 155),
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)

#: Class value of pixels without a prediction (input nodata) in class maps.
NODATA_CLASS = 255


def class_colours(num_classes: int, colours: Sequence[Sequence[int]] | None = None) -> list[tuple[int, int, int]]:
    """RGB colour of each of ``num_classes`` classes: ``colours`` first, :data:`DEFAULT_PALETTE` for the rest."""
    out = [(int(c[0]), int(c[1]), int(c[2])) for c in (colours or [])][:num_classes]
    out += [DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)] for i in range(len(out), num_classes)]
    return out


def class_labels(num_classes: int, names: Sequence[str] | None = None) -> list[str]:
    """Name of each class: ``names`` first, ``class_<i>`` for the rest."""
    out = [str(n) for n in (names or [])][:num_classes]
    return out + [f"class_{i}" for i in range(len(out), num_classes)]


def colourise_classes(labels: NDArray[Any], colours: Sequence[tuple[int, int, int]]) -> NDArray[np.uint8]:
    """Class indices ``(H, W)`` -> RGB ``(H, W, 3)`` uint8; :data:`NODATA_CLASS` is white."""
    lut = np.full((256, 3), 255, dtype=np.uint8)
    lut[: len(colours)] = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
    lut[NODATA_CLASS] = 255
    out: NDArray[np.uint8] = lut[labels.astype(np.uint8)]
    return out


def stretch_rgb(image: NDArray[Any], valid: NDArray[np.bool_] | None = None) -> NDArray[np.float64]:
    """``(C, H, W)`` raw bands -> ``(H, W, 3)`` floats in [0, 1]: first three bands, 2-98 % stretch per band.

    One band is shown as grey. Percentiles are taken over ``valid`` pixels only (nodata would flatten them).
    """
    bands = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    rgb = bands.astype(np.float64)
    pixels = rgb[:, valid] if valid is not None and valid.any() else rgb.reshape(3, -1)
    lo = np.percentile(pixels, 2, axis=1)[:, None, None]
    hi = np.percentile(pixels, 98, axis=1)[:, None, None]
    out: NDArray[np.float64] = np.clip((rgb - lo) / np.maximum(hi - lo, 1e-9), 0, 1).transpose(1, 2, 0)
    if valid is not None:
        out[~valid] = 1.0
    return out


def save_preview(
    path: str | Path,
    image: NDArray[Any] | None,
    labels: NDArray[Any],
    names: Sequence[str],
    colours: Sequence[tuple[int, int, int]],
    title: str = "",
    counts: Sequence[int] | None = None,
) -> Path:
    """Write the preview PNG: image (if given), class map and a legend with class names and shares.

    Args:
        path: PNG to write.
        image: ``(C, h, w)`` subsampled raw image, or ``None`` to show the class map alone with its legend.
        labels: ``(h, w)`` subsampled class map (uint8, :data:`NODATA_CLASS` where there is no data).
        names: Class names (the legend).
        colours: RGB colour per class.
        title: Figure title (e.g. the input's file name).
        counts: Pixels per class over the whole map, shown as percentages in the legend.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    h, w = labels.shape
    panels: list[tuple[str, NDArray[Any]]] = []
    if image is not None:
        panels.append(("image", stretch_rgb(image, labels != NODATA_CLASS)))
    panels.append(("class map", colourise_classes(labels, colours)))
    side = 5.0
    panel_w = side * min(2.0, max(0.5, w / max(h, 1)))
    fig, axes = plt.subplots(
        1,
        len(panels) + 1,
        figsize=(panel_w * len(panels) + 2.6, side),
        squeeze=False,
        gridspec_kw={"width_ratios": [panel_w] * len(panels) + [2.6]},
    )
    for ax, (panel_title, array) in zip(axes[0], panels, strict=False):
        ax.imshow(array, interpolation="nearest")
        ax.set_title(panel_title)
        ax.axis("off")
    total = float(sum(counts)) if counts is not None else 0.0
    handles = []
    for i, name in enumerate(names):
        share = f" ({100 * counts[i] / total:.1f} %)" if counts is not None and total > 0 else ""
        r, g, b = colours[i]
        handles.append(Patch(facecolor=(r / 255, g / 255, b / 255), edgecolor="black", label=f"{name}{share}"))
    legend_ax = axes[0][-1]
    legend_ax.axis("off")
    legend_ax.legend(handles=handles, loc="center left", frameon=False, title="classes")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path
