import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin
from torch import nn

from falsecl.inference import SlidingWindowPredictor
from falsecl.inference.preview import save_preview
from falsecl.inference.raster import predict_raster
from tests.data.gis import gdal_tool

MEAN = [10.0, 20.0, 30.0]
STD = [2.0, 4.0, 5.0]
NAMES = ["building", "road & track", "water"]
COLOURS = [[200, 10, 10], [90, 90, 90], [0, 0, 255]]


def identity_model() -> nn.Module:
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
    return conv


def write_tif(path: Path, data: np.ndarray, nodata: float | None = None) -> None:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=data.dtype,
        crs=CRS.from_epsg(32640),
        transform=from_origin(0, 0, 1, 1),
        nodata=nodata,
        tiled=data.shape[1] >= 256,
        compress="deflate",
    ) as dst:
        dst.write(data)


def normalised(data: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(data).float() - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def test_colour_table_categories_nodata_and_confidence(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(1, 60, size=(3, 40, 50), dtype=np.uint8)
    data[:, :5, :7] = 0  # nodata in every band: no prediction
    data[0, 20, 20] = 0  # nodata value in one band only: still a valid pixel
    src = tmp_path / "scene.tif"
    write_tif(src, data, nodata=0)
    pred = SlidingWindowPredictor(identity_model(), window=16, overlap=0.25, mean=MEAN, std=STD)
    summary = predict_raster(
        pred,
        src,
        tmp_path / "classes.tif",
        confidence_path=tmp_path / "conf.tif",
        palette=COLOURS,
        class_names=NAMES,
        progress=False,
    )
    logits = normalised(data)
    expected = logits.argmax(0).numpy().astype(np.uint8)
    expected[:5, :7] = 255
    with rasterio.open(tmp_path / "classes.tif") as out:
        assert out.nodata == 255
        labels = out.read(1)
        cmap = out.colormap(1)
        assert [list(cmap[i][:3]) for i in range(3)] == COLOURS
    np.testing.assert_array_equal(labels, expected)
    assert summary["nodata_pixels"] == 35
    assert summary["class_counts"] == np.bincount(expected[expected < 3], minlength=3).tolist()
    with rasterio.open(tmp_path / "conf.tif") as conf:
        confidence = conf.read(1)
        assert conf.nodata == 255
    ref = (100 * logits.softmax(0).max(0).values).round().numpy().astype(np.uint8)
    valid = expected != 255
    np.testing.assert_array_equal(confidence[valid], ref[valid])
    assert confidence[valid].min() >= 0 and confidence[valid].max() <= 100
    assert (confidence[~valid] == 255).all()
    # category names: GDAL's PAM sidecar, read back as XML and by gdalinfo
    root = ET.parse(tmp_path / "classes.tif.aux.xml").getroot()
    assert [c.text for c in root.iter("Category")] == NAMES
    rows = [[f.text for f in row.iter("F")] for row in root.iter("Row")]
    assert rows[1] == ["1", "road & track", "90", "90", "90"]
    info = subprocess.run([gdal_tool("gdalinfo"), str(tmp_path / "classes.tif")], capture_output=True, text=True).stdout
    assert "Categories:" in info and "1: road & track" in info and "NoData Value=255" in info


def test_overviews_for_large_maps(tmp_path: Path) -> None:
    # A cheap stand-in model (1x1 conv, one large window) keeps a 2100 x 300 map fast.
    data = np.random.default_rng(1).integers(0, 60, size=(3, 300, 2100), dtype=np.uint8)
    src = tmp_path / "wide.tif"
    write_tif(src, data)
    pred = SlidingWindowPredictor(identity_model(), window=1024, overlap=0.0, mean=MEAN, std=STD, batch_size=4)
    predict_raster(pred, src, tmp_path / "c.tif", confidence_path=tmp_path / "p.tif", progress=False)
    with rasterio.open(tmp_path / "c.tif") as out:
        assert out.overviews(1) == [2, 4, 8]
        assert out.tags(ns="rio_overview").get("resampling") == "mode"
    with rasterio.open(tmp_path / "p.tif") as out:
        assert out.overviews(1)
    small = tmp_path / "small.tif"
    write_tif(small, data[:, :100, :100])
    predict_raster(pred, small, tmp_path / "s.tif", progress=False)
    with rasterio.open(tmp_path / "s.tif") as out:
        assert out.overviews(1) == []


def test_preview_panels(tmp_path: Path) -> None:
    labels = np.zeros((30, 60), dtype=np.uint8)
    labels[:, 30:] = 2
    labels[:3, :3] = 255
    image = np.random.default_rng(0).integers(0, 255, size=(3, 30, 60), dtype=np.uint8)
    out = save_preview(tmp_path / "p.png", image, labels, NAMES, [tuple(c) for c in COLOURS], counts=[900, 0, 900])
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape[1] > 2 * png.shape[0]
    # the class colours are drawn (class map and legend)
    assert (png == np.array(COLOURS[2], dtype=np.uint8)).all(-1).any()
    assert (png == np.array(COLOURS[0], dtype=np.uint8)).all(-1).any()
