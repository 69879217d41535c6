"""evaluate/predict take their data and classes from the checkpoint; multi-file predict; precision."""

import json
import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import from_origin

from falsecl.cli.inference import evaluate_main, predict_main
from falsecl.inference import SlidingWindowPredictor
from falsecl.inference.batch import collect_inputs
from falsecl.tasks.segmentation import SegmentationTask
from tests.data.checkpoints import write_checkpoint
from tests.data.fake_layouts import make_folder
from tests.data.gis import gdal_tool

MEAN, STD = [100.0, 100.0, 100.0], [50.0, 50.0, 50.0]
NAMES = ["field", "road"]
COLOURS = [[0, 255, 0], [128, 128, 128]]


def save_checkpoint(path: Path, **hparams: object) -> Path:
    torch.manual_seed(0)
    task = SegmentationTask(in_channels=3, num_classes=2, mean=MEAN, std=STD, output_stride=16, **hparams)  # type: ignore[arg-type]
    return write_checkpoint(task, path)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("data")
    root = make_folder(base / "fields")
    ckpt = save_checkpoint(
        base / "run" / "checkpoints" / "best-epoch001-step4.ckpt",
        class_names=NAMES,
        class_colours=COLOURS,
        data_name="folder",
        data_root=str(root),
        data_label_fraction=0.5,
        data_seed=3,
        data_val_split="all",
        data_val_description="carved from train: 1 of 8 tiles, seed 3",
    )
    (base / "run" / "model.json").write_text(json.dumps({"dataset": "folder"}))
    return ckpt, root


def test_setup_copies_data_description_from_the_datamodule() -> None:
    dm = SimpleNamespace(
        in_channels=3, num_classes=2, mean=MEAN, std=STD, class_names=NAMES, class_colours=[(0, 255, 0), (1, 2, 3)],
        dataset_name="folder", root=Path("/data/x"), bands=None, palette="p.yaml", label_fraction=0.05, seed=0,
        data_val_split="val", val_description="tile 2 (official val)",
    )  # fmt: skip
    task = SegmentationTask()
    task._trainer = SimpleNamespace(datamodule=dm)  # type: ignore[assignment]
    task.setup("validate")
    hp = task.hp
    assert (hp.data_name, hp.data_root, hp.data_palette, hp.data_seed, hp.data_label_fraction) == (
        "folder",
        "/data/x",
        "p.yaml",
        0,
        0.05,
    )
    assert hp.class_colours == [[0, 255, 0], [1, 2, 3]] and hp.data_val_description == "tile 2 (official val)"
    # a datamodule without the newer attributes still works
    task = SegmentationTask()
    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(in_channels=3, num_classes=2, mean=MEAN, std=STD))  # type: ignore[assignment]
    task.setup("validate")
    assert task.hp.data_name is None and task.model is not None


