"""Data type and value range: recorded at fine-tuning, checked by predict (issue 17, item 3)."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning
import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import from_origin

from falsecl.cli.inference import predict_main
from falsecl.datasets.stats import value_range
from falsecl.inference.input_check import (
    InputMismatchError,
    ValueRange,
    check_value_range,
    sample_value_range,
    training_range,
)
from falsecl.tasks.segmentation import SegmentationTask
from tests.data.checkpoints import write_checkpoint

MEAN, STD = [120.0, 110.0, 100.0], [50.0, 45.0, 40.0]
TRAINED = [[12.0, 230.0], [10.0, 220.0], [8.0, 210.0]]


class Patches:
    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays)

    def read_image(self, index: int) -> np.ndarray:
        return self.arrays[index]


def test_value_range_is_the_dtype_and_percentiles_of_the_raw_pixels() -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 4096, size=(2, 16, 16), dtype=np.uint16) for _ in range(5)]
    dtype, ranges = value_range(Patches(arrays), max_patches=5)
    pixels = np.concatenate([a.reshape(2, -1) for a in arrays], axis=1).astype(np.float64)
    assert dtype == "uint16"
    np.testing.assert_allclose(ranges, np.percentile(pixels, [1, 99], axis=1).T)


class MaskedPatches(Patches):
    """Patches with a validity mask (as the pretraining pool has): the left half is nodata fill."""

    def read_valid(self, index: int) -> np.ndarray:
        valid = np.ones(self.arrays[index].shape[1:], bool)
        valid[:, : valid.shape[1] // 2] = False
        return valid


def test_value_range_ignores_invalid_pixels() -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 4096, size=(2, 16, 16), dtype=np.uint16) for _ in range(5)]
    for a in arrays:
        a[:, :, :8] = 65535  # nodata under the mask
    dtype, ranges = value_range(MaskedPatches(arrays), max_patches=5)
    pixels = np.concatenate([a[:, :, 8:].reshape(2, -1) for a in arrays], axis=1).astype(np.float64)
    assert dtype == "uint16" and max(hi for _, hi in ranges) < 4096
    np.testing.assert_allclose(ranges, np.percentile(pixels, [1, 99], axis=1).T)


def test_the_task_records_it_from_the_datamodule() -> None:
    dm = SimpleNamespace(in_channels=3, num_classes=2, mean=MEAN, std=STD, input_dtype="uint8", input_range=TRAINED)
    task = SegmentationTask()
    task._trainer = SimpleNamespace(datamodule=dm)  # type: ignore[assignment]
    task.setup("fit")
    assert task.hp.data_dtype == "uint8" and task.hp.data_value_range == TRAINED
    assert training_range(task.hp) == ValueRange("uint8", [12.0, 10.0, 8.0], [230.0, 220.0, 210.0])


def test_check_names_both_and_the_ways_on() -> None:
    trained = ValueRange("uint8", [12.0, 10.0, 8.0], [230.0, 220.0, 210.0])
    same = ValueRange("uint8", [20.0, 15.0, 9.0], [250.0, 255.0, 200.0])
    assert check_value_range("a.tif", same, trained) == []
    x40 = ValueRange("uint16", [480.0, 400.0, 320.0], [9200.0, 8800.0, 8400.0])
    with pytest.raises(InputMismatchError) as err:
        check_value_range("a.tif", x40, trained)
    text = str(err.value)
    for part in ("a.tif", "uint16", "uint8", "band 1 480-9200", "band 1 12-230", "--input_scale 0.025",
                 "--allow_range_mismatch true", "band(s) [1, 2, 3]"):  # fmt: skip
        assert part in text, part
    assert check_value_range("a.tif", x40, trained, input_scale=1 / 40) == []
    # same data type, values far outside (reflectance 0-10000 on a model trained on 0-1 floats)
    floats = ValueRange("float32", [0.01] * 3, [0.4] * 3)
    with pytest.raises(InputMismatchError, match="far outside"):
        check_value_range("r.tif", ValueRange("float32", [100.0] * 3, [4000.0] * 3), floats)
    assert check_value_range("r.tif", ValueRange("float32", [100.0] * 3, [4000.0] * 3), floats, allow_mismatch=True)
    # nothing recorded (older checkpoint): a warning, no refusal
    with pytest.warns(UserWarning, match="does not record its training data type"):
        assert training_range({"mean": MEAN}) is None
    assert check_value_range("a.tif", x40, None) == []


def write(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    with rasterio.open(
        path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0], dtype=data.dtype,
        crs=CRS.from_epsg(32640), transform=from_origin(0, 0, 1, 1), nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


def test_sample_range_uses_valid_pixels_only(tmp_path: Path) -> None:
    data = np.full((3, 50, 60), 100, dtype=np.uint16)
    data[:, :, :30] = 65535  # nodata
    data[:, 10:20, 40:50] = 200
    with rasterio.open(write(tmp_path / "a.tif", data, nodata=65535)) as src:
        got = sample_value_range(src, [1, 2, 3])
    assert got is not None and got.dtype == "uint16"
    assert got.low == [100.0] * 3 and got.high == [200.0] * 3


@pytest.fixture(scope="module")
def uint8_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    task = SegmentationTask(
        in_channels=3, num_classes=3, mean=MEAN, std=STD, output_stride=16, data_dtype="uint8",
        data_value_range=TRAINED,
    )  # fmt: skip
    return write_checkpoint(task, tmp_path_factory.mktemp("run") / "checkpoints" / "last.ckpt")


def test_predict_refuses_a_16_bit_scene_on_an_8_bit_model(
    uint8_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scene8 = np.random.default_rng(0).integers(10, 230, size=(3, 48, 48), dtype=np.uint8)
    write(tmp_path / "s8.tif", scene8)
    write(tmp_path / "s16.tif", scene8.astype(np.uint16) * 40)
    base = ["--checkpoint", str(uint8_checkpoint), "--window", "32", "--device", "cpu", "--progress", "false"]
    base += ["--precision", "32-true"]
    assert predict_main([*base, "--input", str(tmp_path / "s16.tif"), "--output", str(tmp_path / "m16.tif")]) == 2
    err = capsys.readouterr().err
    assert "s16.tif" in err and "uint16" in err and "uint8" in err and "--input_scale 0.0" in err
    assert "--allow_range_mismatch true" in err
    assert not (tmp_path / "m16.tif").exists()
    # rescaled, the 16-bit scene gives the 8-bit scene's map
    argv = ["--input", str(tmp_path / "s16.tif"), "--output", str(tmp_path / "m16.tif"), "--input_scale", "0.025"]
    assert predict_main([*base, *argv]) == 0
    assert predict_main([*base, "--input", str(tmp_path / "s8.tif"), "--output", str(tmp_path / "m8.tif")]) == 0
    with rasterio.open(tmp_path / "m16.tif") as a, rasterio.open(tmp_path / "m8.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    # or predicted as it is, on request, with a warning
    argv = ["--input", str(tmp_path / "s16.tif"), "--output", str(tmp_path / "mx.tif")]
    argv += ["--allow_range_mismatch", "true"]
    with pytest.warns(UserWarning, match="not the kind of data"):
        assert predict_main([*base, *argv]) == 0


def test_predict_with_an_old_checkpoint_warns_and_proceeds(tmp_path: Path) -> None:
    task = SegmentationTask(in_channels=3, num_classes=3, mean=MEAN, std=STD, output_stride=16)
    path = tmp_path / "old.ckpt"
    hparams = {k: v for k, v in task.hparams.items() if k not in ("data_dtype", "data_value_range")}
    payload = {"state_dict": task.state_dict(), "hyper_parameters": hparams}
    torch.save({**payload, "pytorch-lightning_version": lightning.__version__}, path)
    write(tmp_path / "s.tif", np.zeros((3, 32, 32), dtype=np.uint16))
    argv = ["--checkpoint", str(path), "--input", str(tmp_path / "s.tif"), "--output", str(tmp_path / "m.tif")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert predict_main([*argv, "--window", "32", "--device", "cpu", "--progress", "false"]) == 0
    assert any("does not record its training data type" in str(w.message) for w in caught)
