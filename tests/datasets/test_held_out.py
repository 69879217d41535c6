"""Held-out data never enters pretraining, however the data is pointed at (issue 17.1, issue 21.1)."""

import os

import numpy as np
import pytest

from falsecl.datamodules import SSLDataModule
from falsecl.datasets import FolderDataset
from falsecl.datasets.errors import DatasetNotFoundError
from falsecl.datasets.unlabeled import UnlabeledImagery, find_images


class FakeTrainer:
    def __init__(self, root):
        self.default_root_dir = str(root)
        self.training = True
        self.is_global_zero = True


def _ssl(tmp_path, roots, **kw):
    dm = SSLDataModule(roots=[str(r) for r in roots], extra_roots=[], patch_size=16, crop_size=8, batch_size=2, **kw)
    dm.trainer = FakeTrainer(tmp_path / "run")
    dm.setup("fit")
    return dm


def _tiles(files):
    return sorted({p.parts[-3] for p in files})


def test_dubai_found_below_the_root_keeps_only_its_training_tiles(tmp_path, fakes):
    fakes.make_dubai(tmp_path / "data" / "dubai_aerial", size=(16, 16))
    dm = _ssl(tmp_path, [tmp_path / "data"])
    assert _tiles(dm.dataset.files) == ["Tile 1", "Tile 4", "Tile 5", "Tile 6", "Tile 7"]
    listing = (tmp_path / "run" / "pretrain_images.txt").read_text()
    assert "3 held-out image(s) left out" in listing
    assert "dubai test (Tile 3) x 1" in listing and "dubai val (Tile 2) x 1" in listing


def test_a_dubai_tile_folder_given_as_root_is_judged_by_its_dataset(tmp_path, fakes):
    dubai = fakes.make_dubai(tmp_path / "dubai_aerial", size=(16, 16))
    assert find_images(dubai / "Tile 3") == [] and find_images(dubai / "Tile 2" / "images") == []
    assert len(find_images(dubai / "Tile 4")) == 1
    single = dubai / "Tile 8" / "images" / "image_part_001.jpg"
    assert find_images(single) == []
    with pytest.raises(DatasetNotFoundError, match=r"held-out.*dubai test"):
        UnlabeledImagery(dubai / "Tile 3", 16)


def test_isprs_test_tiles_are_caught_under_any_name_or_folder(tmp_path, fakes):
    img = np.zeros((4, 16, 16), np.uint8)
    release = fakes.make_potsdam_tiles(tmp_path / "potsdam", tiles=("2_10", "2_13"), size=16)
    test_tile = release / "4_Ortho_RGBIR" / "top_potsdam_2_13_RGBIR.tif"
    assert find_images(test_tile) == []  # a single-file root
    pool = tmp_path / "pool"
    pool.mkdir()
    os.symlink(test_tile, pool / "scene_a.tif")  # another name: the resolved target is judged
    fakes.write_geotiff(pool / "keep.tif", img)
    for folder in ("testing", "Test-Set", "validation_set", "holdout", "held_out"):
        fakes.write_geotiff(pool / folder / "x.tif", img)
    fakes.write_geotiff(pool / "flat" / "top_potsdam_02_13_RGBIR.tif", img)  # zero-padded
    fakes.write_geotiff(pool / "flat" / "dsm_potsdam_02_13.tif", img[:1])
    fakes.write_geotiff(pool / "flat" / "dsm_potsdam_02_10.tif", img[:1])
    fakes.write_geotiff(pool / "5_Labels_all_noBoundary" / "top_potsdam_2_10_label_noBoundary.tif", img[:3])
    fakes.write_geotiff(pool / "loose" / "top_potsdam_2_11_label_noBoundary.tif", img[:3])
    names = sorted(str(p.relative_to(pool)) for p in find_images(pool))
    assert names == ["flat/dsm_potsdam_02_10.tif", "keep.tif"]


def test_potsdam_release_root_leaves_out_carved_and_test_tiles_in_every_product(tmp_path, fakes):
    from falsecl.datasets.isprs import POTSDAM_TEST, POTSDAM_TRAIN
    from falsecl.datasets.subsets import carve_tiles

    carved = carve_tiles(POTSDAM_TRAIN, 0.125, 0)
    kept_tile = next(t for t in POTSDAM_TRAIN if t not in carved)
    root = fakes.make_potsdam_tiles(tmp_path / "p", tiles=(kept_tile, carved[0], POTSDAM_TEST[0]), size=16)
    for t in (kept_tile, carved[0]):
        fakes.write_geotiff(root / "2_Ortho_RGB" / f"top_potsdam_{t}_RGB.tif", np.zeros((3, 16, 16), np.uint8))
    names = sorted(p.name for p in find_images(root / "2_Ortho_RGB")) + sorted(p.name for p in find_images(root))
    assert names == [f"top_potsdam_{kept_tile}_RGB.tif"] * 2 + [f"top_potsdam_{kept_tile}_RGBIR.tif"]


def _labelled_folder(root, fakes, n=18):
    (root).mkdir(parents=True)
    (root / "palette.yaml").write_text("field: [0, 255, 0]\nroad: [128, 128, 128]\n")
    colours = [(0, 255, 0), (128, 128, 128)]
    for split, count in (("train", n), ("test", 2)):
        for i in range(count):
            fakes.write_png(root / split / "images" / f"{split}{i:02d}.png", fakes.rgb_image(16, 16, i))
            fakes.write_png(
                root / split / "masks" / f"{split}{i:02d}.png",
                fakes.colour_mask(fakes.class_map(16, 16, 2, i), colours),
            )
    return root


def test_labelled_folder_as_pretraining_root_obeys_the_validation_carve(tmp_path, fakes):
    root = _labelled_folder(tmp_path / "labelled", fakes)
    finetune_train = FolderDataset(str(root), "train", patch_size=16)
    val = FolderDataset(str(root), "val", patch_size=16)
    assert len(finetune_train.files) == 16 and len(val.files) == 2
    dm = _ssl(tmp_path, [root])
    assert sorted(dm.dataset.files) == sorted(f.image for f in finetune_train.files)
    listing = (tmp_path / "run" / "pretrain_images.txt").read_text()
    assert "folder val (carved from train) x 2" in listing and "folder test x 2" in listing


def test_include_held_out_lifts_held_out_rules_not_label_rules(tmp_path, fakes):
    dubai = fakes.make_dubai(tmp_path / "d", size=(16, 16))
    files = find_images(tmp_path, include_held_out=True)
    assert len(files) == 8 and all("images" in p.parts for p in files)
    assert len(find_images(dubai, include_held_out=False)) == 5


def test_a_root_is_judged_by_its_name_only_when_that_is_a_split_name(tmp_path, fakes):
    img = np.zeros((3, 16, 16), np.uint8)
    for folder in ("Test-Set", "testing", "val_images", "test_scenes_2024", "contest"):
        fakes.write_geotiff(tmp_path / folder / "a.tif", img)
    kept = {folder: bool(find_images(tmp_path / folder)) for folder in ("Test-Set", "testing", "val_images")}
    assert kept == {"Test-Set": False, "testing": False, "val_images": False}
    assert find_images(tmp_path / "test_scenes_2024") and find_images(tmp_path / "contest")
