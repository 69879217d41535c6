"""A newcomer's first hour (issue 21): every mistake gets a message with the fix, on tiny generated data."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SMOKE_PRE = str(REPO / "configs" / "pretrain" / "smoke.yaml")
BUNDLED = REPO / "data" / "dubai_aerial"


def _scenes(folder: Path, n: int = 2, size: int = 64) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"scene{i}.png")
    return folder


def test_pretrain_root_without_dataset_points_to_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--data.root`` is a labelled dataset's folder: alone, it must not fall back to the bundled data."""
    from falsecl.cli.pretrain import main

    scenes = _scenes(tmp_path / "scenes")
    monkeypatch.chdir(tmp_path)  # no data/dubai_aerial here: the old fallback died with a traceback
    run = tmp_path / "runs" / "pre"
    code = main(["--config", SMOKE_PRE, "--data.root", str(scenes), f"--trainer.default_root_dir={run}"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("falsecl pretrain: error:") and "Did you mean --data.roots?" in last
    assert not run.exists()  # nothing half-made


@pytest.mark.skipif(not (BUNDLED / "Tile 1").is_dir(), reason="vendored Dubai data not present")
def test_presets_find_the_bundled_data_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from falsecl.datamodules import SegmentationDataModule, SSLDataModule

    monkeypatch.chdir(tmp_path)
    assert Path(SSLDataModule().roots[0]).resolve() == BUNDLED.resolve()
    assert Path(SegmentationDataModule(root="data/dubai_aerial").root).resolve() == BUNDLED.resolve()
    # a relative root that exists where the user is still wins
    mine = _scenes(tmp_path / "data" / "dubai_aerial")
    assert Path(SSLDataModule().roots[0]).resolve() == mine.resolve()


def test_a_run_failing_at_start_up_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from falsecl.cli.pretrain import main

    empty = tmp_path / "empty"
    empty.mkdir()
    run = tmp_path / "runs" / "pre"
    code = main(["--config", SMOKE_PRE, f"--data.roots=[{empty}]", f"--trainer.default_root_dir={run}"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (a captured stream of an earlier test may add logging noise above)
    assert code == 2 and last.startswith("falsecl pretrain: error:") and str(empty) in last
    assert not run.exists()


def test_validation_interval_ends_on_the_last_step() -> None:
    from falsecl.tasks.run_guards import validation_interval

    assert validation_interval(30, 60) == 30  # shortened preset: one validation, at the end
    assert validation_interval(120, 60) == 60  # the preset as it is
    assert validation_interval(90, 60) == 45  # two validations, the last at step 90
    assert validation_interval(97, 10) == 10  # a prime: no divisor close by, the interval stays
    for steps, interval in [(30, 60), (90, 60), (100, 30), (64, 7)]:
        new = validation_interval(steps, interval)
        assert 1 <= new <= max(interval, 1) and (steps % new == 0 or new == interval)


def test_progress_bar_of_a_step_bounded_run_has_no_negative_epochs() -> None:
    from lightning.pytorch import Trainer

    from falsecl.tasks.run_guards import StepProgressBar

    bar = StepProgressBar()
    trainer = Trainer(max_steps=10, max_epochs=-1, callbacks=[bar], logger=False, enable_checkpointing=False)
    assert trainer.progress_bar_callback is bar
    bar.setup(trainer, None, "fit")  # type: ignore[arg-type]  # what fit does first
    text = bar._get_train_description(29)
    assert text.strip() == "Epoch 29 (max 10 steps)" and "/-" not in text


# ---------------------------------------------------------------------------------------------------------------
# One short fine-tuning from a "project" folder with a relative data root, shared by the tests below.

FT_ARGS = [
    "--data.dataset", "dubai", "--data.root", "data/small", "--data.patch_size", "32", "--data.batch_size", "2",
    "--data.stats_patches", "4", "--model.output_stride", "16", "--trainer.max_steps", "3",
    "--trainer.max_epochs", "-1", "--trainer.val_check_interval", "60", "--trainer.check_val_every_n_epoch", "null",
    "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0", "--trainer.accelerator", "cpu",
    "--trainer.devices", "1", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<project>/data/small`` (fake Dubai) and ``<project>/runs/ft``, fine-tuned from inside ``<project>``."""
    from falsecl.cli.finetune import main as finetune_main
    from tests.data.fake_layouts import make_dubai

    folder = tmp_path_factory.mktemp("project")
    make_dubai(folder / "data" / "small", size=(64, 64))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        assert finetune_main([*FT_ARGS, "--name", "ft"]) == 0
    return folder


def test_a_shortened_preset_still_selects_a_checkpoint(project: Path) -> None:
    from falsecl.model_card import read_model_card

    card = read_model_card(project / "runs" / "ft")
    best = card["checkpoints"]["best"]
    assert best is not None and Path(best).is_file(), card["checkpoints"]
    assert card["validation"]["best_mIoU"] is not None


@pytest.fixture(scope="module")
def pretrain_run(project: Path) -> Path:
    """``<project>/runs/pre``: two SimCLR steps on two scenes (``pretrain --name``)."""
    from falsecl.cli.pretrain import main

    _scenes(project / "scenes")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        argv = ["--config", SMOKE_PRE, "--data.roots", "[scenes]", "--data.patch_size", "32", "--data.crop_size",
                "24", "--trainer.enable_progress_bar", "false", "--name", "pre"]  # fmt: skip
        assert main(argv) == 0
    run = project / "runs" / "pre"
    assert (run / "backbone.pt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    return run


@pytest.mark.parametrize("which", ["run", "ckpt", "backbone", "copied backbone"])
def test_a_pretraining_checkpoint_is_named_as_such(
    pretrain_run: Path, which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from falsecl.cli.inference import evaluate_main, predict_main

    target = {"run": pretrain_run, "ckpt": pretrain_run / "checkpoints" / "last.ckpt",
              "backbone": pretrain_run / "backbone.pt", "copied backbone": tmp_path / "encoder.pt"}[which]  # fmt: skip
    if which == "copied backbone":
        shutil.copy(pretrain_run / "backbone.pt", target)
    if "backbone" in which:
        code = predict_main(["--checkpoint", str(target), "--input", "x.tif", "--output", str(tmp_path / "o.tif")])
    else:
        code = evaluate_main(["--checkpoint", str(target), "--output_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    what = "an encoder's weights" if which == "copied backbone" else "pretraining run (SimCLR)"
    assert what in err and "pass a fine-tuning run" in err, err
    for internal in ("arbitrary code", "pytorch-lightning_version", "weights_only", "Traceback"):
        assert internal not in err, err


def test_a_run_folder_works_from_another_folder(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data root was typed relative (``data/small``) inside the project; evaluate from elsewhere."""
    from falsecl.cli.inference import evaluate_main
    from falsecl.model_card import read_model_card

    run = project / "runs" / "ft"
    card = read_model_card(run)
    assert card["dataset"]["root"] == str((project / "data" / "small").resolve())
    assert card["dataset"]["root_as_given"] == "data/small"
    paths = [card["labels"]["subset_file"], card["normalisation"]["statistics_file"], card["checkpoints"]["last"],
             card["checkpoints"]["best"]]  # fmt: skip
    assert all(p and Path(p).is_absolute() for p in paths), paths  # one rule: absolute paths
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = ["--checkpoint", str(run), "--split", "test", "--window", "32", "--device", "cpu", "--progress", "false",
            "--output_dir", str(tmp_path / "eval")]  # fmt: skip
    assert evaluate_main(argv) == 0, capsys.readouterr().err
    # the data moved away: the message names both paths tried and the option that fixes it
    moved = tmp_path / "moved"
    shutil.move(str(project / "data"), moved)
    try:
        assert evaluate_main(argv) == 2
        err = capsys.readouterr().err
        assert "--root" in err and str(project / "data" / "small") in err and "data/small" in err
    finally:
        shutil.move(str(moved), project / "data")


def _labelled(folder: Path, bad: bool) -> Path:
    """A labelled folder (own palette, train/ and test/, no val/): the last training mask with a stray colour
    when ``bad``."""
    from tests.data.fake_layouts import class_map, colour_mask, rgb_image, write_png

    colours = [(0, 255, 0), (128, 128, 128), (0, 0, 255)]
    (folder / "palette.yaml").parent.mkdir(parents=True, exist_ok=True)
    (folder / "palette.yaml").write_text('field: "#00ff00"\nroad: [128, 128, 128]\nwater: [0, 0, 255]\n')
    for i in range(4):
        split = "test" if i == 3 else "train"
        write_png(folder / split / "images" / f"img{i}.png", rgb_image(64, 64, i))
        mask = colour_mask(class_map(64, 64, 3, i), colours)
        if bad and i == 2:
            mask[60:, 60:] = 9  # 16 px of (9, 9, 9)
        write_png(folder / split / "masks" / f"img{i}.png", mask)
    return folder


def test_a_bad_mask_stops_fine_tuning_at_start_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from falsecl.cli.finetune import main as finetune_main

    root = _labelled(tmp_path / "labelled", bad=True)
    args = [a if a != "data/small" else str(root) for a in FT_ARGS]
    args[args.index("dubai")] = "folder"
    run = tmp_path / "runs" / "ft"
    assert finetune_main([*args, "--trainer.default_root_dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "img2.png has 1 colour(s) not in the palette: (9,9,9) x 16 px" in err and "Fix:" in err
    assert not run.exists()


def test_mask_check_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from falsecl.datasets import FolderDataset
    from falsecl.datasets.mask_check import check_masks

    root = _labelled(tmp_path / "labelled", bad=False)
    data = FolderDataset(str(root), split="train", patch_size=32)
    cache = tmp_path / "mask_check.json"
    every = range(len(data))
    assert check_masks(data, every, cache) == len(data.files)
    assert check_masks(data, every, cache) == 0  # the second time costs nothing
    _labelled(root, bad=True)  # a mask replaced on disk is checked again, and refused
    os.utime(root / "train" / "masks" / "img2.png", ns=(1, 1))
    if any(Path(f.image).name == "img2.png" for f in data.files):  # (else img2 was carved out for validation)
        with pytest.raises(ValueError, match="not in the palette"):
            check_masks(data, every, cache)


def test_data_check_says_what_went_to_validation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from falsecl.cli import main
    from falsecl.datasets import FolderDataset

    root = _labelled(tmp_path / "labelled", bad=False)
    carved = FolderDataset(str(root), split="train").val_tiles
    assert main(["data", "check", "folder", str(root), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert f"images  : {3 - len(carved)} ({len(carved)} more tile(s) carved out for validation:" in out


def test_evaluate_prints_width_x_height(capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from torch import nn

    from falsecl.inference import SlidingWindowPredictor
    from falsecl.inference.evaluation import evaluate_images

    predictor = SlidingWindowPredictor(nn.Conv2d(3, 2, 1), window=16, overlap=0.0, mean=[0.0] * 3, std=[1.0] * 3)
    sample = {"image": torch.rand(3, 21, 40), "mask": torch.zeros(21, 40, dtype=torch.long)}
    evaluate_images(predictor, [sample], 2, progress=True, total=1)
    assert "image 1/1: 40 x 21 px" in capsys.readouterr().err  # width x height, as `data check` and `predict`


def test_pretraining_sources_are_reported_at_start_up(
    project: Path,
    pretrain_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from falsecl.cli import main

    monkeypatch.chdir(project)
    argv = ["pretrain", "--config", SMOKE_PRE, "--data.roots", "[scenes]", "--data.patch_size", "32",
            "--data.crop_size", "24", "--trainer.enable_progress_bar", "false", "--trainer.max_steps", "1",
            f"--trainer.default_root_dir={tmp_path / 'pre'}"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "pretraining source folder0-scenes: 2 image(s), 8 patch(es)" in err
