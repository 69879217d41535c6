import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer

from falsecl.datamodules import SegmentationDataModule, SSLDataModule
from falsecl.datasets.subsets import load_ids
from falsecl.transforms import normalize

DUBAI = Path(__file__).parents[1] / "data" / "dubai_aerial"


def _fakes():
    name = "falsecl_test_fake_layouts"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "data" / "fake_layouts.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


fakes = _fakes()


class FakeTrainer:
    def __init__(self, root, training=True):
        self.default_root_dir = str(root)
        self.training = training


def test_ssl_datamodule_views_and_held_out(tmp_path):
    dubai = fakes.make_dubai(tmp_path / "dubai", size=(64, 64))
    extra = tmp_path / "extra"
    fakes.write_jpg(extra / "e.jpg", fakes.rgb_image(64, 64, 9))
    dm = SSLDataModule(
        roots=[str(dubai)],
        extra_roots=[str(extra), str(tmp_path / "absent")],
        patch_size=32,
        crop_size=16,
        batch_size=4,
    )
    dm.trainer = FakeTrainer(tmp_path / "run")
    dm.setup("fit")
    tiles = {p.parts[-3] for p in dm.dataset.files if "dubai" in p.parts}
    assert tiles == {"Tile 1", "Tile 4", "Tile 5", "Tile 6", "Tile 7"}  # val/test tiles never pretrain
    assert len(dm.dataset) == 6 * 4 and dm.in_channels == 3 and len(dm.mean) == 3
    assert (tmp_path / "run" / "band_stats.json").is_file()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].max() > 1  # raw DN
    out = dm.on_after_batch_transfer(batch, 0)
    v0, v1 = out["views"]
    assert v0.shape == v1.shape == (4, 3, 16, 16) and not torch.equal(v0, v1)
    assert v0.abs().mean() < 3  # normalised, not raw 0..255


def test_ssl_datamodule_four_band_geotiffs(tmp_path):
    for i in range(2):
        fakes.write_geotiff(
            tmp_path / "g" / f"{i}.tif",
            np.random.default_rng(i).integers(0, 4000, (4, 48, 48), dtype=np.uint16),
        )
    dm = SSLDataModule(
        roots=[str(tmp_path / "g")],
        extra_roots=[],
        patch_size=32,
        crop_size=16,
        batch_size=2,
        stats_path=str(tmp_path / "s.json"),
    )
    dm.setup("fit")
    assert dm.in_channels == 4 and max(dm.stats.max) > 255
    dm.trainer = FakeTrainer(tmp_path)
    views = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)["views"]
    assert views[0].shape == (2, 4, 16, 16) and views[0].abs().mean() < 3


def test_segmentation_datamodule_subset_batches_and_whole_images(tmp_path):
    root = fakes.make_dubai(tmp_path / "dubai", per_tile=2, size=(64, 64))
    kwargs = dict(
        dataset="dubai",
        root=str(root),
        patch_size=32,
        crop_size=24,
        batch_size=4,
        label_fraction=0.25,
        seed=1,
    )
    dm = SegmentationDataModule(**kwargs)
    dm.trainer = FakeTrainer(tmp_path / "run")
    dm.setup("fit")
    assert len(dm.train_full) == 40 and len(dm.train_set) == 10 and len(dm.val_set) == 8
    assert (dm.num_classes, dm.in_channels, dm.ignore_index) == (5, 3, 255) and dm.class_names[0] == "building"
    saved = load_ids(tmp_path / "run" / "label_subset_dubai_train_f0.25_s1.txt")
    assert len(saved) == 10 and len({s.split("/")[0] for s in saved}) == 5  # all five train tiles represented
    again = SegmentationDataModule(**kwargs)  # the same settings reload the saved subset
    again.trainer = FakeTrainer(tmp_path / "run")
    again.setup("fit")
    assert again.train_indices == dm.train_indices
    train = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert train["image"].shape == (4, 3, 24, 24) and train["mask"].shape == (4, 24, 24)
    raw = next(iter(dm.val_dataloader()))
    dm.trainer.training = False
    val = dm.on_after_batch_transfer(dict(raw), 0)
    torch.testing.assert_close(val["image"], normalize(raw["image"], dm.mean, dm.std))  # no augmentation
    assert torch.equal(val["mask"], raw["mask"])
    whole = dm.whole_image_dataset("test")
    assert len(whole) == 4 and whole[0]["image"].shape == (3, 64, 64) and whole[0]["image"].max() > 1
    assert len(dm.test_dataset()) == 4


