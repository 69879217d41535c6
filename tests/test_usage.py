"""Mistyped options: one line with the nearest option, for every command (issue 21, items 3 and 9)."""

from pathlib import Path

import pytest

from falsecl.usage import did_you_mean, unknown_option_message

REPO = Path(__file__).resolve().parents[1]
SMOKE_PRE = str(REPO / "configs" / "pretrain" / "smoke.yaml")
SMOKE_FT = str(REPO / "configs" / "finetune" / "smoke.yaml")


def test_did_you_mean_on_names_and_last_components() -> None:
    known = ["--data.roots", "--data.root", "--data.batch_size", "--trainer.max_steps", "--checkpoint"]
    assert did_you_mean("--data.bach_size", known) == "--data.batch_size"
    assert did_you_mean("--data.rootz", known) in {"--data.roots", "--data.root"}
    assert did_you_mean("--max_steps", known) == "--trainer.max_steps"  # the component after the dot
    assert did_you_mean("--checkpont", known) == "--checkpoint"
    assert did_you_mean("--zzzz", known) is None
    assert did_you_mean("--data.roots", ["--data.roots"]) is None  # never itself


def test_unknown_option_message() -> None:
    known = ["--data.batch_size", "--name"]
    msg = unknown_option_message("unrecognized arguments: --data.bach_size 4 --nmae=x", known)
    assert msg == (
        "unknown option --data.bach_size; did you mean --data.batch_size?; unknown option --nmae; did you mean --name?"
    )
    assert unknown_option_message("something else", known) == "something else"


def _short_error(err: str, typo: str, fix: str) -> None:
    assert f"unknown option {typo}; did you mean {fix}?" in err
    assert len(err.strip().splitlines()) <= 3, err  # no usage dump


def test_pretrain_mistyped_option(capsys: pytest.CaptureFixture[str]) -> None:
    from falsecl.cli.pretrain import main

    assert main(["--config", SMOKE_PRE, "--data.bach_size", "4", "--print_config"]) == 2
    _short_error(capsys.readouterr().err, "--data.bach_size", "--data.batch_size")


def test_finetune_mistyped_option(capsys: pytest.CaptureFixture[str]) -> None:
    from falsecl.cli.finetune import main

    assert main(["--config", SMOKE_FT, "--data.label_fractoin", "0.1", "--print_config"]) == 2
    _short_error(capsys.readouterr().err, "--data.label_fractoin", "--data.label_fraction")


def test_evaluate_predict_benchmark_mistyped_option(capsys: pytest.CaptureFixture[str]) -> None:
    from falsecl.cli.benchmark import main as benchmark_main
    from falsecl.cli.inference import evaluate_main, predict_main

    assert evaluate_main(["--checkpont", "runs/x"]) == 2
    _short_error(capsys.readouterr().err, "--checkpont", "--checkpoint")
    assert predict_main(["--checkpoint", "runs/x", "--inptu", "a.tif"]) == 2
    _short_error(capsys.readouterr().err, "--inptu", "--input")
    assert benchmark_main(["--config", str(REPO / "configs/benchmark/quick_dubai.yaml"), "--dry_rn", "true"]) == 2
    _short_error(capsys.readouterr().err, "--dry_rn", "--dry_run")
