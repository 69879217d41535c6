"""The protocol's cached artefacts: label subsets and band statistics record what they were drawn from."""

import json

import pytest
import torch

from falsecl.datamodules import SegmentationDataModule
from falsecl.datasets.errors import DatasetError
from falsecl.datasets.subsets import load_fingerprint, load_ids
from tests.data import fake_layouts as fakes


class FakeTrainer:
    def __init__(self, root):
        self.default_root_dir = str(root)
        self.training = True


def _setup(run, **kwargs):
    dm = SegmentationDataModule(**kwargs)
    dm.trainer = FakeTrainer(run)
    dm.setup("fit")
    return dm


@pytest.fixture
def dubai(tmp_path):
    return fakes.make_dubai(tmp_path / "dubai", per_tile=2, size=(64, 64))


def _kwargs(root, **over):
    return {"dataset": "dubai", "root": str(root), "patch_size": 32, "batch_size": 4, **over}


def test_rerun_with_other_fraction_or_seed_never_reuses_the_subset(tmp_path, dubai):
    run = tmp_path / "run"
    first = _setup(run, **_kwargs(dubai, label_fraction=0.05, seed=0))
    full = _setup(run, **_kwargs(dubai, label_fraction=1.0, seed=0))
    other_seed = _setup(run, **_kwargs(dubai, label_fraction=0.25, seed=3))
    assert len(first.train_indices) == 2 and len(full.train_indices) == 40 and len(other_seed.train_indices) == 10
    again = _setup(run, **_kwargs(dubai, label_fraction=0.25, seed=7))
    assert len(again.train_indices) == 10 and again.train_indices != other_seed.train_indices
    # Each draw lives in a file whose name says what it is, with the fingerprint of its source.
    names = sorted(p.name for p in run.glob("label_subset*.txt"))
    assert names == [
        "label_subset_dubai_train_f0.05_s0.txt",
        "label_subset_dubai_train_f0.25_s3.txt",
        "label_subset_dubai_train_f0.25_s7.txt",
        "label_subset_dubai_train_f1_s0.txt",
    ]
    fp = load_fingerprint(run / "label_subset_dubai_train_f0.25_s3.txt")
    assert fp["fraction"] == 0.25 and fp["seed"] == 3 and fp["dataset"] == "dubai" and fp["split"] == "train"
    assert fp["patch_size"] == 32 and fp["num_files"] == 10 and "root" not in fp and len(fp["files"]) == 16
    assert len(load_ids(run / "label_subset_dubai_train_f0.25_s3.txt")) == 10
    # The same settings reload the same subset.
    assert _setup(run, **_kwargs(dubai, label_fraction=0.25, seed=3)).train_indices == other_seed.train_indices


def test_explicit_subset_file_from_other_settings_is_refused(tmp_path, dubai):
    subset = tmp_path / "my_subset.txt"
    _setup(tmp_path / "a", **_kwargs(dubai, label_fraction=0.25, seed=1, subset_path=str(subset)))
    with pytest.raises(DatasetError, match=r"my_subset\.txt.*fraction.*(delete|another)"):
        _setup(tmp_path / "b", **_kwargs(dubai, label_fraction=0.5, seed=1, subset_path=str(subset)))
    with pytest.raises(DatasetError, match=r"my_subset\.txt.*patch_size"):
        _setup(tmp_path / "c", **_kwargs(dubai, label_fraction=0.25, seed=1, subset_path=str(subset), patch_size=16))


def test_hand_written_subset_without_fingerprint_is_used_as_given(tmp_path, dubai):
    dm = _setup(tmp_path / "a", **_kwargs(dubai, label_fraction=0.25, seed=1))
    ids = [dm.train_full.patch_ids[i] for i in (0, 5)]
    subset = tmp_path / "paper_subset.txt"
    subset.write_text("\n".join(ids) + "\n")
    again = _setup(tmp_path / "b", **_kwargs(dubai, label_fraction=0.25, seed=1, subset_path=str(subset)))
    assert again.train_indices == [0, 5]


