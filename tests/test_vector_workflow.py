"""The practitioner's path at tiny size: sparse polygons (WGS 84) over UTM scenes -> fine-tune -> polygons out."""

import importlib.util
import json
from pathlib import Path

import pyogrio
import pytest
import rasterio
import shapely
from rasterio import features

from falsecl.cli import main

ROOT = Path(__file__).resolve().parents[1]
DUBAI = ROOT / "data" / "dubai_aerial"
CLASSES = "[building, land, road, vegetation, water]"


def _script():
    spec = importlib.util.spec_from_file_location(
        "make_sparse_polygons", ROOT / "docs/examples/make_sparse_polygons.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (DUBAI / "Tile 1").is_dir(), reason="vendored Dubai data not present")
def test_sparse_polygons_to_model_to_polygons(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "example"
    args = ["--out", str(out), "--train_tiles", "1", "--scenes_per_tile", "2", "--masks_per_tile", "2",
            "--test_tiles", "3", "--share", "0.03", "--square", "48"]  # fmt: skip
    made = _script().main(args)
    assert 0.03 <= made["labelled_share"] < 0.04 and made["polygons"] > 10
    assert pyogrio.read_info(out / "labels.gpkg")["crs"] == "EPSG:4326"
    scenes, labels = out / "scenes", out / "labels.gpkg"
    vector = ["--labels", str(labels), "--class_field", "class", "--classes", CLASSES]
    assert main(["data", "check", "vector", str(scenes), *vector, "--patch_size", "64"]) == 0
    assert "labelled share of the scenes: 3." in capsys.readouterr().out
    runs = tmp_path / "runs"
    finetune = [
        "finetune", "--config", "configs/finetune/smoke.yaml", "--runs_dir", str(runs), "--name", "vec",
        "--data.dataset", "vector", "--data.root", str(scenes), "--data.labels", str(labels),
        "--data.class_field", "class", "--data.classes", CLASSES, "--data.val_block_size", "128",
        "--data.label_fraction", "1.0",
    ]  # fmt: skip
    assert main(finetune) == 0
    run = runs / "vec"
    assert "block_r" in (run / "val_tiles.txt").read_text()  # the spatial block carve is recorded
    common = ["--checkpoint", str(run), "--window", "128", "--device", "cpu", "--progress", "false"]
    evaluate = ["evaluate", *common, "--dataset", "dubai", "--root", str(DUBAI), "--split", "test"]
    assert main([*evaluate, "--max_images", "1", "--output_dir", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["mIoU"] >= 0
    test_scene = sorted((out / "test_scenes").glob("*.tif"))[0]
    classes, polygons = tmp_path / "classes.tif", tmp_path / "polygons.gpkg"
    predict = ["predict", *common, "--input", str(test_scene), "--output", str(classes), "--vector", str(polygons)]
    assert main([*predict, "--min_area", "4"]) == 0
    meta = pyogrio.read_info(polygons)
    assert "32640" in meta["crs"] and meta["features"] > 0
    assert list(meta["fields"]) == ["class_id", "class_name", "pixels", "area_m2", "confidence"]
    _, _, wkb, fields = pyogrio.raw.read(polygons)
    with rasterio.open(classes) as src:
        class_map, transform = src.read(1), src.transform
    burnt = features.rasterize(zip(shapely.from_wkb(wkb), fields[0], strict=True), out_shape=class_map.shape,
                               transform=transform, fill=255, dtype="uint8")  # fmt: skip
    # Regions under 16 px (4 m2 at 0.5 m) were merged away; the rest of the map comes back unchanged.
    assert (burnt == class_map).mean() > 0.95 and fields[2].min() >= 16
    assert not list(tmp_path.glob("*.tmp.tif"))  # the scratch confidence raster is gone
