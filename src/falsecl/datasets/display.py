"""Pictures of imagery and masks for people: a contrast stretch and class colours (for ``plot`` and previews)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: An RGB colour, 0-255 per channel.
Colour = tuple[int, int, int]


def display_rgb(image: Tensor, rgb_bands: Sequence[int] | None = (0, 1, 2)) -> NDArray[np.float64]:
    """Image (C, H, W) raw -> (H, W, 3) floats in [0, 1] with a per-band 2-98 % percentile stretch."""
    array = image.detach().cpu().double().numpy()
    bands = list(rgb_bands) if rgb_bands is not None and array.shape[0] >= 3 else [0, 0, 0]
    rgb = array[bands]
    lo = np.percentile(rgb, 2, axis=(1, 2), keepdims=True)
    hi = np.percentile(rgb, 98, axis=(1, 2), keepdims=True)
    out: NDArray[np.float64] = np.clip((rgb - lo) / np.maximum(hi - lo, 1e-9), 0, 1).transpose(1, 2, 0)
    return out


def colourise(mask: Tensor, colours: Sequence[Colour]) -> NDArray[np.uint8]:
    """Class indices (H, W) -> RGB (H, W, 3) uint8 in the class colours; ignore (255) is black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for i, colour in enumerate(colours):
        lut[i] = colour
    m = mask.detach().cpu().numpy().astype(np.int64)
    out: NDArray[np.uint8] = lut[np.clip(m, 0, 255)]
    return out


def plot_sample(
    sample: Mapping[str, Tensor],
    colours: Sequence[Colour],
    rgb_bands: Sequence[int] | None = (0, 1, 2),
    show_titles: bool = True,
    suptitle: str | None = None,
) -> Figure:
    """Show a sample's image (RGB bands, 2-98 % stretch) next to its mask in the class colours.

    Args:
        sample: ``{"image": (C, H, W), "mask": (H, W)}``, optionally ``"prediction": (H, W)``.
        colours: Colour of each class.
        rgb_bands: Which bands are red, green, blue.
        show_titles: Put titles over the panels.
        suptitle: Figure title.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    panels: list[tuple[str, NDArray[Any]]] = [("image", display_rgb(sample["image"], rgb_bands))]
    for key in ("mask", "prediction"):
        if key in sample:
            panels.append((key, colourise(sample[key], colours)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (title, array) in zip(axes[0], panels, strict=True):
        ax.imshow(array)
        ax.axis("off")
        if show_titles:
            ax.set_title(title)
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig
