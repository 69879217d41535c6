"""The benchmark checks every config and data folder at start-up, dry run or not (issue 21, item 4)."""

from pathlib import Path

import pytest
import yaml

from falsecl.cli.benchmark import main

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, **changes: object) -> Path:
    cfg = {
        "output_dir": str(tmp_path / "bench"),
        "methods": [
            {"name": "random_init"},
            {"name": "smoke", "pretrain_config": str(REPO / "configs/pretrain/smoke.yaml")},
        ],
        "finetune_config": str(REPO / "configs/finetune/smoke.yaml"),
        "label_fractions": [0.05],
        "seeds": [0],
    }
    cfg.update(changes)
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.skipif(not (REPO / "data/dubai_aerial/Tile 1").is_dir(), reason="vendored Dubai data missing")
def test_dry_run_prints_the_data_each_method_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the presets' bundled data is found from any folder
    assert main(["--config", str(_config(tmp_path)), "--dry_run", "true"]) == 0
    out = capsys.readouterr().out
    bundled = str((REPO / "data" / "dubai_aerial").resolve())
    assert f"smoke: pretrains ({REPO / 'configs/pretrain/smoke.yaml'}) on folders {bundled}" in out
    assert f"random_init: random initialisation (no pretraining); its probe/fine-tuning cells read dubai at {bundled}" \
        in out
    assert "2 cells" in out and not (tmp_path / "bench").exists()


@pytest.mark.parametrize("dry_run", [True, False])
def test_every_problem_stops_the_start(
    tmp_path: Path, dry_run: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(
        tmp_path,
        methods=[
            {"name": "typo", "pretrain_config": str(REPO / "configs/pretrain/smoke_typo.yaml")},
            {"name": "bad_arg", "pretrain_config": str(REPO / "configs/pretrain/smoke.yaml"),
             "pretrain_args": ["--model.init_args.alhpa", "0.5"]},
            {"name": "no_data", "pretrain_config": str(REPO / "configs/pretrain/smoke.yaml"),
             "pretrain_args": ["--data.roots", "[/no/such/scenes]"]},
        ],
        finetune_config=str(tmp_path / "missing_ft.yaml"),
    )  # fmt: skip
    argv = ["--config", str(cfg), *(["--dry_run", "true"] if dry_run else [])]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "smoke_typo.yaml does not exist" in err
    assert "missing_ft.yaml does not exist" in err
    assert "alhpa" in err
    assert "/no/such/scenes does not exist" in err
    assert not (tmp_path / "bench").exists()  # stopped before anything was written