def test_datamodules_from_cli_arguments():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(SegmentationDataModule, "data")
    cfg = parser.parse_args(["--data.dataset", "folder", "--data.label_fraction", "0.05", "--data.bands", "[0, 1]"])
    assert cfg.data.label_fraction == 0.05 and cfg.data.bands == [0, 1]
    parser = ArgumentParser()
    parser.add_class_arguments(SSLDataModule, "data")
    cfg = parser.parse_args(["--data.roots", "[a, b]", "--data.crop_scale", "[0.3, 1.0]"])
    assert cfg.data.roots == ["a", "b"] and tuple(cfg.data.crop_scale) == (0.3, 1.0)
    with pytest.raises(ValueError, match="label_fraction"):
        SegmentationDataModule(label_fraction=0.0)


class _ViewsProbe(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Conv2d(3, 1, 1)
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append([tuple(v.shape) for v in batch["views"]])
        return self.layer(batch["views"][0]).mean() + self.layer(batch["views"][1]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_ssl_datamodule_in_a_real_trainer(tmp_path):
    root = fakes.make_dubai(tmp_path / "dubai", tiles=[1, 4, 5, 6, 7])
    dm = SSLDataModule(roots=[str(root)], extra_roots=[], patch_size=32, crop_size=16, batch_size=2)
    model = _ViewsProbe()
    trainer = Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(model, datamodule=dm)
    assert model.seen == [[(2, 3, 16, 16), (2, 3, 16, 16)]] * 2
    assert (tmp_path / "band_stats.json").is_file()


@pytest.mark.skipif(not DUBAI.is_dir(), reason="vendored Dubai data not present")
def test_default_segmentation_datamodule_on_vendored_dubai(tmp_path):
    dm = SegmentationDataModule(label_fraction=0.01, stats_patches=4, subset_path=str(tmp_path / "ids.txt"))
    dm.setup("fit")
    assert len(dm.train_full) == 1305 and len(dm.train_set) == 13 and len(dm.val_set) == 54
    assert dm.in_channels == 3 and all(30 < m < 230 for m in dm.mean)


def _isprs_pool(tmp_path, family="potsdam_patches", bands=4):
    root = tmp_path / family
    names = [
        f"top_potsdam_{t}_0_{k}"
        for t in ("2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11")
        for k in (0, 1)
    ]
    fakes.make_isprs_patches(root, "train", names, size=32, bands=bands)
    fakes.make_isprs_patches(root, "val", ["top_potsdam_2_13_0_0"], size=32, bands=bands)
    return root


def test_ssl_pretrains_on_a_labelled_training_split_only(tmp_path):
    root = _isprs_pool(tmp_path)
    extra = tmp_path / "extra"
    fakes.write_geotiff(extra / "e.tif", np.ones((4, 32, 32), np.uint8))
    dm = SSLDataModule(
        dataset="potsdam_patches", root=str(root), split="train", roots=[str(extra)], patch_size=32, crop_size=16,
        batch_size=4,
    )  # fmt: skip
    dm.trainer = FakeTrainer(tmp_path / "run")
    dm.setup("fit")
    from falsecl.datasets import PotsdamPatches

    carved = PotsdamPatches(str(root), split="val", patch_size=32).val_tiles
    assert len(carved) == 1
    lines = [x for x in (tmp_path / "run" / "pretrain_images.txt").read_text().splitlines() if x[0] != "#"]
    assert len(lines) == 14 + 1 and lines[-1] == "folder0-extra:e.tif"
    assert all(x.startswith("potsdam_patches-train:train_RGBIR/") for x in lines[:-1])
    assert not any(carved[0] in x or "2_13" in x or "val_" in x for x in lines)  # no val carve, no test
    batch = next(iter(dm.train_dataloader()))
    out = dm.on_after_batch_transfer(batch, 0)
    assert set(out) == {"views", "index", "majority"}
    assert out["index"].dtype == out["majority"].dtype == torch.int64 and out["index"].shape == (4,)
    assert len(set(out["index"].tolist())) == 4
    labelled = out["index"] < 14
    assert ((out["majority"] >= 0) == labelled).all()  # only the folder source lacks labels
    assert dm.augment.rgb_bands == [0, 1, 2]


def test_ssl_uses_the_datasets_own_rgb_bands(tmp_path):
    root = _isprs_pool(tmp_path, "vaihingen_patches", bands=3)
    dm = SSLDataModule(dataset="vaihingen_patches", root=str(root), patch_size=32, crop_size=16, batch_size=2)
    dm.setup("fit")
    assert dm.augment.rgb_bands is None  # IR-R-G: no hue jitter as if it were RGB
    dm = SSLDataModule(dataset="vaihingen_patches", root=str(root), rgb_bands=[], patch_size=32, crop_size=16)
    dm.setup("fit")
    assert dm.augment.rgb_bands is None
    folder = tmp_path / "vaihingen_top"
    fakes.write_geotiff(folder / "top_mosaic_09cm_area1.tif", np.ones((3, 32, 32), np.uint8))
    dm = SSLDataModule(roots=[str(folder)], patch_size=32, crop_size=16)
    dm.setup("fit")
    assert dm.augment.rgb_bands is None  # recognised by name in a plain folder too
    mmseg = tmp_path / "vaihingen_mmseg"
    fakes.write_png(mmseg / "img_dir" / "area1_0_0_32_32.png", fakes.rgb_image(32, 32, 0))
    fakes.write_png(mmseg / "ann_dir" / "area1_0_0_32_32.png", np.ones((32, 32), np.uint8))
    dm = SSLDataModule(dataset="isprs_mmseg", root=str(mmseg), split="all", patch_size=32, crop_size=16)
    dm.setup("fit")
    assert dm.augment.rgb_bands is None  # mmsegmentation's Vaihingen crops are IR-R-G as well
    with pytest.raises(ValueError, match="root"):
        SSLDataModule(dataset="potsdam")


def test_ssl_defaults_have_no_implicit_extra_roots():
    from falsecl import datamodules

    assert datamodules.DEFAULT_EXTRA_ROOTS == () and SSLDataModule().extra_roots == []
    assert SSLDataModule(dataset="dubai", root="x").roots == []  # a dataset alone is the whole pool
    configs = Path(__file__).parents[1] / "configs"
    for path in [*configs.glob("pretrain/*.yaml"), *configs.glob("finetune/*.yaml")]:
        assert "../shared" not in path.read_text(), path


def test_ssl_band_stats_follow_the_sources(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    fakes.write_geotiff(a / "x.tif", np.full((3, 32, 32), 10, np.uint8))
    fakes.write_geotiff(b / "y.tif", np.full((3, 32, 32), 200, np.uint8))
    stats = tmp_path / "run" / "band_stats.json"
    for root, mean in ((a, 10), (b, 200)):
        dm = SSLDataModule(roots=[str(root)], patch_size=32, crop_size=16, stats_path=str(stats))
        dm.setup("fit")
        assert dm.mean == [mean] * 3  # another root: recomputed, not reused


def test_pretrain_cli_on_a_datasets_training_split(tmp_path):
    from falsecl.cli.pretrain import main

    root = fakes.make_dubai(tmp_path / "dubai", size=(64, 64))
    run = tmp_path / "run"
    smoke = Path(__file__).parents[1] / "configs" / "pretrain" / "smoke.yaml"
    args = ["--config", str(smoke), f"--trainer.default_root_dir={run}", "--trainer.max_steps=1"]
    args += ["--data.roots=[]", "--data.dataset=dubai", f"--data.root={root}", "--data.split=train"]
    args += ["--data.patch_size=32", "--data.crop_size=24", "--trainer.enable_progress_bar=false"]
    assert main(args) == 0
    lines = [x for x in (run / "pretrain_images.txt").read_text().splitlines() if not x.startswith("#")]
    assert lines == [f"dubai-train:Tile {t}/images/image_part_001.jpg" for t in (1, 4, 5, 6, 7)]
