"""Single-strip compressed GeoTIFFs in the pretraining pool are reported once with the fix (issue 17.7)."""

import logging

import numpy as np
import rasterio

from falsecl.datasets.pretrain import PretrainImagery, PretrainSource
from falsecl.datasets.unlabeled import UnlabeledImagery


def _tif(path, **layout):
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "height": 512, "width": 512, "count": 4, "dtype": "uint8", **layout}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((4, 512, 512), np.uint8))


def test_single_strip_compressed_geotiff_warns_once_with_the_fix(tmp_path, caplog):
    pool = tmp_path / "pool"
    _tif(pool / "strip.tif", compress="deflate", blockysize=512)  # one 1 MiB strip
    _tif(pool / "tiled.tif", compress="deflate", tiled=True, blockxsize=256, blockysize=256)
    _tif(pool / "plain.tif", blockysize=512)  # uncompressed: GDAL reads strips partially
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        PretrainImagery([PretrainSource("folder0-pool", pool, UnlabeledImagery(pool, 256))])
    hits = [r.getMessage() for r in caplog.records if "gdal_translate" in r.getMessage()]
    assert len(hits) == 1 and "strip.tif" in hits[0] and "single deflate-compressed strip" in hits[0]
    assert "-co TILED=YES" in hits[0]