def test_evaluate_uses_the_checkpoint_data_and_states_what_it_scored(
    folder_run: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, _ = folder_run
    out = tmp_path / "eval"
    args = ["--checkpoint", str(ckpt), "--split", "all", "--window", "32", "--device", "cpu", "--output_dir", str(out)]
    assert evaluate_main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_names"] == NAMES and metrics["settings"]["dataset"] == "folder"
    assert metrics["checkpoint"]["kind"] == "best-by-val" and metrics["checkpoint"]["name"] == ckpt.name
    assert metrics["checkpoint"]["selected_on"]["description"] == "carved from train: 1 of 8 tiles, seed 3"
    assert metrics["settings"]["precision"] == "32-true"
    text = (out / "metrics.md").read_text()
    assert ckpt.name in text and "best val/mIoU on carved from train" in text and "optimistic" in text
    card = json.loads((ckpt.parent.parent / "model.json").read_text())
    assert card["dataset"] == "folder" and card["all_metrics"]["mIoU"] == pytest.approx(metrics["mIoU"])


def test_evaluate_refuses_a_dataset_with_other_classes(
    folder_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, _ = folder_run
    args = ["--checkpoint", str(ckpt), "--dataset", "dubai", "--root", "data/dubai_aerial", "--device", "cpu"]
    assert evaluate_main([*args, "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "2 classes" in err and "5 classes" in err and "leave out --dataset" in err
    assert evaluate_main(["--checkpoint", str(ckpt), "--dataset", "dubai", "--device", "cpu"]) == 2
    assert "give --root" in capsys.readouterr().err


def test_old_checkpoint_falls_back_with_a_warning(tmp_path: Path) -> None:
    from falsecl.inference.checkpoint import load_task, resolve_data

    task = load_task(save_checkpoint(tmp_path / "old.ckpt"), "cpu")
    with pytest.warns(UserWarning, match="does not record its training data"):
        assert resolve_data(task, None, None, None, None) == ("dubai", "data/dubai_aerial", None, None)


def write_tif(path: Path, seed: int, size: int = 40) -> None:
    data = np.random.default_rng(seed).integers(0, 255, size=(3, size, size), dtype=np.uint8)
    with rasterio.open(
        path, "w", driver="GTiff", height=size, width=size, count=3, dtype="uint8", crs=CRS.from_epsg(32640),
        transform=from_origin(seed * size, 0, 1, 1),
    ) as dst:  # fmt: skip
        dst.write(data)


def test_predict_many_inputs_one_model_bad_file_reported(
    folder_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, _ = folder_run
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for i in range(2):
        write_tif(tiles / f"t{i}.tif", i)
    (tiles / "broken.tif").write_text("not a raster")
    out = tmp_path / "maps"
    base = ["--checkpoint", str(ckpt), "--window", "32", "--device", "cpu", "--progress", "false"]
    code = predict_main([*base, "--input", str(tiles), "--output_dir", str(out), "--preview", "true",
                         "--confidence", "true"])  # fmt: skip
    assert code == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.err and "broken.tif" in captured.err and "1 of 3 inputs failed" in captured.err
    assert captured.out.count("MP/s") == 2
    for stem in ("t0", "t1"):
        with rasterio.open(out / f"{stem}_classes.tif") as ds:
            assert [list(ds.colormap(1)[i][:3]) for i in range(2)] == COLOURS
        assert (out / f"{stem}_confidence.tif").is_file() and (out / f"{stem}_preview.png").is_file()
        assert "<Category>road</Category>" in (out / f"{stem}_classes.tif.aux.xml").read_text()
    assert not (out / "broken_classes.tif").exists()
    # several files and a glob; the same file twice counts once
    assert collect_inputs([str(tiles / "t0.tif"), str(tiles / "t*.tif")]).files == [tiles / "t0.tif", tiles / "t1.tif"]
    out2 = tmp_path / "maps2"
    assert (
        predict_main([*base, "--input", str(tiles / "t0.tif"), str(tiles / "t1.tif"), "--output_dir", str(out2)]) == 0
    )
    assert sorted(p.name for p in out2.glob("*.tif")) == ["t0_classes.tif", "t1_classes.tif"]
    assert predict_main([*base, "--input", str(tiles / "t*.tif"), "--output", str(tmp_path / "x.tif")]) == 2
    assert "--output_dir" in capsys.readouterr().err


def test_predict_a_vrt_mosaic(folder_run: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, _ = folder_run
    for i in range(2):
        write_tif(tmp_path / f"t{i}.tif", i)
    vrt = tmp_path / "mosaic.vrt"
    tiles = [str(tmp_path / "t0.tif"), str(tmp_path / "t1.tif")]
    subprocess.run([gdal_tool("gdalbuildvrt"), "-q", str(vrt), *tiles], check=True)
    args = ["--checkpoint", str(ckpt), "--input", str(vrt), "--output", str(tmp_path / "m.tif"), "--device", "cpu"]
    with pytest.warns(UserWarning, match="declares no nodata: gaps between its sources"):
        assert predict_main([*args, "--window", "32", "--progress", "false"]) == 0
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert (ds.width, ds.height) == (80, 40)
    # declared, the gaps are nodata: no warning, and a gap-only region is nodata in the map
    write_tif(tmp_path / "far.tif", 4)  # leaves a gap between x = 80 and 160
    subprocess.run([gdal_tool("gdalbuildvrt"), "-q", "-vrtnodata", "0", "-srcnodata", "0", "-overwrite", str(vrt),
                    *tiles, str(tmp_path / "far.tif")], check=True)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert predict_main([*args, "--window", "32", "--progress", "false", "--overwrite", "true"]) == 0
    assert not [w for w in caught if "declares no nodata" in str(w.message)]
    with rasterio.open(tmp_path / "m.tif") as ds:
        labels = ds.read(1)
    assert labels.shape == (40, 200) and (labels[:, 80:160] == 255).all() and (labels[:, :80] < 2).all()


def test_bf16_autocasts_the_forward_only() -> None:
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.is_autocast_enabled("cpu"))
            return self.conv(x)

    torch.manual_seed(0)
    image = torch.rand(3, 40, 50)
    model = Probe()
    fp32 = SlidingWindowPredictor(model, window=32, precision="32-true").predict_tensor(image)
    bf16 = SlidingWindowPredictor(model, window=32, precision="bf16-mixed").predict_tensor(image)
    assert seen[0] is False and seen[-1] is True
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, atol=0.05, rtol=0.05)
    auto = SlidingWindowPredictor(model, window=32, precision="auto")  # measured (tests/test_precision.py)
    assert auto.precision in ("32-true", "bf16-mixed")
    with pytest.raises(ValueError, match="precision"):
        SlidingWindowPredictor(model, precision="16-mixed")


def test_output_stride_can_change_at_inference(tmp_path: Path) -> None:
    from falsecl.inference.checkpoint import load_task

    path = save_checkpoint(tmp_path / "os16.ckpt")
    os16, os8 = load_task(path, "cpu"), load_task(path, "cpu", output_stride=8)
    assert (os16.hp.output_stride, os8.hp.output_stride) == (16, 8)
    for (name, a), b in zip(os16.state_dict().items(), os8.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # the same weights, only dilations differ
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert os8(x).shape == os16(x).shape == (1, 2, 64, 64)
        assert not torch.allclose(os8(x), os16(x))


def test_batch_predict_reports_what_matches_nothing_and_skips_its_own_outputs(
    folder_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, _ = folder_run
    tiles, empty = tmp_path / "tiles", tmp_path / "empty"
    tiles.mkdir()
    empty.mkdir()
    for i in range(2):
        write_tif(tiles / f"t{i}.tif", i)
    base = ["--checkpoint", str(ckpt), "--window", "32", "--device", "cpu", "--progress", "false"]
    inputs = [str(tiles / "t0.tif"), str(tmp_path / "nomatch*.tif"), str(empty)]
    code = predict_main([*base, "--input", *inputs, "--output_dir", str(tiles), "--probabilities", "true"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert f"FAILED {tmp_path / 'nomatch*.tif'}: no file matches" in captured.err
    assert f"FAILED {empty}: folder {empty} holds no raster" in captured.err and "2 of 3 inputs failed" in captured.err
    assert (tiles / "t0_classes.tif").is_file() and (tiles / "t0_probabilities.tif").is_file()
    # the folder now holds the outputs too: they are skipped, by their tags, and listed
    assert predict_main([*base, "--input", str(tiles), "--output_dir", str(tiles), "--overwrite", "true"]) == 0
    err = capsys.readouterr().err
    assert f"skipped {tiles / 't0_classes.tif'}: a falsecl classes output" in err
    assert f"skipped {tiles / 't0_probabilities.tif'}: a falsecl probabilities output" in err
    assert sorted(p.name for p in tiles.glob("*.tif")) == [
        "t0.tif", "t0_classes.tif", "t0_probabilities.tif", "t1.tif", "t1_classes.tif"
    ]  # fmt: skip
    # nothing at all to predict: exit 1, each item named
    assert predict_main([*base, "--input", str(empty), "--output_dir", str(tmp_path / "o")]) == 1
    assert "nothing to predict" in capsys.readouterr().err


def test_evaluate_says_when_held_out_data_was_used(
    folder_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import falsecl.inference.evaluation as evaluation

    ckpt, _ = folder_run
    load = evaluation.load_task

    def load_flagged(*args: object, **kwargs: object) -> SegmentationTask:
        task = load(*args, **kwargs)  # type: ignore[arg-type]
        task.hparams["allow_held_out"] = True  # as fine-tuning with --allow_held_out records it
        return task

    args = ["--checkpoint", str(ckpt), "--split", "all", "--window", "32", "--device", "cpu", "--max_images", "1"]
    assert evaluate_main([*args, "--output_dir", str(tmp_path / "plain")]) == 0
    assert "held-out data" not in (tmp_path / "plain" / "metrics.md").read_text()
    monkeypatch.setattr(evaluation, "load_task", load_flagged)
    assert evaluate_main([*args, "--output_dir", str(tmp_path / "flagged")]) == 0
    text = (tmp_path / "flagged" / "metrics.md").read_text()
    assert "held-out data was used for training/selection (--allow_held_out)" in text
    assert json.loads((tmp_path / "flagged" / "metrics.json").read_text())["settings"]["allow_held_out"] is True
