"""What ``predict`` writes for real-world rasters: nodata, alpha, masks, georeferencing, GIS styling (issue 17)."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.rpc import RPC
from rasterio.transform import from_origin
from torch import nn

from falsecl.inference import SlidingWindowPredictor
from falsecl.inference.raster import predict_raster
from tests.data.gis import gdal_tool

MEAN16, STD16 = [1000.0, 1100.0, 1200.0], [300.0, 300.0, 300.0]
NAMES = ["building", "road", "water"]
COLOURS = [[200, 10, 10], [90, 90, 90], [0, 0, 255]]


def context_model(bands: int = 3, classes: int = 3) -> nn.Module:
    """Two 5x5 convolutions: a pixel's class depends on its neighbours (as in any real segmentation model)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(bands, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, classes, 5, padding=2))


def write(path: Path, data: np.ndarray, **profile: Any) -> Path:
    kw: dict[str, Any] = {"crs": CRS.from_epsg(32640), "transform": from_origin(500000, 2800000, 0.5, 0.5)}
    kw.update(profile)
    with rasterio.open(
        path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0], dtype=data.dtype,
        **kw,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


def scene16(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A uint16 scene (3, 64, 64) with a nodata border and hole, and its validity (64, 64)."""
    rng = np.random.default_rng(seed)
    data = rng.normal(1100, 300, size=(3, 64, 64)).clip(1, 4000).astype(np.uint16)
    valid = np.ones((64, 64), dtype=bool)
    valid[:, :12] = False
    valid[30:40, 30:40] = False
    return data, valid


def read(path: Path) -> tuple[np.ndarray, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read(), ds.profile


def test_valid_pixels_do_not_depend_on_what_is_stored_under_nodata(tmp_path: Path) -> None:
    data, valid = scene16()
    classes = {}
    for nodata in (65535, 0):
        stored = data.copy()
        stored[:, ~valid] = nodata
        src = write(tmp_path / f"nd{nodata}.tif", stored, nodata=nodata)
        pred = SlidingWindowPredictor(context_model(), window=32, overlap=0.25, mean=MEAN16, std=STD16)
        out = tmp_path / f"nd{nodata}_classes.tif"
        summary = predict_raster(pred, src, out, probabilities_path=tmp_path / f"nd{nodata}_p.tif", progress=False)
        classes[nodata] = read(out)[0][0]
        assert summary["nodata_pixels"] == int((~valid).sum())
        assert (classes[nodata][~valid] == 255).all()
    changed = (classes[65535] != classes[0])[valid].mean()
    assert changed == 0, f"{100 * changed:.1f} % of the valid pixels changed class with the nodata value"
    # the same as a scene whose invalid pixels hold the band mean and are masked afterwards
    filled = data.astype(np.float32)
    filled[:, ~valid] = np.array(MEAN16, dtype=np.float32)[:, None]
    pred = SlidingWindowPredictor(context_model(), window=32, overlap=0.25, mean=MEAN16, std=STD16)
    reference = pred.predict_tensor(torch.from_numpy(filled)).argmax(0).numpy()
    np.testing.assert_array_equal(classes[0][valid], reference[valid])


def test_probabilities_declare_nodata_hold_none_under_it_and_name_bands_by_class(tmp_path: Path) -> None:
    data, valid = scene16(1)
    data[:, ~valid] = 0
    src = write(tmp_path / "s.tif", data, nodata=0)
    pred = SlidingWindowPredictor(context_model(), window=32, mean=MEAN16, std=STD16)
    for dtype in ("uint8", "float32"):
        out = tmp_path / f"p_{dtype}.tif"
        predict_raster(
            pred, src, tmp_path / f"c_{dtype}.tif", probabilities_path=out, probability_dtype=dtype,  # type: ignore[arg-type]
            class_names=NAMES, progress=False,
        )  # fmt: skip
        with rasterio.open(out) as ds:
            probs, nodata = ds.read(), ds.nodata
            assert ds.descriptions == tuple(NAMES)
            assert ColorInterp.red not in ds.colorinterp and ds.photometric != "RGB"
            assert ds.scales == ((0.01,) * 3 if dtype == "uint8" else (1.0,) * 3)
        assert nodata is not None
        under = probs[:, ~valid]
        assert (np.isnan(under) if np.isnan(nodata) else under == nodata).all()
        total = probs[:, valid].astype(np.float64).sum(0) * (0.01 if dtype == "uint8" else 1.0)
        np.testing.assert_allclose(total, 1.0, atol=0.02 if dtype == "uint8" else 1e-5)


def test_alpha_is_the_validity_mask_never_a_band(tmp_path: Path) -> None:
    data, valid = scene16(2)
    alpha = np.where(valid, 255, 0).astype(np.uint16)
    rgba = write(tmp_path / "rgba.tif", np.concatenate([data, alpha[None]]), photometric="RGB", alpha="YES")
    with rasterio.open(rgba) as ds:
        assert ds.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha)
    pred = SlidingWindowPredictor(context_model(), window=32, mean=MEAN16, std=STD16)
    summary = predict_raster(pred, rgba, tmp_path / "rgba_classes.tif", progress=False)
    assert summary["bands"] == 3 and summary["nodata_pixels"] == int((~valid).sum())
    rgb = data.copy()
    rgb[:, ~valid] = 0
    predict_raster(pred, write(tmp_path / "rgb.tif", rgb, nodata=0), tmp_path / "rgb_classes.tif", progress=False)
    np.testing.assert_array_equal(read(tmp_path / "rgba_classes.tif")[0], read(tmp_path / "rgb_classes.tif")[0])
    # a 4-band model is not fed the alpha band as a fourth band
    pred4 = SlidingWindowPredictor(context_model(4), window=32, mean=[*MEAN16, 900.0], std=[*STD16, 300.0])
    with pytest.raises(ValueError, match=r"3 band\(s\) and an alpha band.*trained on 4"):
        predict_raster(pred4, rgba, tmp_path / "x.tif", progress=False)
    # a PNG with transparency: alpha -> nodata as well
    png = np.zeros((40, 40, 4), dtype=np.uint8)
    png[..., :3] = np.random.default_rng(0).integers(0, 255, size=(40, 40, 3))
    png[..., 3] = 255
    png[:10, :, 3] = 0
    Image.fromarray(png, "RGBA").save(tmp_path / "t.png")
    pred8 = SlidingWindowPredictor(context_model(), window=32, mean=[120.0] * 3, std=[60.0] * 3)
    summary = predict_raster(pred8, tmp_path / "t.png", tmp_path / "t_classes.tif", progress=False)
    assert summary["nodata_pixels"] == 400 and (read(tmp_path / "t_classes.tif")[0][0, :10] == 255).all()


def test_an_ir_band_under_gdals_default_alpha_tag_stays_a_band(tmp_path: Path) -> None:
    from falsecl.datasets.io import read_info, read_valid, read_window
    from falsecl.datasets.validity import band_roles

    rng = np.random.default_rng(4)
    rgbir = rng.integers(1, 255, size=(4, 40, 40), dtype=np.uint8)
    path = write(tmp_path / "rgbir.tif", rgbir)  # rasterio/GDAL defaults tag a 4-band uint8 file RGBA
    with rasterio.open(path) as ds:
        assert ds.colorinterp[3] == ColorInterp.alpha
        assert band_roles(ds).image == [1, 2, 3, 4] and band_roles(ds).mistagged == 4
    assert read_info(path).bands == 4 and read_valid(path).all()
    pred4 = SlidingWindowPredictor(context_model(4), window=32, mean=[120.0] * 4, std=[60.0] * 4)
    with pytest.warns(UserWarning, match="band 4 is tagged alpha but holds image values"):
        summary = predict_raster(pred4, path, tmp_path / "c.tif", progress=False)
    assert summary["bands"] == 4 and summary["nodata_pixels"] == 0
    # a real RGBA file: three image bands for the datasets too, and the alpha as their validity
    rgba = rgbir.copy()
    rgba[3] = 255
    rgba[3, :8] = 0
    path = write(tmp_path / "rgba.tif", rgba)
    assert read_info(path).bands == 3 and read_window(path).shape == (3, 40, 40)
    np.testing.assert_array_equal(read_valid(path, 4, 0, 10, 40), rgba[3, 4:14] > 0)


def test_internal_and_external_gdal_masks_are_validity(tmp_path: Path) -> None:
    data, valid = scene16(3)
    for kind in ("internal", "external"):
        src = tmp_path / f"{kind}.tif"
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=kind == "internal"):
            write(src, data)
            with rasterio.open(src, "r+") as ds:
                ds.write_mask(np.where(valid, 255, 0).astype(np.uint8))
        assert (tmp_path / f"{kind}.tif.msk").exists() == (kind == "external")
        pred = SlidingWindowPredictor(context_model(), window=32, mean=MEAN16, std=STD16)
        summary = predict_raster(pred, src, tmp_path / f"{kind}_classes.tif", progress=False)
        assert summary["nodata_pixels"] == int((~valid).sum())
        classes = read(tmp_path / f"{kind}_classes.tif")[0][0]
        assert (classes[~valid] == 255).all()
        # valid pixels are classified as if the masked ones held the band mean
        filled = data.astype(np.float32)
        filled[:, ~valid] = np.array(MEAN16, dtype=np.float32)[:, None]
        reference = pred.predict_tensor(torch.from_numpy(filled)).argmax(0).numpy()
        np.testing.assert_array_equal(classes[valid], reference[valid])


def identity() -> nn.Module:
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
    return conv


def test_gcps_and_rpcs_are_copied_and_no_georeferencing_stays_none(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 255, size=(3, 40, 50), dtype=np.uint8)
    gcps = [
        GroundControlPoint(0, 0, 55.1, 25.2, 0.0, id="a"),
        GroundControlPoint(0, 50, 55.2, 25.2, 0.0, id="b"),
        GroundControlPoint(40, 0, 55.1, 25.1, 0.0, id="c"),
    ]
    gcp_src = tmp_path / "gcp.tif"
    with rasterio.open(gcp_src, "w", driver="GTiff", height=40, width=50, count=3, dtype="uint8") as dst:
        dst.write(data)
        dst.gcps = (gcps, CRS.from_epsg(4326))
    rpcs = RPC(
        height_off=10.0, height_scale=100.0, lat_off=25.2, lat_scale=0.1, line_den_coeff=[1.0] + [0.0] * 19,
        line_num_coeff=[0.0, 0.0, -1.0] + [0.0] * 17, line_off=20.0, line_scale=20.0, long_off=55.2, long_scale=0.1,
        samp_den_coeff=[1.0] + [0.0] * 19, samp_num_coeff=[0.0, 1.0] + [0.0] * 18, samp_off=25.0, samp_scale=25.0,
    )  # fmt: skip
    rpc_src = tmp_path / "rpc.tif"
    with rasterio.open(rpc_src, "w", driver="GTiff", height=40, width=50, count=3, dtype="uint8", rpcs=rpcs) as dst:
        dst.write(data)
    Image.fromarray(data.transpose(1, 2, 0)).save(tmp_path / "plain.jpg", quality=95)
    pred = SlidingWindowPredictor(identity(), window=32, mean=[100.0] * 3, std=[50.0] * 3)
    for name in ("gcp.tif", "rpc.tif", "plain.jpg"):
        out = tmp_path / f"{name}_classes.tif"
        predict_raster(pred, tmp_path / name, out, confidence_path=tmp_path / f"{name}_c.tif", progress=False)
    with rasterio.open(tmp_path / "gcp.tif_classes.tif") as out:
        got, crs = out.gcps
        assert crs == CRS.from_epsg(4326)
        assert [(g.row, g.col, g.x, g.y) for g in got] == [(g.row, g.col, g.x, g.y) for g in gcps]
    with rasterio.open(tmp_path / "rpc.tif_classes.tif") as out:
        assert out.rpcs is not None and out.crs is None
        written = out.rpcs.to_dict()
        for key, value in rpcs.to_dict().items():
            if not key.startswith("err_"):  # GDAL fills the optional error terms
                assert written[key] == pytest.approx(value), key
    for name in ("plain.jpg_classes.tif", "plain.jpg_c.tif"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with rasterio.open(tmp_path / name) as out:
                assert out.crs is None and not out.gcps[0]
                out.transform  # noqa: B018  GDAL reports no geotransform: rasterio warns
        assert any(issubclass(w.category, NotGeoreferencedWarning) for w in caught), name


def test_colour_table_and_qgis_style_hold_only_the_classes(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 120, size=(3, 40, 50), dtype=np.uint8)
    src = write(tmp_path / "s.tif", data)
    pred = SlidingWindowPredictor(identity(), window=32, mean=[60.0] * 3, std=[30.0] * 3)
    predict_raster(pred, src, tmp_path / "m.tif", class_names=NAMES, palette=COLOURS, progress=False)
    with rasterio.open(tmp_path / "m.tif") as out:
        cmap, nodata = out.colormap(1), out.nodata
    # a TIFF colour map has 2^8 RGB slots (GDAL pads the classes' entries with black); nodata is declared
    assert [list(cmap[i]) for i in range(3)] == [[*c, 255] for c in COLOURS] and nodata == 255
    # QGIS's style sidecar (loaded by QGIS as the layer's default style): one legend entry per class
    style = ET.parse(tmp_path / "m.qml").getroot()
    entries = [(e.get("value"), e.get("label"), e.get("color")) for e in style.iter("paletteEntry")]
    assert entries == [("0", "building", "#c80a0a"), ("1", "road", "#5a5a5a"), ("2", "water", "#0000ff")]


QGIS_PYTHON = "/usr/bin/python3"
QGIS_SCRIPT = """
import json, sys
from qgis.core import QgsApplication, QgsRasterLayer, QgsMapSettings, QgsMapRendererSequentialJob
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor
app = QgsApplication([], False)
app.initQgis()
layer = QgsRasterLayer(sys.argv[1], "map", "gdal")
renderer = layer.renderer()
settings = QgsMapSettings()
settings.setLayers([layer])
settings.setExtent(layer.extent())
settings.setOutputSize(QSize(layer.width(), layer.height()))
job = QgsMapRendererSequentialJob(settings)
job.start()
job.waitForFinished()
image = job.renderedImage()
column = [QColor(image.pixel(image.width() // 2, y)).name() for y in range(image.height())]
legend = [[c.value, c.label] for c in renderer.classes()] if renderer.type() == "paletted" else None
print(json.dumps({"legend": legend, "column": column}))
"""


def qgis_available() -> bool:
    if not Path(QGIS_PYTHON).exists():
        return False
    probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not qgis_available(), reason="QGIS (python3-qgis) not installed: checked with gdalinfo only")
def test_qgis_shows_the_class_map_the_right_way_up_with_one_legend_entry_per_class(tmp_path: Path) -> None:
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    image[:20] = (200, 0, 0)  # top third: class 0 (red band largest)
    image[20:] = (0, 0, 200)  # the rest: class 2
    Image.fromarray(image).save(tmp_path / "plain.jpg", quality=100)  # no georeferencing, as in `make demo`
    pred = SlidingWindowPredictor(identity(), window=32, mean=[100.0] * 3, std=[50.0] * 3)
    colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    predict_raster(pred, tmp_path / "plain.jpg", tmp_path / "m.tif", class_names=NAMES, palette=colours, progress=False)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run(
        [QGIS_PYTHON, "-c", QGIS_SCRIPT, str(tmp_path / "m.tif")], capture_output=True, text=True, env=env, timeout=120
    )
    shown = json.loads(run.stdout.strip().splitlines()[-1])
    assert shown["legend"] == [[0.0, "building"], [1.0, "road"], [2.0, "water"]]
    column = shown["column"]
    assert len(column) == 60
    assert set(column[:20]) == {"#ff0000"} and set(column[20:]) == {"#0000ff"}, column


def test_gdalinfo_reads_names_nodata_and_no_fake_georeferencing(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(tmp_path / "plain.png")
    pred = SlidingWindowPredictor(identity(), window=32, mean=[100.0] * 3, std=[50.0] * 3)
    predict_raster(pred, tmp_path / "plain.png", tmp_path / "m.tif", class_names=NAMES, palette=COLOURS,
                   probabilities_path=tmp_path / "p.tif", progress=False)  # fmt: skip
    gdalinfo = gdal_tool("gdalinfo")
    info = subprocess.run([gdalinfo, str(tmp_path / "m.tif")], capture_output=True, text=True, check=True).stdout
    assert "Categories:" in info and "1: road" in info and "NoData Value=255" in info
    assert "Origin =" not in info and "Pixel Size" not in info and "Coordinate System is:" not in info
    info = subprocess.run([gdalinfo, str(tmp_path / "p.tif")], capture_output=True, text=True, check=True).stdout
    assert "Description = water" in info and "NoData Value=255" in info and "ColorInterp=Red" not in info
