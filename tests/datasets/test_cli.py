from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from falsecl.cli.data import main
from falsecl.datasets import PotsdamTiles
from falsecl.datasets.isprs import POTSDAM_TEST

DUBAI = Path(__file__).parents[2] / "data" / "dubai_aerial"


def test_check_prints_counts_and_histogram(tmp_path, fakes, capsys):
    root = fakes.make_potsdam_tiles(tmp_path / "p", tiles=["2_13", "2_14"], size=64)
    assert main(["check", "potsdam", str(root), "--split", "test"]) == 1  # 12 official test tiles missing
    assert "top_potsdam_3_13_RGBIR.tif" in capsys.readouterr().err
    fakes.make_potsdam_tiles(root, tiles=POTSDAM_TEST, size=64)
    assert main(["check", "potsdam", str(root), "--split", "test", "--patch_size", "32"]) == 0
    out = capsys.readouterr().out
    assert "images  : 14" in out and "patches : 56" in out and "64x64 (14)" in out and "4 in files" in out
    rows = [line.split() for line in out.splitlines() if line.strip().endswith("%")]
    assert [r[0] for r in rows] == [*PotsdamTiles.classes, "ignore"]
    assert sum(int(r[1].replace(",", "")) for r in rows) == 14 * 64 * 64


def test_check_bad_data_exits_nonzero_with_message(tmp_path, fakes, capsys):
    root = fakes.make_dubai(tmp_path / "d", tiles=[2])
    mask = np.zeros((48, 64, 3), np.uint8)
    mask[0, 0] = (9, 9, 9)
    Image.fromarray(mask).save(root / "Tile 2/masks/image_part_001.png")
    assert main(["check", "dubai", str(root), "--split", "val"]) == 1
    err = capsys.readouterr().err
    assert "image_part_001.png" in err and "(9,9,9) x 1 px" in err
    assert main(["check", "dubai", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_plot_writes_png(tmp_path, fakes):
    root = fakes.make_folder(tmp_path / "f")
    out = tmp_path / "grid.png"
    assert main(["plot", "folder", str(root), "--patch_size", "32", "--num", "2", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 100
    assert main(["plot", "unlabeled", str(root / "images"), "--patch_size", "32", "--out", str(out)]) == 0


@pytest.mark.skipif(not DUBAI.is_dir(), reason="vendored Dubai data not present")
def test_real_dubai_val_tile_every_colour_known(capsys):
    """Tile 2 of the vendored data: every mask pixel maps to a known colour; class shares are plausible."""
    assert main(["check", "dubai", str(DUBAI), "--split", "val"]) == 0
    out = capsys.readouterr().out
    shares = {
        line.split()[0]: float(line.split()[2]) for line in out.splitlines() if line.strip().endswith("%")
    }
    assert set(shares) == {"building", "land", "road", "vegetation", "water", "ignore"}
    assert abs(sum(shares.values()) - 100) < 0.1 and shares["land"] > 30 and shares["ignore"] < 5
