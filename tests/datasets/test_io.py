import numpy as np
import pytest

from falsecl.datasets.errors import DatasetError
from falsecl.datasets.io import colours_to_index, index_lookup, read_info, read_window, remap_index


def naive_colours(rgb, palette):
    out = np.full(rgb.shape[1:], -1, np.int64)
    for y in range(rgb.shape[1]):
        for x in range(rgb.shape[2]):
            out[y, x] = palette[tuple(int(v) for v in rgb[:, y, x])]
    return out


def test_colours_to_index_matches_loop():
    palette = {(0, 0, 0): 255, (255, 255, 255): 0, (0, 0, 255): 1, (1, 2, 3): 2}
    rng = np.random.default_rng(0)
    colours = np.array(list(palette), np.uint8)
    rgb = colours[rng.integers(0, 4, (9, 7))].transpose(2, 0, 1)
    assert np.array_equal(colours_to_index(rgb, palette, "m.png"), naive_colours(rgb, palette))


def test_unknown_colour_reports_colour_count_and_file():
    rgb = np.zeros((3, 4, 4), np.uint8)
    rgb[:, 0, :3] = np.array([7, 8, 9])[:, None]
    with pytest.raises(DatasetError, match=r"mask m\.png.*\(7,8,9\) x 3 px"):
        colours_to_index(rgb, {(0, 0, 0): 0}, "m.png")


def test_remap_index():
    lut = index_lookup({0: 255, 1: 0, 2: 1})
    assert remap_index(np.array([[[0, 1, 2]]]), lut, "a").tolist() == [[255, 0, 1]]
    with pytest.raises(DatasetError, match=r"a\.png.*9 x 1 px"):
        remap_index(np.array([[0, 9]]), lut, "a.png")


def test_read_window_pads_and_matches_full_read(tmp_path, fakes):
    array = np.arange(4 * 20 * 30, dtype=np.uint16).reshape(4, 20, 30)
    path = fakes.write_geotiff(tmp_path / "x.tif", array)
    info = read_info(path)
    assert (info.height, info.width, info.bands, info.dtype) == (20, 30, 4, "uint16") and info.crs
    win = read_window(path, 10, 20, 16, 16, bands=[3, 0], fill=7)
    assert win.shape == (2, 16, 16) and win.dtype == np.uint16
    assert np.array_equal(win[:, :10, :10], array[[3, 0], 10:20, 20:30])
    assert (win[:, 10:] == 7).all() and (win[:, :, 10:] == 7).all()
    png = fakes.write_png(tmp_path / "x.png", array[0].astype(np.uint8))
    assert np.array_equal(read_window(png, 2, 3, 4, 5)[0], array[0, 2:6, 3:8].astype(np.uint8))