def test_band_stats_are_recomputed_when_their_source_changes(tmp_path, dubai):
    stats = tmp_path / "band_stats.json"
    other = fakes.make_dubai(tmp_path / "other", per_tile=2, size=(96, 64))
    a = _setup(tmp_path / "a", **_kwargs(dubai, stats_path=str(stats)))
    saved = json.loads(stats.read_text())
    assert saved["fingerprint"]["patch_size"] == 32 and str(tmp_path) not in stats.read_text()
    b = _setup(tmp_path / "b", **_kwargs(other, stats_path=str(stats)))  # same bands, other imagery
    assert a.mean != b.mean
    assert json.loads(stats.read_text())["fingerprint"]["files"] != saved["fingerprint"]["files"]
    c = _setup(tmp_path / "c", **_kwargs(other, stats_path=str(stats)))
    assert c.mean == b.mean
    d = _setup(tmp_path / "d", **_kwargs(other, stats_path=str(stats), bands=[2, 1, 0]))
    assert d.mean == b.mean[::-1]
    # A re-run of another dataset in the same run folder stops instead of reusing the other's subset.
    with pytest.raises(DatasetError, match=r"label_subset_dubai_train_f1_s0\.txt.*files"):
        _setup(tmp_path / "a", **_kwargs(other))


def test_training_subset_smaller_than_a_batch_fills_whole_batches(tmp_path, dubai):
    dm = _setup(tmp_path / "run", **_kwargs(dubai, label_fraction=0.05, seed=0, batch_size=8))
    assert len(dm.train_indices) == 2
    batches = list(dm.train_dataloader())
    assert len(batches) >= 1 and all(b["image"].shape[0] == 8 for b in batches)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train()
    model(batches[0]["image"])  # a batch of one would raise "Expected more than 1 value per channel"


# ------------------------------------------------------------------ validation never touches the test split
from falsecl.datasets import ISPRSMMSeg, LoveDA, PotsdamPatches, PotsdamTiles  # noqa: E402
from falsecl.datasets.isprs import POTSDAM_TEST, POTSDAM_TRAIN  # noqa: E402
from falsecl.datasets.subsets import carve_tiles  # noqa: E402


def _tiles(ds):
    return {f.tile for f in ds.files}


def _images(ds):
    return {f.image for f in ds.files}


def test_carve_is_seeded_disjoint_and_leaves_training_tiles():
    tiles = [f"t{i}" for i in range(24)]
    a = carve_tiles(tiles, 0.125, 0)
    assert len(a) == 3 and a == carve_tiles(list(reversed(tiles)), 0.125, 0) and set(a) <= set(tiles)
    assert carve_tiles(tiles, 0.125, 1) != a
    assert len(carve_tiles(["x", "y"], 0.9, 0)) == 1  # at least one tile stays for training
    with pytest.raises(ValueError, match="own"):
        carve_tiles(["x"], 0.125, 0)


def test_potsdam_validation_is_carved_from_training_tiles(tmp_path):
    root = fakes.make_potsdam_tiles(tmp_path / "p", tiles=POTSDAM_TRAIN + POTSDAM_TEST, size=16)
    splits = {s: PotsdamTiles(str(root), s, patch_size=16) for s in ("train", "val", "test")}
    tiles = {s: _tiles(d) for s, d in splits.items()}
    assert tiles["test"] == set(POTSDAM_TEST) and len(tiles["val"]) == 3 and len(tiles["train"]) == 21
    assert tiles["val"] | tiles["train"] == set(POTSDAM_TRAIN) and not tiles["val"] & tiles["train"]
    assert "carved from train: 3 of 24 tiles" in splits["val"].split_description


@pytest.mark.parametrize("family", ["potsdam_patches", "loveda", "isprs_mmseg"])
def test_official_val_is_the_test_split_and_validation_is_carved(tmp_path, family):
    if family == "potsdam_patches":
        names = [f"top_potsdam_{t}_0_{k}" for t in ("2_10", "3_11", "4_12", "5_10") for k in range(2)]
        root = fakes.make_isprs_patches(tmp_path / "p", "train", names=names, size=16)
        fakes.make_isprs_patches(root, "val", names=["top_potsdam_2_13_0_0"], size=16)
        make = lambda s: PotsdamPatches(str(root), s, patch_size=16)  # noqa: E731
    elif family == "loveda":
        root = fakes.make_loveda(tmp_path / "l", splits=("Train", "Val"), size=16)
        make = lambda s: LoveDA(str(root), s, patch_size=16)  # noqa: E731
    else:
        root = fakes.make_mmseg(tmp_path / "m", splits=("train", "val"), size=16)
        make = lambda s: ISPRSMMSeg(str(root), s, patch_size=16)  # noqa: E731
    train, val, test = make("train"), make("val"), make("test")
    assert not _images(train) & _images(val) and not _images(val) & _images(test)
    assert not _images(train) & _images(test) and val.val_tiles and not _tiles(train) & _tiles(val)
    # Judged below the dataset root: pytest's own temporary path may contain "val" or "test".
    def under_val(ds):
        return {"val" in f.image.relative_to(root).as_posix().lower() for f in ds.files}

    assert under_val(test) == {True} and under_val(train) == under_val(val) == {False}


