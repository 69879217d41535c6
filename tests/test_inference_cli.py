import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import from_origin
from torch import nn

import falsecl.inference.evaluation as evaluation
from falsecl.cli.inference import evaluate_main, predict_main
from falsecl.inference import SlidingWindowPredictor
from falsecl.inference.checkpoint import load_task, make_predictor
from falsecl.inference.evaluation import evaluate_images
from falsecl.tasks.segmentation import SegmentationTask
from tests.data.checkpoints import write_checkpoint

MEAN = [10.0, 20.0, 30.0]
STD = [2.0, 4.0, 5.0]
NAMES = ["building", "land", "road"]


def numpy_confusion(pred: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    keep = target != 255
    return np.bincount(target[keep] * k + pred[keep], minlength=k * k).reshape(k, k)


def samples(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in [(37, 53), (21, 40)]:
        image = torch.rand(3, h, w, generator=g) * 60
        mask = torch.randint(0, 3, (h, w), generator=g)
        mask[torch.rand(h, w, generator=g) < 0.1] = 255
        out.append({"image": image, "mask": mask})
    return out


def test_evaluate_images_matches_naive_reference() -> None:
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
    predictor = SlidingWindowPredictor(conv, window=16, overlap=0.5, mean=MEAN, std=STD)
    data = samples()
    metrics, cm = evaluate_images(predictor, data, 3, NAMES)
    # naive reference: whole-image predictions (the model is exact), numpy confusion over every pixel
    ref = np.zeros((3, 3), dtype=np.int64)
    for s in data:
        norm = (s["image"] - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        ref += numpy_confusion(norm.argmax(0).numpy().ravel(), s["mask"].numpy().ravel(), 3)
    np.testing.assert_array_equal(cm.numpy(), ref)
    assert metrics["pixels"] == ref.sum() == sum(int((s["mask"] != 255).sum()) for s in data)
    iou = np.diag(ref) / (ref.sum(0) + ref.sum(1) - np.diag(ref))
    assert metrics["mIoU"] == pytest.approx(iou.mean())
    assert metrics["OA"] == pytest.approx(np.trace(ref) / ref.sum())
    with pytest.raises(ValueError, match="empty"):
        evaluate_images(predictor, [], 3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    task = SegmentationTask(in_channels=3, num_classes=3, mean=MEAN, std=STD, class_names=NAMES)
    return write_checkpoint(task, tmp_path_factory.mktemp("run") / "checkpoints" / "last.ckpt")


def test_evaluate_main_writes_reports(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = samples(1)
    monkeypatch.setattr(evaluation, "whole_images", lambda *args: data)
    out = tmp_path / "eval"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--window",
        "32",
        "--overlap",
        "0.25",
        "--tta",
        "true",
        "--device",
        "cpu",
        "--output_dir",
        str(out),
    ]
    assert evaluate_main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_names"] == NAMES and metrics["settings"]["tta"] is True
    # the reported confusion matrix is that of the full sliding-window predictions
    task = load_task(checkpoint, "cpu")
    predictor = make_predictor(task, 32, 0.25, "gaussian", True, 8)
    ref = sum(
        numpy_confusion(predictor.predict_tensor(s["image"]).argmax(0).numpy().ravel(), s["mask"].numpy().ravel(), 3)
        for s in data
    )
    np.testing.assert_array_equal(np.array(metrics["confusion_matrix"]), ref)
    assert "| building |" in (out / "metrics.md").read_text()
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def write_tif(path: Path, bands: int) -> None:
    data = np.random.default_rng(0).integers(0, 60, size=(bands, 40, 50), dtype=np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=40,
        width=50,
        count=bands,
        dtype="uint8",
        crs=CRS.from_epsg(32640),
        transform=from_origin(0, 0, 1, 1),
    ) as dst:
        dst.write(data)


def test_predict_main(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.tif"
    write_tif(src, 3)
    base = ["--checkpoint", str(checkpoint), "--window", "32", "--device", "cpu", "--progress", "false"]
    assert (
        predict_main(
            [
                *base,
                "--input",
                str(src),
                "--output",
                str(tmp_path / "out.tif"),
                "--preview",
                str(tmp_path / "out.png"),
            ]
        )
        == 0
    )
    with rasterio.open(tmp_path / "out.tif") as out:
        assert out.crs == CRS.from_epsg(32640) and out.count == 1 and out.dtypes[0] == "uint8"
        assert int(out.read(1).max()) < 3
    assert (tmp_path / "out.png").is_file()
    # refusals: clear one-line message, exit code 2, nothing written
    four = tmp_path / "four.tif"
    write_tif(four, 4)
    assert predict_main([*base, "--input", str(four), "--output", str(tmp_path / "x.tif")]) == 2
    assert "4 band(s) but the model was trained on 3" in capsys.readouterr().err
    (tmp_path / "text.txt").write_text("hello")
    assert predict_main([*base, "--input", str(tmp_path / "text.txt"), "--output", str(tmp_path / "x.tif")]) == 2
    assert "not a raster" in capsys.readouterr().err
    assert predict_main([*base, "--input", str(src), "--output", str(tmp_path / "out.tif")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert predict_main([*base, "--input", str(src), "--output", str(tmp_path / "nodir" / "x.tif")]) == 2
    assert f"folder {tmp_path / 'nodir'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nodir").exists()  # no folder made, nothing written into it
    assert predict_main(["--checkpoint", str(tmp_path / "none.ckpt"), "--input", str(src), "--output", "o.tif"]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    assert predict_main(["--checkpoint", str(tmp_path / "junk.ckpt"), "--input", str(src), "--output", "o.tif"]) == 2
    assert "not a falsecl fine-tuning checkpoint" in capsys.readouterr().err


def test_resolve_checkpoint_accepts_a_run_folder(tmp_path):
    import os

    from falsecl.inference.checkpoint import resolve_checkpoint

    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no best"):
        resolve_checkpoint(tmp_path / "run")
    (ckpts / "last.ckpt").write_text("x")
    assert resolve_checkpoint(tmp_path / "run") == ckpts / "last.ckpt"
    old, new = ckpts / "best-epoch000-step2.ckpt", ckpts / "best-epoch001-step4.ckpt"
    old.write_text("x")
    new.write_text("x")
    os.utime(old, (1, 1))
    assert resolve_checkpoint(tmp_path / "run") == new
    assert resolve_checkpoint(old) == old
    with pytest.raises(FileNotFoundError, match="run folder"):
        resolve_checkpoint(tmp_path / "missing.ckpt")
