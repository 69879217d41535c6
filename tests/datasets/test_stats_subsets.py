import numpy as np
import pytest

from falsecl.datasets import DatasetError, PotsdamTiles, UnlabeledImagery
from falsecl.datasets.stats import cached_band_stats, compute_band_stats, load_band_stats
from falsecl.datasets.subsets import ids_to_indices, label_fraction_subset, load_ids, save_ids
from falsecl.tiling import Patch


def test_stats_equal_numpy_over_all_patches_uint16(tmp_path, fakes):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 12000, size=(4, 32, 64), dtype=np.uint16) for _ in range(2)]
    for i, a in enumerate(arrays):
        fakes.write_geotiff(tmp_path / f"img{i}.tif", a)
    ds = UnlabeledImagery([tmp_path], patch_size=32)
    stats = compute_band_stats(ds, max_patches=100)
    pixels = np.concatenate([a.reshape(4, -1) for a in arrays], axis=1).astype(np.float64)
    np.testing.assert_allclose(stats.mean, pixels.mean(1), rtol=1e-10)
    np.testing.assert_allclose(stats.std, pixels.std(1), rtol=1e-8)
    assert stats.max == [float(v) for v in pixels.max(1)] and stats.num_patches == 4
    assert max(stats.max) > 255  # 16-bit values are kept raw, not clipped to 8 bits


def test_stats_sample_is_bounded_and_cached(tmp_path, fakes):
    root = fakes.make_potsdam_tiles(tmp_path / "p", tiles=["2_10"], size=64)
    ds = PotsdamTiles(root, patch_size=16, tiles=["2_10"])
    path = tmp_path / "run" / "band_stats.json"
    stats = cached_band_stats(ds, path, max_patches=5, seed=1, bands=4)
    assert stats.num_patches == 5 and path.is_file()
    assert load_band_stats(path) == stats
    path.write_text('{"mean": [1, 2, 3], "std": [1, 1, 1], "max": [1, 1, 1], "num_patches": 1}')
    assert cached_band_stats(ds, path, 5, 1, bands=4).bands == 4  # stale 3-band cache recomputed
    path.write_text("{}")
    with pytest.raises(DatasetError, match="malformed"):
        load_band_stats(path)


def patches(tiles):
    return [Patch(i, t, 0, 0, 1, 1) for i, t in enumerate(t for t, n in tiles.items() for _ in range(n))]


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.1, 0.25, 1.0])
def test_label_fraction_counts_and_strata(fraction):
    ps = patches({"a": 300, "b": 100, "c": 200})
    chosen = label_fraction_subset(ps, fraction, seed=3)
    assert len(chosen) == max(1, round(fraction * 600)) and len(set(chosen)) == len(chosen)
    per_tile = {t: sum(ps[i].tile == t for i in chosen) for t in "abc"}
    for t, n in {"a": 300, "b": 100, "c": 200}.items():
        assert abs(per_tile[t] - fraction * n) < 1  # proportional up to rounding
    assert chosen == label_fraction_subset(ps, fraction, seed=3)


def test_label_fraction_seed_changes_and_errors():
    ps = patches({"a": 50, "b": 50})
    assert label_fraction_subset(ps, 0.1, 0) != label_fraction_subset(ps, 0.1, 1)
    assert len(label_fraction_subset(ps, 0.001, 0)) == 1
    with pytest.raises(ValueError, match="0.01 for 1 %"):
        label_fraction_subset(ps, 5, 0)


def test_ids_roundtrip(tmp_path):
    ids = ["t/0:0:0", "t/0:0:32", "u/1:32:0"]
    save_ids(ids[1:], tmp_path / "s.txt")
    assert ids_to_indices(load_ids(tmp_path / "s.txt"), ids) == [1, 2]
    with pytest.raises(DatasetError, match="not in the dataset"):
        ids_to_indices(["x/9:0:0"], ids)