def test_datamodule_records_how_validation_was_chosen(tmp_path):
    root = fakes.make_potsdam_tiles(tmp_path / "p", tiles=POTSDAM_TRAIN + POTSDAM_TEST[:1], size=16)
    dm = _setup(tmp_path / "run", dataset="potsdam", root=str(root), patch_size=16, batch_size=2)
    held = load_ids(tmp_path / "run" / "val_tiles.txt")
    assert len(held) == 3 and set(held) == {f.tile for f in dm.val_set.files}
    assert not set(held) & {f.tile for f in dm.train_full.files}
    assert dm.val_description.startswith("val: carved from train: 3 of 24 tiles")
    assert dm.class_colours[1] == [0, 0, 255]
    dubai = _setup(tmp_path / "d", **_kwargs(fakes.make_dubai(tmp_path / "dubai", size=(32, 32))))
    assert dubai.val_description == "val: the 'val' split: 1 tile(s): tile2"


# ------------------------------------------------------------ training never sees held-out data (issue 17.1)
def test_training_on_test_crops_or_validating_on_training_data_is_refused(tmp_path):
    flat = fakes.make_mmseg(tmp_path / "flat", splits=None, size=32)
    fakes.write_png(flat / "img_dir" / "2_13_0_0_32_32.png", fakes.rgb_image(32, 32, 5))
    fakes.write_png(flat / "ann_dir" / "2_13_0_0_32_32.png", fakes.class_map(32, 32, 7, 5).astype("uint8"))
    kw = {"dataset": "isprs_mmseg", "root": str(flat), "train_split": "all", "val_split": "all", "patch_size": 16}
    with pytest.raises(DatasetError, match=r"share 3 image\(s\).*ISPRS test tile.*potsdam 2_13.*allow_held_out"):
        _setup(tmp_path / "r1", **kw)
    dubai = fakes.make_dubai(tmp_path / "dubai", per_tile=1, size=(32, 32))
    with pytest.raises(DatasetError, match=r"training split .test. holds 2 image.*Tile 3.*of the test split"):
        _setup(tmp_path / "r2", **_kwargs(dubai, train_split="test"))
    with pytest.raises(DatasetError, match=r"validation split .test. holds 2 image.*test split, so the checkpoint"):
        _setup(tmp_path / "r3", **_kwargs(dubai, val_split="test"))
    allowed = _setup(tmp_path / "r4", **kw, allow_held_out=True)
    assert "share 3 image(s)" in allowed.held_out_override and allowed.hparams["allow_held_out"] is True
    assert "HELD-OUT DATA ALLOWED" in allowed.val_description
    assert _setup(tmp_path / "r5", **_kwargs(dubai)).held_out_override is None


def test_pretraining_on_a_test_split_is_refused(tmp_path):
    from falsecl.datamodules import SSLDataModule

    dubai = fakes.make_dubai(tmp_path / "dubai", per_tile=1, size=(32, 32))
    dm = SSLDataModule(dataset="dubai", root=str(dubai), split="test", patch_size=16, crop_size=8)
    with pytest.raises(DatasetError, match=r"held out.*dubai test"):
        dm.setup("fit")
    ok = SSLDataModule(dataset="dubai", root=str(dubai), split="test", patch_size=16, crop_size=8, allow_held_out=True)
    ok.setup("fit")
    assert len(ok.dataset.files) == 2


def test_subset_and_statistics_survive_moving_the_data(tmp_path, dubai):
    import shutil

    subset, stats = tmp_path / "subset.txt", tmp_path / "stats.json"
    kw = {"label_fraction": 0.25, "seed": 2, "subset_path": str(subset), "stats_path": str(stats)}
    first = _setup(tmp_path / "a", **_kwargs(dubai, **kw))
    moved = shutil.copytree(dubai, tmp_path / "elsewhere" / "dubai_copy")
    again = _setup(tmp_path / "b", **_kwargs(moved, **kw))
    assert again.train_indices == first.train_indices
    assert str(tmp_path) not in subset.read_text() and str(tmp_path) not in stats.read_text()
    # Changing what defines the patches (here an image's name) still refuses the subset.
    for sub, ext in (("images", "jpg"), ("masks", "png")):
        (moved / "Tile 1" / sub / f"image_part_001.{ext}").rename(moved / "Tile 1" / sub / f"image_part_009.{ext}")
    with pytest.raises(DatasetError, match=r"subset\.txt.*files"):
        _setup(tmp_path / "c", **_kwargs(moved, label_fraction=0.25, seed=2, subset_path=str(subset)))
