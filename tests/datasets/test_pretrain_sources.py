"""Pretraining sources: held-out ISPRS tiles by name, labelled training splits as sources, majority class."""

import numpy as np
import pytest

from falsecl.datasets import SEGMENTATION_DATASETS, PotsdamTiles, UnlabeledImagery
from falsecl.datasets.errors import DatasetError
from falsecl.datasets.heldout import held_out_tile
from falsecl.datasets.isprs import POTSDAM_TEST, POTSDAM_TRAIN, VAIHINGEN_TEST, VAIHINGEN_TRAIN
from falsecl.datasets.pretrain import PretrainImagery, PretrainSource, majority_class
from falsecl.datasets.unlabeled import find_images


def test_official_isprs_test_tiles_are_recognised_by_name():
    assert all(held_out_tile(f"top_potsdam_{t}_RGBIR.tif") for t in POTSDAM_TEST)
    assert not any(held_out_tile(f"top_potsdam_{t}_RGBIR.tif") for t in POTSDAM_TRAIN)
    assert all(held_out_tile(f"top_mosaic_09cm_area{n}.tif") for n in VAIHINGEN_TEST)
    assert not any(held_out_tile(f"top_mosaic_09cm_area{n}.tif") for n in VAIHINGEN_TRAIN)
    assert held_out_tile("top_potsdam_2_13_RGBIR_3_4.tif") == "potsdam 2_13"  # a patch of a test tile
    assert held_out_tile("top_mosaic_09cm_area2_0_1.tif") == "vaihingen area 2"
    assert held_out_tile("top_mosaic_09cm_area20.tif") == "vaihingen area 20"
    assert held_out_tile("top_mosaic_09cm_area21.tif") is None  # area 2 prefix, but a training area
    assert held_out_tile("top_potsdam_2_1_RGBIR.tif") is None


def test_folder_walk_skips_isprs_test_tiles_wherever_they_sit(tmp_path, fakes):
    root = fakes.make_potsdam_tiles(tmp_path / "potsdam", tiles=("2_10", "2_13", "7_13"), size=32)
    tile = np.zeros((3, 32, 32), np.uint8)
    fakes.write_geotiff(tmp_path / "vai" / "top" / "top_mosaic_09cm_area1.tif", tile)
    fakes.write_geotiff(tmp_path / "vai" / "top" / "top_mosaic_09cm_area4.tif", tile)
    fakes.write_geotiff(tmp_path / "vai" / "gts_for_participants" / "top_mosaic_09cm_area1.tif", tile)
    names = [p.name for p in find_images(root / "4_Ortho_RGBIR")]
    assert names == ["top_potsdam_2_10_RGBIR.tif"]
    assert [p.name for p in find_images(tmp_path / "vai")] == ["top_mosaic_09cm_area1.tif"]
    assert len(find_images(root / "4_Ortho_RGBIR", include_held_out=True)) == 3
    assert len(UnlabeledImagery(root, 32).files) == 1  # the labels folder is never imagery


def test_labelled_training_split_is_a_source_with_majority_and_index(tmp_path, fakes):
    tiles = ("2_10", "2_11", "3_10", "2_13")
    root = fakes.make_potsdam_tiles(tmp_path / "p", tiles=tiles, size=64)
    # The fake root has 3 of the 24 training tiles; list them explicitly as the training split.
    labelled = PotsdamTiles(str(root), split="train", patch_size=32, tiles=list(tiles[:3]))
    extra = tmp_path / "extra"
    fakes.write_geotiff(extra / "e.tif", np.ones((4, 32, 32), np.uint8))
    pool = PretrainImagery(
        [
            PretrainSource("potsdam-train", root, labelled),
            PretrainSource("folder0-extra", extra, UnlabeledImagery(extra, 32)),
        ]
    )
    assert len(pool) == 3 * 4 + 1 and pool.in_channels == 4
    assert len(set(pool.patch_ids)) == len(pool)
    for i in (0, 5, 12):
        sample = pool[i]
        assert int(sample["index"]) == i and sample["index"].dtype == sample["majority"].dtype
        want = majority_class(labelled.read_mask(i), 6) if i < 12 else -1
        assert int(sample["majority"]) == want
    assert int(pool[0]["majority"]) >= 0
    out = tmp_path / "run" / "pretrain_images.txt"
    pool.write_image_list(out)
    lines = [x for x in out.read_text().splitlines() if not x.startswith("#")]
    assert lines == [f"potsdam-train:4_Ortho_RGBIR/top_potsdam_{t}_RGBIR.tif" for t in tiles[:3]] + [
        "folder0-extra:e.tif"
    ]


