import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falsecl.tiling import Patch, grid_windows, tile_patches, window_starts


def naive_flush(length, size, stride):
    """Straight from the definition: steps of stride, then one window flush with the border."""
    if length <= size:
        return [0]
    starts = []
    s = 0
    while s + size <= length:
        starts.append(s)
        s += stride
    if starts[-1] + size != length:
        starts.append(length - size)
    return starts


@given(st.integers(1, 300), st.integers(1, 64), st.integers(1, 64))
@settings(max_examples=150, deadline=None)
def test_flush_matches_reference_and_covers(length, size, stride):
    starts = window_starts(length, size, stride)
    assert starts == naive_flush(length, size, stride)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + size] = True
    if stride <= size:
        assert covered.all()
    if length >= size:
        assert starts[-1] + size == length and all(0 <= s <= length - size for s in starts)


@given(st.integers(1, 300), st.integers(1, 64), st.integers(1, 64))
@settings(max_examples=100, deadline=None)
def test_pad_and_drop(length, size, stride):
    pad = window_starts(length, size, stride, "pad")
    assert pad[0] == 0 and all(b - a == stride for a, b in zip(pad, pad[1:], strict=False))
    if stride <= size:
        assert pad[-1] + size >= length  # covers the image
    if len(pad) > 1:
        assert pad[-2] + size < length  # no window of padding only
    drop = window_starts(length, size, stride, "drop")
    assert all(s + size <= length for s in drop)
    assert len(drop) == (0 if length < size else (length - size) // stride + 1)


def test_examples():
    assert window_starts(100, 32) == [0, 32, 64, 68]
    assert window_starts(100, 32, policy="pad") == [0, 32, 64, 96]
    assert window_starts(100, 32, policy="drop") == [0, 32, 64]
    assert window_starts(20, 32) == [0]
    assert window_starts(20, 32, policy="drop") == []
    assert window_starts(64, 32, 16) == [0, 16, 32]
    # Dubai tile 1 (797 x 644) cut into non-overlapping 256 patches: 3 x 2 = 6 per image, as in PROVENANCE.
    assert len(grid_windows(644, 797, 256, policy="drop")) == 6


def test_grid_windows_row_major_and_bad_args():
    wins = grid_windows(50, 70, 32, 32)
    assert wins == [(r, c, 32, 32) for r in (0, 18) for c in (0, 32, 38)]
    with pytest.raises(ValueError, match="policy"):
        window_starts(10, 4, 4, "wrap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        window_starts(10, 0)


def test_tile_patches_ids_are_stable():
    patches = tile_patches(3, "tileA", 64, 64, 32)
    assert [p.id for p in patches] == ["tileA/3:0:0", "tileA/3:0:32", "tileA/3:32:0", "tileA/3:32:32"]
    assert tile_patches(0, "t", 40, 50, None) == [Patch(0, "t", 0, 0, 40, 50)]
