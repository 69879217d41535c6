"""docs/your_own_data.md, run as written on tiny generated data (issue 21): scenes, a labelled folder, a map.

The commands are read from the page's ``bash`` blocks; each gets only size overrides (tiny patches, two steps)
appended, so a command that breaks in the docs breaks here.
"""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.data.fake_layouts import class_map, colour_mask, rgb_image, write_geotiff, write_png

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "your_own_data.md"

#: Appended to each command: tiny sizes and two steps (the page's commands use the CPU presets as they are).
TINY = {
    "pretrain": ["--data.patch_size", "32", "--data.crop_size", "24", "--data.batch_size", "4",
                 "--data.num_workers", "0", "--data.stats_patches", "8", "--trainer.max_epochs", "1",
                 "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false"],
    "finetune": ["--data.patch_size", "32", "--data.crop_size", "32", "--data.batch_size", "2",
                 "--data.num_workers", "0", "--data.stats_patches", "4", "--trainer.max_steps", "2",
                 "--trainer.limit_val_batches", "1", "--model.output_stride", "16",
                 "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"],
    "evaluate": ["--window", "64", "--device", "cpu", "--progress", "false"],
    "predict": ["--window", "64", "--device", "cpu", "--progress", "false"],
    "data": [],
}  # fmt: skip


def page_commands() -> list[list[str]]:
    """The ``falsecl`` commands of the page's ``bash`` blocks, continuations joined, split as a shell would."""
    blocks = re.findall(r"```bash\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.DOTALL)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [shlex.split(line)[1:] for line in text.splitlines() if line.strip().startswith("falsecl ")]


def make_project(folder: Path) -> None:
    """Two 96 x 96 GeoTIFF scenes (one with a nodata border) and a labelled folder with the page's palette."""
    for i in range(2):
        image = rgb_image(96, 96, 10 + i).transpose(2, 0, 1).copy()
        if i == 1:
            image[:, :, :8] = 0
        path = write_geotiff(folder / "data" / "scenes" / f"scene{i}.tif", image)
        if i == 1:
            with rasterio.open(path, "r+") as dst:
                dst.nodata = 0
    labelled = folder / "data" / "labelled"
    palette = re.search(r"```yaml\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert palette is not None
    (labelled / "palette.yaml").parent.mkdir(parents=True, exist_ok=True)
    (labelled / "palette.yaml").write_text(palette.group(1))
    colours = [(0, 255, 0), (128, 128, 128), (0, 0, 255), (0, 0, 0)]
    for i in range(5):
        split = "test" if i == 4 else "train"
        write_geotiff(labelled / split / "images" / f"img{i}.tif", rgb_image(64, 64, i).transpose(2, 0, 1).copy())
        write_png(labelled / split / "masks" / f"img{i}.png", colour_mask(class_map(64, 64, 4, i), colours))


def test_the_walkthrough_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from falsecl.cli import main

    commands = page_commands()
    assert [c[0] for c in commands] == ["data", "pretrain", "finetune", "evaluate", "predict"]
    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    for args in commands:
        args = [str(REPO / a) if a.startswith("configs/") else a for a in args]
        code = main([*args, *TINY[args[0]]])
        captured = capsys.readouterr()
        assert code == 0, f"falsecl {' '.join(args)}\n{captured.err[-3000:]}"
        if args[0] == "data":
            assert "carved out for validation" in captured.out
        if args[0] == "pretrain":
            assert "pretraining source folder-train" in captured.err and "folder0-scenes" in captured.err
    scene, classes = tmp_path / "data" / "scenes" / "scene0.tif", tmp_path / "scene0_classes.tif"
    with rasterio.open(classes) as src, rasterio.open(scene) as ref:
        assert (src.width, src.height, src.crs, src.transform) == (ref.width, ref.height, ref.crs, ref.transform)
        assert int(np.max(src.read(1))) < 4
    assert (tmp_path / "scene0_preview.png").is_file()
    assert (tmp_path / "runs" / "my_model" / "eval-test" / "metrics.json").is_file()
    pretrain_list = (tmp_path / "runs" / "my_pretrain" / "pretrain_images.txt").read_text()
    assert "img4" not in pretrain_list  # the test image never enters pretraining
