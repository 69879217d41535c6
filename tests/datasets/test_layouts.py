"""Every dataset layout on tiny fake files, plus the real ISPRS crops of the shared data folder (when present)."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from falsecl.datasets import (
    DATASETS,
    DeepGlobeLandCover,
    DubaiAerial,
    FolderDataset,
    ISPRSMMSeg,
    LoveDA,
    PotsdamPatches,
    PotsdamTiles,
    UnlabeledImagery,
    VaihingenPatches,
)

# The shared data folder sits beside the repository checkout (read-only, not vendored: ISPRS terms).
FORMAT_SAMPLES = next(
    (
        p
        for p in (
            Path(__file__).resolve().parents[2].parent / "shared/datasets/format_samples",
            Path("/work/shared/datasets/format_samples"),
        )
        if p.is_dir()
    ),
    Path("/work/shared/datasets/format_samples"),
)


def check_sample(sample, channels, size, num_classes):
    image, mask = sample["image"], sample["mask"]
    assert image.dtype.is_floating_point and image.shape == (channels, *size)
    assert mask.dtype == np.int64 or str(mask.dtype) == "torch.int64"
    assert mask.shape == size
    values = set(mask.unique().tolist())
    assert values <= set(range(num_classes)) | {255}


def test_dubai_splits_by_tile(tmp_path, fakes):
    root = fakes.make_dubai(tmp_path / "dubai")
    tiles = {s: {f.tile for f in DubaiAerial(root, s, patch_size=32).files} for s in ("train", "val", "test")}
    assert tiles == {
        "train": {"tile1", "tile4", "tile5", "tile6", "tile7"},
        "val": {"tile2"},
        "test": {"tile3", "tile8"},
    }
    ds = DubaiAerial(root, "train", patch_size=32)
    # 48 x 64 image, flush windows of 32: rows (0, 16), cols (0, 32) -> 4 per image, 5 images.
    assert len(ds) == 20 and ds.in_channels == 3 and ds.num_classes == 5
    check_sample(ds[0], 3, (32, 32), 5)


def test_dubai_colours_map_to_classes(tmp_path, fakes):
    root = fakes.make_dubai(tmp_path / "dubai", tiles=[2])
    ds = DubaiAerial(root, "val", patch_size=None)
    index = fakes.class_map(48, 64, 7, 201)
    expected = np.where(index >= 5, 255, index)  # grey "Unlabeled" and black -> ignore
    assert np.array_equal(ds[0]["mask"].numpy(), expected)


def test_potsdam_tiles_windowed_bands_and_padding(tmp_path, fakes):
    root = fakes.make_potsdam_tiles(tmp_path / "potsdam", tiles=("2_10", "2_13"), size=64)
    train = PotsdamTiles(root, "train", patch_size=32, tiles=["2_10"])
    assert len(train) == 4 and train.in_channels == 4 and train.infos[0].crs is not None
    with rasterio.open(root / "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif") as src:
        full = src.read()
    sample = train[3]  # window (32, 32)
    assert np.array_equal(sample["image"].numpy(), full[:, 32:, 32:].astype(np.float32))
    expected = fakes.class_map(64, 64, 6, 0)[32:, 32:]
    assert np.array_equal(sample["mask"].numpy(), expected)
    rgb = PotsdamTiles(root, "train", patch_size=32, bands="rgb", tiles=["2_10"])
    assert rgb[0]["image"].shape == (3, 32, 32)
    padded = PotsdamTiles(root, "train", patch_size=48, padding="pad", tiles=["2_10"])
    last = padded[len(padded) - 1]
    assert (last["mask"][16:, :] == 255).all() and (last["image"][:, 16:, :] == 0).all()
    whole = PotsdamTiles(root, "train", patch_size=None, tiles=["2_10"])
    assert len(whole) == 1 and whole[0]["image"].shape == (4, 64, 64)


def test_potsdam_official_split_lists():
    assert len(PotsdamTiles.split_tiles["train"]) == 24 and len(PotsdamTiles.split_tiles["test"]) == 14
    assert not set(PotsdamTiles.split_tiles["train"]) & set(PotsdamTiles.split_tiles["test"])


def test_isprs_patch_folders(tmp_path, fakes):
    root = fakes.make_isprs_patches(tmp_path / "p", "train")
    train, val = (PotsdamPatches(root, s, patch_size=None) for s in ("train", "val"))
    assert {f.tile for f in train.files} | {f.tile for f in val.files} == {"top_potsdam_2_10", "top_potsdam_3_11"}
    assert len(train) + len(val) == 3 and not {f.tile for f in train.files} & {f.tile for f in val.files}
    ds = train if len(train) == 2 else val  # tile 2_10: patches 0 and 1
    check_sample(ds[1], 4, (32, 32), 6)
    assert np.array_equal(ds[1]["mask"].numpy(), fakes.class_map(32, 32, 6, 1))
    v = fakes.make_isprs_patches(tmp_path / "v", "val", names=["area1_0"], bands=3)
    assert VaihingenPatches(v, "test", patch_size=16)[0]["image"].shape == (3, 16, 16)  # the official val folder


def test_isprs_mmseg_split_and_flat(tmp_path, fakes):
    root = fakes.make_mmseg(tmp_path / "m")
    ds = ISPRSMMSeg(root, "test", patch_size=32)  # mmseg's val folder holds the test tiles
    assert ds.files[0].tile == "2_10" and len(ds) == 8
    raw = fakes.class_map(64, 64, 7, 10)
    assert np.array_equal(
        ISPRSMMSeg(root, "test", patch_size=None)[0]["mask"].numpy(), np.where(raw == 0, 255, raw - 1)
    )
    flat = fakes.make_mmseg(tmp_path / "flat", splits=None)
    assert ISPRSMMSeg.default_split(flat) == "all" and len(ISPRSMMSeg(flat, "all", patch_size=None)) == 2


@pytest.mark.skipif(not FORMAT_SAMPLES.is_dir(), reason="real ISPRS crops not available")
@pytest.mark.parametrize("name", ["potsdam", "vaihingen"])
def test_real_mmseg_crops(name):
    root = FORMAT_SAMPLES / name
    ds = ISPRSMMSeg(root, "all", patch_size=256)
    assert len(ds) == 4
    ann = next((root / "ann_dir").glob("*.png"))
    raw = np.array(Image.open(ann))
    whole = ISPRSMMSeg(root, "all", patch_size=None)[0]
    assert whole["image"].shape == (3, 512, 512)
    assert np.array_equal(whole["mask"].numpy(), np.where(raw == 0, 255, raw.astype(np.int64) - 1))
    assert (whole["mask"] != 255).float().mean() > 0.5


def test_deepglobe_thresholds_noisy_colours(tmp_path, fakes):
    root = fakes.make_deepglobe(tmp_path / "dg")
    ds = DeepGlobeLandCover(root, "train", patch_size=None)
    index = fakes.class_map(64, 64, 7, 0)
    assert np.array_equal(ds[0]["mask"].numpy(), np.where(index == 6, 255, index))


def test_loveda(tmp_path, fakes):
    root = fakes.make_loveda(tmp_path / "lv")
    ds = LoveDA(root, "test", patch_size=32)  # the official Val folder
    assert len(ds.files) == 2 and len(ds) == 8 and ds.files[0].tile.startswith("urban/")
    raw = fakes.class_map(64, 64, 8, 3)
    assert np.array_equal(
        LoveDA(root, "test", patch_size=None)[0]["mask"].numpy(), np.where(raw == 0, 255, raw - 1)
    )
    assert len(LoveDA(root, "train", patch_size=None, scenes=["rural"]).files) == 1


def test_folder_with_palette(tmp_path, fakes):
    root = fakes.make_folder(tmp_path / "f")
    ds = FolderDataset(root, patch_size=None)
    assert ds.classes == ("field", "road") and ds.split == "all"
    index = fakes.class_map(40, 40, 3, 0)
    assert np.array_equal(ds[0]["mask"].numpy(), np.where(index == 2, 255, index))
    # index-mask palette
    (root / "index").mkdir()
    fakes.write_png(root / "index/images/a.png", fakes.rgb_image(8, 8, 0))
    fakes.write_png(root / "index/masks/a.png", np.full((8, 8), 3, np.uint8))
    (root / "pal.json").write_text('{"ignore": 0, "water": 3}')
    assert FolderDataset(root, "index", patch_size=None, palette=str(root / "pal.json"))[0][
        "mask"
    ].unique().tolist() == [0]


def test_unlabeled_recursive_excludes_held_out_and_labels(tmp_path, fakes):
    dubai = fakes.make_dubai(tmp_path / "dubai")
    extra = tmp_path / "extra"
    fakes.write_jpg(extra / "a" / "x.jpg", fakes.rgb_image(70, 50, 0))
    fakes.write_png(extra / "y.png", fakes.rgb_image(20, 20, 1))  # smaller than a patch: zero-padded
    fakes.write_geotiff(extra / "g.tif", np.ones((3, 40, 40), np.uint8))
    fakes.write_png(extra / "test" / "held.png", fakes.rgb_image(32, 32, 2))
    fakes.write_png(extra / "masks" / "m.png", fakes.rgb_image(32, 32, 2))
    ds = UnlabeledImagery([dubai, extra], patch_size=32)
    names = {str(p.relative_to(tmp_path)) for p in ds.files}
    assert names == {f"dubai/Tile {t}/images/image_part_001.jpg" for t in (1, 4, 5, 6, 7)} | {
        "extra/a/x.jpg",
        "extra/y.png",
        "extra/g.tif",
    }
    sample = ds[len(ds) - 1]
    assert set(sample) == {"image"} and sample["image"].shape == (3, 32, 32)
    assert len(UnlabeledImagery([dubai], 32, include_held_out=True).files) == 8


def test_dataset_registry():
    assert set(DATASETS) == {
        "dubai",
        "potsdam",
        "potsdam_patches",
        "vaihingen_patches",
        "isprs_mmseg",
        "deepglobe",
        "loveda",
        "folder",
        "vector",
        "unlabeled",
    }


def test_plot_methods(tmp_path, fakes):
    import matplotlib.pyplot as plt

    ds = DubaiAerial(fakes.make_dubai(tmp_path / "d", tiles=[2]), "val", patch_size=32)
    sample = ds[0]
    fig = ds.plot({**sample, "prediction": sample["mask"]}, suptitle="x")
    assert len(fig.axes) == 3
    shown = np.asarray(fig.axes[1].images[0].get_array())
    mask = sample["mask"].numpy()
    for k, colour in enumerate(ds.colours):
        if (mask == k).any():
            assert (shown[mask == k] == colour).all()
    assert (shown[mask == 255] == 0).all()
    plt.close(fig)
    un = UnlabeledImagery([tmp_path / "d"], 32, include_held_out=True)
    plt.close(un.plot(un[0]))


def test_datasets_pickle_for_dataloader_workers(tmp_path, fakes):
    import pickle

    ds = PotsdamTiles(fakes.make_potsdam_tiles(tmp_path / "p", tiles=["2_10"]), patch_size=32, tiles=["2_10"])
    folder = FolderDataset(fakes.make_folder(tmp_path / "f"), patch_size=None)
    for d in (ds, folder):
        clone = pickle.loads(pickle.dumps(d))
        assert np.array_equal(clone[1 % len(clone)]["mask"].numpy(), d[1 % len(d)]["mask"].numpy())