def test_majority_class_against_counting_loop():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 4, (16, 16))
    mask[:4] = 255
    counts = [int((mask == c).sum()) for c in range(4)]
    assert majority_class(mask, 4) == counts.index(max(counts))
    assert majority_class(np.full((4, 4), 255), 4) == -1
    assert majority_class(np.array([[1, 0]]), 2) == 0  # tie: lower class


def test_sources_with_other_bands_are_refused(tmp_path, fakes):
    a, b = tmp_path / "a", tmp_path / "b"
    fakes.write_geotiff(a / "x.tif", np.ones((4, 32, 32), np.uint8))
    fakes.write_geotiff(b / "y.tif", np.ones((3, 32, 32), np.uint8))
    with pytest.raises(DatasetError, match="band"):
        PretrainImagery(
            [PretrainSource("a", a, UnlabeledImagery(a, 32)), PretrainSource("b", b, UnlabeledImagery(b, 32))]
        )


def test_every_family_has_a_training_split():
    assert all("train" in cls.splits or cls.name == "folder" for cls in SEGMENTATION_DATASETS.values())


def test_deepglobe_without_labelled_val_carves_validation_from_train(tmp_path, fakes):
    from falsecl.datasets import DeepGlobeLandCover

    root = fakes.make_deepglobe(tmp_path / "dg", ids=[str(100 + i) for i in range(8)], size=32)
    (root / "valid").mkdir()
    fakes.write_jpg(root / "valid" / "900_sat.jpg", fakes.rgb_image(32, 32, 0))  # official valid/: no masks
    val = DeepGlobeLandCover(root, "val", patch_size=None)
    train = DeepGlobeLandCover(root, "train", patch_size=None)
    assert len(val.files) == 1 and len(train.files) == 7 and val.val_tiles == [val.files[0].tile]
    assert not {f.image for f in val.files} & {f.image for f in train.files}
    labelled_val = fakes.make_deepglobe(tmp_path / "dg2", ids=["1", "2"], size=32)
    fakes.make_deepglobe(labelled_val, split="valid", ids=["9"], size=32)
    assert len(DeepGlobeLandCover(labelled_val, "train", patch_size=None).files) == 2  # own valid/: no carve


def test_majority_reads_each_mask_once(tmp_path, fakes):
    root = fakes.make_potsdam_tiles(tmp_path / "p", tiles=("2_10",), size=64)
    labelled = PotsdamTiles(str(root), split="train", patch_size=32, tiles=["2_10"])
    calls = []
    read = labelled.read_mask
    labelled.read_mask = lambda j: calls.append(j) or read(j)
    pool = PretrainImagery([PretrainSource("potsdam-train", root, labelled)])
    first = [int(pool[i]["majority"]) for i in range(len(pool))]
    assert [int(pool[i]["majority"]) for i in range(len(pool))] == first and calls == [0, 1, 2, 3]


def test_mmseg_crops_of_test_tiles_are_recognised_and_left_out(tmp_path, fakes):
    from falsecl.datasets import ISPRSMMSeg
    from falsecl.datasets.heldout import is_vaihingen
    from falsecl.datasets.pretrain import without_held_out

    assert held_out_tile("2_13_0_0_512_512.png") == "potsdam 2_13" and held_out_tile("2_10_0_0_512_512.png") is None
    assert held_out_tile("area2_0_512_512_1024.png") == "vaihingen area 2"
    assert held_out_tile("area1_0_0_512_512.png") is None and is_vaihingen("area1_0_0_512_512.png")
    root = fakes.make_mmseg(tmp_path / "flat", splits=None, size=32)
    fakes.write_png(root / "img_dir" / "2_13_0_0_32_32.png", fakes.rgb_image(32, 32, 5))
    fakes.write_png(root / "ann_dir" / "2_13_0_0_32_32.png", np.ones((32, 32), np.uint8))
    flat = ISPRSMMSeg(root, "all", patch_size=16)
    kept, dropped = without_held_out(flat)
    assert dropped == [(root / "img_dir" / "2_13_0_0_32_32.png", "official ISPRS test tile potsdam 2_13")]
    assert len(kept.files) == 2 and len(kept) == 8 and len(flat) == 12
    assert {f.tile for f in kept.files} == {"2_10", "3_11"} and kept[7]["image"].shape == (3, 16, 16)
