"""``falsecl export``: ONNX Runtime reproduces PyTorch's logits and the file describes itself."""

from __future__ import annotations

from pathlib import Path

import lightning
import numpy as np
import onnxruntime as ort
import pytest
import torch

from falsecl.cli import main as cli_main
from falsecl.export import export, read_onnx_metadata
from falsecl.inference.checkpoint import run_folder
from falsecl.model_card import read_model_card, update_model_card
from falsecl.tasks.segmentation import SegmentationTask

NAMES = ["building", "road", "water"]
MEAN, STD = [100.0, 90.0, 80.0, 70.0], [30.0, 25.0, 20.0, 15.0]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 4-band, 3-class fine-tuning run folder with a model card."""
    torch.manual_seed(0)
    task = SegmentationTask(in_channels=4, num_classes=3, mean=MEAN, std=STD, class_names=NAMES)
    for module in task.modules():  # non-trivial batch-norm statistics, so eval-mode export matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    root = tmp_path_factory.mktemp("runs") / "ft"
    (root / "checkpoints").mkdir(parents=True)
    payload = {
        "state_dict": task.state_dict(),
        "hyper_parameters": dict(task.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(payload, root / "checkpoints" / "last.ckpt")
    update_model_card(root, {"dataset": {"name": "fake"}, "class_colours": [[255, 0, 0], [0, 0, 0], [0, 0, 255]]})
    return root


def test_dynamic_export_matches_pytorch_and_carries_metadata(run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "model.onnx"
    assert cli_main(["export", "--checkpoint", str(run), "--output", str(out), "--height", "64", "--width", "64"]) == 0
    printed = capsys.readouterr().out
    assert "max |ONNX - PyTorch| logits" in printed
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # one file, no temporary or external data
    meta = read_onnx_metadata(out)
    assert meta["class_names"] == NAMES and meta["mean"] == MEAN and meta["std"] == STD
    assert meta["class_colours"] == [[255, 0, 0], [0, 0, 0], [0, 0, 255]]  # from the model card
    assert meta["in_channels"] == 4 and meta["num_classes"] == 3 and meta["dataset"] == "fake"
    assert meta["model_card"]["dataset"] == {"name": "fake"}
    assert read_model_card(run)["onnx"]["path"] == str(out)  # the run's card records the export
    # An independent check: raw pixels normalised with the file's own statistics, at a size never exported.
    task = SegmentationTask.load_from_checkpoint(run / "checkpoints" / "last.ckpt").eval()
    raw = torch.rand(3, 4, 48, 80) * 255
    x = (raw - torch.tensor(meta["mean"])[:, None, None]) / torch.tensor(meta["std"])[:, None, None]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        want = task(x).numpy()
    assert got.shape == (3, 3, 48, 80)
    assert float(np.abs(got - want).max()) <= 1e-4


def test_fixed_size_opset17_export(run: Path, tmp_path: Path) -> None:
    result = export(str(run / "checkpoints" / "last.ckpt"), None, opset=17, height=32, width=48, dynamic=False)
    assert result["output"] == str(run / "model.onnx")  # default: next to the run's checkpoints
    assert result["opset"] == 17 and result["max_abs_diff"] <= 1e-4
    inputs = ort.InferenceSession(result["output"], providers=["CPUExecutionProvider"]).get_inputs()
    assert inputs[0].name == "image" and inputs[0].shape == [1, 4, 32, 48]


def test_bad_arguments_and_failed_check_leave_no_file(run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert cli_main(["export", "--checkpoint", str(run), "--output", str(out), "--height", "50"]) == 2
    assert "multiples of 16" in capsys.readouterr().err
    assert cli_main(["export", "--checkpoint", str(tmp_path / "none"), "--output", str(out)]) == 2
    with pytest.raises(ValueError, match="was not written"):  # an impossible tolerance fails the check
        export(str(run), str(out), height=32, width=32, dynamic=False, tolerance=-1.0)
    assert not list(tmp_path.iterdir())


def test_run_folder(tmp_path: Path) -> None:
    assert run_folder(tmp_path / "ft" / "checkpoints" / "last.ckpt") == tmp_path / "ft"
    assert run_folder(tmp_path / "model.ckpt") is None


def test_metadata_without_a_model_card_comes_from_the_checkpoint(tmp_path: Path) -> None:
    # The checkpoint keeps the data under data_* names; a run without model.json must still say what it was.
    task = SegmentationTask(
        in_channels=4, num_classes=3, mean=MEAN, std=STD, class_names=NAMES, data_name="potsdam",
        data_bands="rgbir", data_dtype="uint8", data_value_range=[[1.0, 250.0]] * 4,
    )  # fmt: skip
    ckpt = tmp_path / "bare" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    payload = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    torch.save({**payload, "pytorch-lightning_version": lightning.__version__}, ckpt)
    assert read_model_card(tmp_path / "bare") == {}
    out = export(str(ckpt), str(tmp_path / "m.onnx"), opset=17, height=32, width=32, dynamic=False, check=False)
    meta = read_onnx_metadata(out["output"])
    assert meta["dataset"] == "potsdam" and meta["bands"] == "rgbir" and meta["model_card"] is None
    assert meta["input_dtype"] == "uint8" and meta["input_value_range"] == [[1.0, 250.0]] * 4
