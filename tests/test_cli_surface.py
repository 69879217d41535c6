"""The command line's surface stays put: every option (with its type and default) and the files a run writes.

``tests/data/cli_surface.json`` is the record; regenerate it deliberately with
``FALSECL_UPDATE_GOLDEN=1 pytest tests/test_cli_surface.py`` when a command is meant to change.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from falsecl.cli import main

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "cli_surface.json"
DUBAI = ROOT / "data" / "dubai_aerial"
UPDATE = os.environ.get("FALSECL_UPDATE_GOLDEN") == "1"

COMMANDS = [
    ["pretrain"],
    ["finetune"],
    ["evaluate"],
    ["predict"],
    ["export"],
    ["data"],
    ["data", "check"],
    ["data", "plot"],
    ["benchmark"],
]


def _golden() -> dict[str, object]:
    return json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}


def _compare(key: str, got: object) -> None:
    record = _golden()
    if UPDATE:
        record[key] = got
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    assert key in record, f"no record for {key!r}; run with FALSECL_UPDATE_GOLDEN=1 once"
    assert got == record[key]


def _help(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code: int | str | None
    with contextlib.redirect_stdout(out):
        try:
            code = main([*argv, "--help"])
        except SystemExit as exit_:
            code = exit_.code
    return int(code or 0), out.getvalue()


def options_of(text: str) -> dict[str, str]:
    """``--flag -> "(type: ..., default: ...)"`` of every option entry of an argparse help text."""
    entries: list[list[str]] = []
    for line in text.splitlines():
        if re.match(r"^  (-|\{|[a-z])", line):  # options, then positionals and subcommands
            entries.append([line.strip()])
        elif entries and entries[-1] and line.startswith("    ") and line.strip():
            entries[-1].append(line.strip())
        elif not line.startswith("    "):
            entries.append([]) if entries and entries[-1] else None
    options: dict[str, str] = {}
    for entry in filter(None, entries):
        joined = " ".join(entry)
        head = joined.split("  ")[0]
        flags = re.findall(r"(?:^|, )(--?[\w.+-]+)", head) if head.startswith("-") else [head.split()[0]]
        # The subclasses a help lists depend on what was imported before; the type and default do not.
        detail = re.sub(r", known subclasses: [^)]*", "", joined)
        found = re.search(r"\(((?:required, )?type: .*)\)\s*$", detail)
        for flag in flags:
            options[flag] = found.group(1) if found else ""
    return options


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_help_options_unchanged(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per entry: wrapping depends on the terminal
    code, text = _help(argv)
    assert code == 0
    options = options_of(text)
    assert "--help" in options
    usage = " ".join(text.split("\n\n")[0].split())  # positionals and subcommands too
    _compare(" ".join(argv), {"usage": usage, "options": options})


def test_top_level_commands_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    lines = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    _compare("falsecl", lines)


def _tree(root: Path) -> list[str]:
    """Files under ``root``, relative, with the host- and time-stamped TensorBoard event names masked."""
    names = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        names.append(re.sub(r"events\.out\.tfevents\..*$", "events.out.tfevents.*", rel))
    return sorted(names)


@pytest.mark.skipif(not (DUBAI / "Tile 1").is_dir(), reason="vendored Dubai data not present")
def test_smoke_runs_write_the_same_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the smoke configs' data roots are relative to the repository
    pre, runs = tmp_path / "pre", tmp_path / "runs"
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "height": 40, "width": 50, "count": 3, "dtype": "uint8"}
    for i in range(2):
        with rasterio.open(
            images / f"img{i}.tif", "w", crs=CRS.from_epsg(32640), transform=from_origin(0, 0, 1, 1), **profile
        ) as dst:
            dst.write(rng.integers(0, 256, (3, 40, 50), dtype=np.uint8))
    pretrain = [
        "pretrain", "--config", "configs/pretrain/smoke.yaml", f"--trainer.default_root_dir={pre}",
        f"--data.roots=[{images}]", "--data.patch_size=32", "--data.crop_size=24", "--trainer.max_steps=1",
        "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    assert main(pretrain) == 0
    finetune = ["finetune", "--config", "configs/finetune/smoke.yaml", "--runs_dir", str(runs)]
    assert main([*finetune, "--model.backbone_weights", str(pre / "backbone.pt")]) == 0
    run = runs / "smoke"
    common = ["--checkpoint", str(run), "--window", "64", "--device", "cpu", "--progress", "false"]
    assert main(["evaluate", *common, "--split", "val", "--max_images", "1"]) == 0
    maps = tmp_path / "maps"
    inputs = [str(images / "img0.tif"), str(images / "img1.tif")]
    assert main(["predict", *common, "--input", *inputs, "--output_dir", str(maps), "--preview", "true"]) == 0
    export = ["export", "--checkpoint", str(run), "--opset", "17", "--height", "32", "--width", "32"]
    assert main([*export, "--dynamic", "false"]) == 0
    card = json.loads((run / "model.json").read_text())
    _compare(
        "smoke files",
        {
            "pretrain": _tree(pre),
            "finetune": [re.sub(r"best-epoch\d+-step\d+", "best-*", n) for n in _tree(run)],
            "predict": _tree(maps),
            "model card keys": sorted(card),
        },
    )
