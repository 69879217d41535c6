"""The one tiling routine: window positions that cover an image, and patch identifiers.

Every dataset, the statistics sampler and sliding-window inference use these functions, so a patch
``(tile, row, col)`` means the same pixels everywhere and results are reproducible.

Padding policies for a side of ``length`` pixels cut into windows of ``size`` with step ``stride``:

* ``"flush"`` (default): windows start at ``0, stride, 2*stride, ...`` and the last window is moved back to
  end exactly at the border (it overlaps its neighbour instead of leaving pixels out). A side shorter than
  ``size`` gets one window at 0 that the reader pads.
* ``"pad"``: windows start at ``0, stride, ...`` until the image is covered; the last one hangs over the
  border and the reader pads it (image with 0, mask with the ignore index 255).
* ``"drop"``: only windows that fit completely; the remainder at the right/bottom border is not used (the
  usual non-overlapping cut of the field, e.g. 1305 patches of 256 x 256 for the Dubai dataset).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

PaddingPolicy = Literal["flush", "pad", "drop"]
POLICIES: tuple[str, ...] = ("flush", "pad", "drop")


class Patch(NamedTuple):
    """One window of one image.

    Attributes:
        image_index: Position of the image in the dataset's file list.
        tile: Tile (scene) the image belongs to; splits and label-fraction subsets never cut a tile.
        row: Top pixel row of the window in the image.
        col: Left pixel column of the window in the image.
        height: Window height in pixels (the patch size, or the image height for whole images).
        width: Window width in pixels.
    """

    image_index: int
    tile: str
    row: int
    col: int
    height: int
    width: int

    @property
    def id(self) -> str:
        """Stable identifier ``"<tile>/<index>:<row>:<col>"`` used in saved subset lists."""
        return f"{self.tile}/{self.image_index}:{self.row}:{self.col}"


def _check(length: int, size: int, stride: int, policy: str) -> None:
    if length < 1:
        raise ValueError(f"cannot tile a side of length {length}: the image is empty")
    if size < 1 or stride < 1:
        raise ValueError(f"patch size ({size}) and stride ({stride}) must be positive integers")
    if policy not in POLICIES:
        raise ValueError(f"unknown padding policy {policy!r}; use one of {', '.join(POLICIES)}")


def window_starts(
    length: int, size: int, stride: int | None = None, policy: PaddingPolicy = "flush"
) -> list[int]:
    """Start offsets of windows of ``size`` pixels covering a side of ``length`` pixels.

    Args:
        length: Side length of the image in pixels.
        size: Window size in pixels.
        stride: Step between windows; ``None`` means ``size`` (no overlap).
        policy: ``"flush"``, ``"pad"`` or ``"drop"`` (see the module docstring).

    Returns:
        Sorted, distinct start offsets. With ``"flush"`` the last window ends exactly at ``length`` whenever
        ``length >= size``. With ``"drop"`` the list is empty when ``length < size``.

    Raises:
        ValueError: Non-positive sizes or an unknown policy.
    """
    stride = size if stride is None else stride
    _check(length, size, stride, policy)
    if policy == "drop":
        return list(range(0, length - size + 1, stride))
    if length <= size:
        return [0]
    if policy == "pad":
        starts = list(range(0, length, stride))
        # Stop at the first window that reaches the border; later ones would only cover padding.
        return [s for s in starts if s == 0 or s - stride + size < length]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def grid_windows(
    height: int, width: int, size: int, stride: int | None = None, policy: PaddingPolicy = "flush"
) -> list[tuple[int, int, int, int]]:
    """Windows covering an ``height x width`` image, row-major.

    This is the routine sliding-window inference reuses to place its windows.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        size: Square window size in pixels.
        stride: Step between windows; ``None`` means ``size``.
        policy: ``"flush"``, ``"pad"`` or ``"drop"``.

    Returns:
        ``(row, col, size, size)`` tuples. With ``"flush"`` (and an image at least ``size`` on both sides)
        every window lies inside the image and together they cover every pixel.
    """
    rows = window_starts(height, size, stride, policy)
    cols = window_starts(width, size, stride, policy)
    return [(r, c, size, size) for r in rows for c in cols]


def tile_patches(
    index: int,
    tile: str,
    height: int,
    width: int,
    size: int | None,
    stride: int | None = None,
    policy: PaddingPolicy = "flush",
) -> list[Patch]:
    """Patches of one image; ``size=None`` gives one patch that is the whole image.

    Args:
        index: Position of the image in the dataset's file list.
        tile: Tile (scene) identifier of the image.
        height: Image height in pixels.
        width: Image width in pixels.
        size: Patch size, or ``None`` for the whole image.
        stride: Step between patches; ``None`` means ``size``.
        policy: Padding policy.

    Returns:
        The image's patches in row-major order.
    """
    if size is None:
        return [Patch(index, tile, 0, 0, height, width)]
    return [
        Patch(index, tile, r, c, h, w) for r, c, h, w in grid_windows(height, width, size, stride, policy)
    ]
