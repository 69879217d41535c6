"""The vector-label dataset: polygons in WGS 84 over UTM scenes, rasterised per window, block-carved validation."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely

from falsecl.datasets.errors import DatasetError
from falsecl.datasets.vector import VectorLabels


def _load():
    name = "falsecl_test_fake_vector"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "data" / "fake_vector.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


fv = _load()
# Boxes in scene pixels (col0, row0, col1, row1); no edge through a pixel centre.
BOXES = [(2, 3, 20, 17.25), (10, 10, 40, 30), (60, 40, 90, 60)]
VALUES = ["water", "road", "building"]


@pytest.fixture
def scene(tmp_path):
    fv.write_scene(tmp_path / "scenes" / "s1.tif", 64, 96)
    labels = fv.write_labels(tmp_path / "labels.gpkg", [fv.pixel_box(*b) for b in BOXES], VALUES)
    return tmp_path / "scenes", labels


def test_masks_match_the_polygons_reprojected_from_another_crs(scene):
    scenes, labels = scene
    ds = VectorLabels(scenes, labels, "class", split="all", patch_size=32)
    assert ds.labels.crs != ds.infos[0].crs  # labels in WGS 84, scene in UTM 40N
    assert ds.classes == ("building", "road", "water")  # sorted distinct values
    whole = ds.with_patch_size(None)
    # Overlap: "road" (fid 2) comes after "water" (fid 1) in the file and wins where they overlap.
    expected = fv.expected_mask(64, 96, BOXES, [2, 1, 0])
    np.testing.assert_array_equal(whole.read_mask(0), expected)
    for i in range(len(ds)):  # patches agree with the whole-scene mask
        p = ds.patches[i]
        np.testing.assert_array_equal(ds.read_mask(i), expected[p.row : p.row + 32, p.col : p.col + 32])
    sample = ds[0]
    assert sample["image"].shape == (3, 32, 32) and sample["mask"].shape == (32, 32)


def test_classes_fix_the_order_and_refuse_unknown_values(scene, tmp_path):
    scenes, labels = scene
    ds = VectorLabels(scenes, labels, "class", classes=["water", "road", "building"], split="all")
    assert ds.classes == ("water", "road", "building")
    np.testing.assert_array_equal(ds.with_patch_size(None).read_mask(0), fv.expected_mask(64, 96, BOXES, [0, 1, 2]))
    palette = tmp_path / "palette.yaml"
    palette.write_text("road: [1, 2, 3]\nwater: [4, 5, 6]\nbuilding: [7, 8, 9]\n")
    ds = VectorLabels(scenes, labels, "class", classes=str(palette), split="all")
    assert ds.classes == ("road", "water", "building") and ds.colours[0] == (1, 2, 3)
    with pytest.raises(DatasetError, match=r"fid 3 \('building'\).*--classes"):
        VectorLabels(scenes, labels, "class", classes=["water", "road"], split="all")


def test_patches_only_where_labels_are_and_masks_are_rasterised_per_window(scene, monkeypatch):
    from rasterio import features

    scenes, labels = scene
    shapes_seen = []
    real = features.rasterize

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        shapes_seen.append(out.shape)
        return out

    monkeypatch.setattr(features, "rasterize", spy)
    ds = VectorLabels(scenes, labels, "class", split="all", patch_size=32)
    # Windows (row, col) holding a labelled pixel centre: the three boxes touch 4 of the 6 windows.
    assert sorted((p.row, p.col) for p in ds.patches) == [(0, 0), (0, 32), (32, 32), (32, 64)]
    assert all((ds.read_mask(i) != 255).any() for i in range(len(ds)))
    assert shapes_seen and max(h * w for h, w in shapes_seen) <= 32 * 32  # never a whole-scene mask


def test_validation_is_a_seeded_block_carve_disjoint_from_training(scene):
    scenes, labels = scene
    kw = dict(patch_size=16, val_block_size=32, val_fraction=0.3, val_seed=3)
    train = VectorLabels(scenes, labels, "class", split="train", **kw)
    val = VectorLabels(scenes, labels, "class", split="val", **kw)
    again = VectorLabels(scenes, labels, "class", split="val", **kw)
    assert train.val_tiles == val.val_tiles == again.val_tiles and len(val.val_tiles) == 1
    assert val.patch_ids == again.patch_ids and len(val) > 0 and len(train) > 0
    assert "block carve" in val.split_description and val.val_tiles[0] in val.split_description

    def covered(ds):
        out = np.zeros((64, 96), dtype=bool)
        for p in ds.patches:
            out[p.row : p.row + p.height, p.col : p.col + p.width] = True
        return out

    assert not (covered(train) & covered(val)).any()  # no pixel of a val patch is trained on
    # Whole-scene reads hide the other split's labels: together they are the full mask, without overlap.
    t, v = train.with_patch_size(None).read_mask(0), val.with_patch_size(None).read_mask(0)
    full = VectorLabels(scenes, labels, "class", split="all").with_patch_size(None).read_mask(0)
    assert not ((t != 255) & (v != 255)).any()
    np.testing.assert_array_equal(np.where(t != 255, t, v), full)
    held = val.val_tiles[0]  # "s1.tif/block_r<i>_c<j>": its pixels hold val labels only
    r, c = (int(x[1:]) for x in held.split("/")[-1].split("_")[1:])
    assert (t[r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32] == 255).all()


def test_label_fraction_applies_to_labelled_patches(scene, tmp_path):
    from falsecl.datasets.subsets import label_fraction_subset

    scenes, labels = scene
    ds = VectorLabels(scenes, labels, "class", split="all", patch_size=16)
    chosen = label_fraction_subset(ds.patches, 0.5, seed=0)
    assert len(chosen) == round(0.5 * len(ds))  # of the labelled patches, not of the scene's 24 windows
    assert len(ds) < (64 // 16) * (96 // 16)


def test_invalid_geometry_is_named_and_make_valid_repairs_it(tmp_path):
    fv.write_scene(tmp_path / "s.tif", 64, 96)
    t = fv.scene_transform()
    bowtie = shapely.Polygon([t @ (2, 2), t @ (30, 30), t @ (30, 2), t @ (2, 30)])
    labels = fv.write_labels(tmp_path / "l.gpkg", [fv.pixel_box(40, 5, 60, 25), bowtie], ["a", "b"])
    with pytest.raises(DatasetError, match=r"fid 2 \(Self-intersection.*make_valid"):
        VectorLabels(tmp_path / "s.tif", labels, "class", split="all")
    ds = VectorLabels(tmp_path / "s.tif", labels, "class", split="all", make_valid=True)
    mask = ds.with_patch_size(None).read_mask(0)
    assert mask[16, 4] == mask[16, 28] == 1 and mask[4, 16] == mask[28, 16] == 255  # left and right triangles


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", r"empty one: fid 2"),
        ("field", r"no field 'kind'; fields: class"),
        ("outside", r"overlap none of the 1 scene"),
        ("label_crs", r"labels .* have no CRS"),
        ("scene_crs", r"scene .* has no CRS"),
        ("layers", r"2 layers .*--layer"),
    ],
)
def test_bad_input_gets_a_message_naming_the_feature_or_file(tmp_path, case, message):
    scene = fv.write_scene(tmp_path / "s.tif", 64, 96, crs=None if case == "scene_crs" else fv.SCENE_CRS)
    box = fv.pixel_box(4, 4, 20, 20)
    labels, field = tmp_path / "l.gpkg", "kind" if case == "field" else "class"
    if case == "empty":
        fv.write_labels(labels, [box, shapely.Polygon()], ["a", "b"])
    elif case == "outside":
        fv.write_labels(labels, [fv.pixel_box(5000, 5000, 5010, 5010)], ["a"])
    elif case == "label_crs":
        labels = fv.write_labels(tmp_path / "l.shp", [box], ["a"], crs=None)
    elif case == "layers":
        fv.write_labels(labels, [box], ["a"], layer="one")
        fv.write_labels(labels, [box], ["b"], layer="two", append=True)
    else:
        fv.write_labels(labels, [box], ["a"])
    with pytest.raises(DatasetError, match=message):
        VectorLabels(scene, labels, field, split="all")


def test_a_layer_is_chosen_by_name_and_integer_classes_sort_numerically(tmp_path):
    scene = fv.write_scene(tmp_path / "s.tif", 64, 96)
    labels = tmp_path / "l.gpkg"
    fv.write_labels(labels, [fv.pixel_box(4, 4, 20, 20)], ["a"], layer="one")
    fv.write_labels(
        labels, [fv.pixel_box(4, 4, 20, 20), fv.pixel_box(30, 4, 50, 20)], [10, 9], layer="two", append=True
    )
    ds = VectorLabels(scene, labels, "class", layer="two", split="all")
    assert ds.classes == ("9", "10")


def test_held_out_check_compares_blocks_not_scenes(scene):
    from falsecl.datasets.heldout import split_problems

    scenes, labels = scene
    kw = dict(patch_size=16, val_block_size=32, val_fraction=0.3, val_seed=3)
    train = VectorLabels(scenes, labels, "class", split="train", **kw)
    val = VectorLabels(scenes, labels, "class", split="val", **kw)
    assert train.files == val.files  # the same scene on both sides ...
    assert split_problems(train, val, None) == []  # ... but no shared block
    everything = VectorLabels(scenes, labels, "class", split="all", **kw)
    assert "share" in split_problems(train, everything, None)[0]


def test_a_vrt_mosaic_is_a_scene(scene, tmp_path):
    import rasterio.shutil

    scenes, labels = scene
    vrt = tmp_path / "mosaic.vrt"
    rasterio.shutil.copy(scenes / "s1.tif", vrt, driver="VRT")
    ds = VectorLabels(vrt, labels, "class", split="all", patch_size=32)
    assert [f.image for f in ds.files] == [vrt]
    np.testing.assert_array_equal(ds.with_patch_size(None).read_mask(0), fv.expected_mask(64, 96, BOXES, [2, 1, 0]))
    assert ds[0]["image"].shape == (3, 32, 32)


def test_subset_fingerprint_follows_the_labels_content_not_where_they_sit(scene, tmp_path):
    import shutil

    from falsecl.datamodules import SegmentationDataModule

    def fingerprint(scenes, labels):
        dm = SegmentationDataModule(dataset="vector", root=str(scenes), labels=str(labels), class_field="class",
                                    patch_size=16, val_block_size=32)
        return dm.source_fingerprint(dm.make_dataset("train", 16))

    scenes, labels = scene
    before = fingerprint(scenes, labels)
    moved = tmp_path / "moved"
    shutil.copytree(scenes, moved / "scenes")
    shutil.copy(labels, moved / "labels.gpkg")
    assert fingerprint(moved / "scenes", moved / "labels.gpkg") == before  # the data moved, nothing changed
    fv.write_labels(moved / "labels.gpkg", [fv.pixel_box(*b) for b in BOXES[:2]], VALUES[:2])
    assert fingerprint(moved / "scenes", moved / "labels.gpkg") != before  # edited polygons: a new subset
