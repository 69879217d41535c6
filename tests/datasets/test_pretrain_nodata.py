"""Pretraining skips mostly-empty patches and computes statistics over valid pixels only (issue 17.2)."""

import numpy as np
import pytest
import rasterio

from falsecl.datamodules import SSLDataModule


class FakeTrainer:
    def __init__(self, root):
        self.default_root_dir = str(root)
        self.training = True
        self.is_global_zero = True


def _scene(path, nodata_cols, value=1000):
    """(3, 64, 64) uint16 GeoTIFF, nodata 0 in the first ``nodata_cols`` columns."""
    data = np.full((3, 64, 64), value, np.uint16)
    data[:, :, :nodata_cols] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "height": 64, "width": 64, "count": 3, "dtype": "uint16", "nodata": 0}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _dm(tmp_path, run, **kw):
    dm = SSLDataModule(roots=[str(tmp_path / "pool")], extra_roots=[], patch_size=32, crop_size=16, batch_size=2, **kw)
    dm.trainer = FakeTrainer(tmp_path / run)
    dm.setup("fit")
    return dm


def test_patches_below_min_valid_fraction_are_skipped_and_statistics_ignore_nodata(tmp_path):
    _scene(tmp_path / "pool" / "half_empty.tif", nodata_cols=36)  # left patches: 0 % valid; right: 87.5 %
    _scene(tmp_path / "pool" / "full.tif", nodata_cols=0)
    dm = _dm(tmp_path, "run")
    assert len(dm.dataset) == 4  # the 4 patches of full.tif; half_empty.tif's 4 patches are all below 0.9
    assert dm.mean == pytest.approx([1000.0] * 3) and dm.std == pytest.approx([1e-6] * 3, abs=1e-3)
    listing = (tmp_path / "run" / "pretrain_images.txt").read_text()
    assert "4 patch(es) skipped: valid fraction below 0.9" in listing
    lenient = _dm(tmp_path, "run2", min_valid_fraction=0.5)
    assert len(lenient.dataset) == 6 and lenient.mean == pytest.approx([1000.0] * 3)
    # Nodata pixels of a kept patch reach the views as the band mean, never as the stored 0.
    partial = next(i for i in range(len(lenient.dataset)) if not bool(lenient.dataset[i]["valid"].all()))
    item = lenient.dataset[partial]
    assert float(item["image"].min()) == 0.0
    filled = lenient.fill_invalid(item["image"][None], item["valid"][None])
    assert float(filled.min()) == pytest.approx(1000.0)
