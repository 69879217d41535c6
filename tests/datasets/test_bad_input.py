"""Bad input raises a clear error that names the file and the fix; nothing is skipped silently."""

import numpy as np
import pytest

from falsecl.datasets import (
    DatasetError,
    DatasetNotFoundError,
    DubaiAerial,
    FolderDataset,
    ISPRSMMSeg,
    PotsdamPatches,
    PotsdamTiles,
    UnlabeledImagery,
)


def test_missing_root(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"nowhere.*does not exist.*docs/data\.md"):
        DubaiAerial(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        UnlabeledImagery([tmp_path / "nowhere"])


def test_missing_mask_and_tile(tmp_path, fakes):
    root = fakes.make_dubai(tmp_path / "d", tiles=[1, 4, 5, 6])
    with pytest.raises(DatasetNotFoundError, match=r"Tile 7"):
        DubaiAerial(root, "train")
    root = fakes.make_dubai(tmp_path / "e", tiles=[2])
    (root / "Tile 2/masks/image_part_001.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"missing mask .*image_part_001\.png"):
        DubaiAerial(root, "val")


def test_empty_folders(tmp_path, fakes):
    (tmp_path / "d/Tile 2/images").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"no \*\.jpg images in .*Tile 2"):
        DubaiAerial(tmp_path / "d", "val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no JPEG/PNG/GeoTIFF images under .*empty"):
        UnlabeledImagery([tmp_path / "empty"])
    root = fakes.make_folder(tmp_path / "f")
    for p in (root / "images").iterdir():
        p.unlink()
    with pytest.raises(DatasetNotFoundError, match="no images"):
        FolderDataset(root)


def test_corrupt_and_truncated_images(tmp_path, fakes):
    root = fakes.make_dubai(tmp_path / "d", tiles=[2])
    image = root / "Tile 2/images/image_part_001.jpg"
    data = image.read_bytes()
    image.write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=r"cannot read .*image_part_001\.jpg.*corrupt"):
        DubaiAerial(root, "val")
    image.write_bytes(data[: len(data) // 2])  # header intact, pixels cut off
    ds = DubaiAerial(root, "val", patch_size=None)
    with pytest.raises(DatasetError, match=r"cannot read .*image_part_001\.jpg"):
        ds[0]


def test_unreadable_geotiff(tmp_path, fakes):
    root = fakes.make_potsdam_tiles(tmp_path / "p", tiles=["2_10"])
    (root / "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DatasetError, match=r"cannot read .*top_potsdam_2_10_RGBIR\.tif"):
        PotsdamTiles(root, tiles=["2_10"])


def test_size_mismatch(tmp_path, fakes):
    root = fakes.make_dubai(tmp_path / "d", tiles=[2])
    fakes.write_png(root / "Tile 2/masks/image_part_001.png", np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"mask .*image_part_001\.png is 12x10 but its image .* is 64x48"):
        DubaiAerial(root, "val")


def test_unknown_mask_colour(tmp_path, fakes):
    root = fakes.make_dubai(tmp_path / "d", tiles=[2])
    mask = np.zeros((48, 64, 3), np.uint8)
    mask[:2, :5] = (1, 2, 3)
    fakes.write_png(root / "Tile 2/masks/image_part_001.png", mask)
    ds = DubaiAerial(root, "val", patch_size=None)
    with pytest.raises(
        DatasetError, match=r"image_part_001\.png has 1 colour\(s\) not in the palette: \(1,2,3\) x 10 px"
    ):
        ds[0]


def test_wrong_band_count(tmp_path, fakes):
    root = fakes.make_potsdam_tiles(tmp_path / "p", tiles=["2_10"], bands=3)
    with pytest.raises(
        DatasetError, match=r"top_potsdam_2_10_RGBIR\.tif has 3 band\(s\) but PotsdamTiles expects 4"
    ):
        PotsdamTiles(root, tiles=["2_10"])
    patches = fakes.make_isprs_patches(tmp_path / "q", bands=3)
    with pytest.raises(DatasetError, match="expects 4"):
        PotsdamPatches(patches)
    mixed = tmp_path / "mixed"
    fakes.write_png(mixed / "a.png", fakes.rgb_image(32, 32, 0))
    fakes.write_geotiff(mixed / "b.tif", np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(DatasetError, match=r"b\.tif has 4 band\(s\) but .*a\.png has 3"):
        UnlabeledImagery([mixed])
    assert UnlabeledImagery([mixed], 32, bands="rgb").in_channels == 3
    fakes.write_geotiff(mixed / "c.tif", np.zeros((3, 32, 32), np.uint16))
    with pytest.raises(DatasetError, match="uint16"):
        UnlabeledImagery([mixed], 32, bands="rgb")


def test_colour_mask_where_index_expected_and_vice_versa(tmp_path, fakes):
    root = fakes.make_mmseg(tmp_path / "m", splits=["train"])
    name = next((root / "ann_dir/train").iterdir()).name
    fakes.write_png(root / "ann_dir/train" / name, np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(DatasetError, match="expects single-band index masks"):
        ISPRSMMSeg(root, "train")
    root = fakes.make_dubai(tmp_path / "d", tiles=[2])
    fakes.write_png(root / "Tile 2/masks/image_part_001.png", np.zeros((48, 64), np.uint8))
    with pytest.raises(DatasetError, match="expects RGB colour masks"):
        DubaiAerial(root, "val")


def test_bad_palette_and_split(tmp_path, fakes):
    root = fakes.make_folder(tmp_path / "f")
    (root / "palette.yaml").write_text("field: [1, 2]\n")
    with pytest.raises(DatasetError, match=r"palette .*palette\.yaml.*'field'"):
        FolderDataset(root)
    with pytest.raises(DatasetNotFoundError, match=r"palette file .*missing\.yaml not found"):
        FolderDataset(root, palette=str(root / "missing.yaml"))
    with pytest.raises(ValueError, match="unknown split 'training'"):
        DubaiAerial(tmp_path, "training")
    flat = fakes.make_mmseg(tmp_path / "flat", splits=None)
    with pytest.raises(DatasetNotFoundError, match="split 'all'"):
        ISPRSMMSeg(flat, "train")
