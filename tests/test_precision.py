"""``--precision auto``: bf16 mixed precision where the hardware runs it natively, fp32 elsewhere."""

from pathlib import Path

import pytest
import torch

import falsecl.precision as precision
from falsecl.cli import finetune as finetune_cli
from falsecl.cli import pretrain as pretrain_cli
from falsecl.precision import resolve_precision, trainer_precision

REPO = Path(__file__).parents[1]


@pytest.mark.parametrize("native, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_follows_the_cpu(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("32-true", "cpu") == "32-true" and resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_explicit_trainer_precision_wins_and_bad_values_are_refused():
    assert trainer_precision("auto", "32-true", "cpu") is None  # Lightning keeps --trainer.precision
    assert trainer_precision(None, None, "cpu") is None
    with pytest.raises(ValueError, match="--precision must be one of auto"):
        trainer_precision("fp8", None, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_on_a_bf16_gpu():
    assert resolve_precision("auto", "gpu") == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true")


def test_auto_training_is_bf16_on_bf16_gpus_and_fp32_on_cpus(monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert resolve_precision("auto", "cpu", training=True) == "32-true"  # bf16 backward measured slower on CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "gpu", training=True) == "bf16-mixed"
    assert trainer_precision("auto", None, "gpu") == "bf16-mixed"
    assert trainer_precision("bf16-mixed", None, "cpu") == "bf16-mixed"  # forcing bf16 still works


@pytest.mark.parametrize("native, expected", [(True, "32-true"), (False, "32-true")])
def test_pretrain_trainer_gets_the_resolved_precision(monkeypatch, tmp_path, native, expected):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: native)
    cli = pretrain_cli._build_cli(
        ["--config", str(REPO / "configs/pretrain/smoke.yaml"), "--precision", "auto",
         "--trainer.default_root_dir", str(tmp_path)]
    )
    assert cli.trainer.precision == expected
    explicit = pretrain_cli._build_cli(
        ["--config", str(REPO / "configs/pretrain/smoke.yaml"), "--precision", "auto",
         "--trainer.precision", "32-true", "--trainer.default_root_dir", str(tmp_path)]
    )
    assert explicit.trainer.precision == "32-true"


def test_finetune_trainer_gets_the_resolved_precision(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    seen = []
    monkeypatch.setattr(finetune_cli.Trainer, "fit", lambda self, *a, **k: seen.append(self.precision))
    for value, run in (("auto", "a"), ("bf16-mixed", "b")):
        code = finetune_cli.main(
            ["--config", str(REPO / "configs/finetune/smoke.yaml"), "--precision", value,
             "--trainer.default_root_dir", str(tmp_path / run)]
        )
        assert code == 0
    assert seen == ["32-true", "bf16-mixed"]


@pytest.mark.parametrize("form", [["--trainer.precision", "auto"], ["--trainer.precision=auto"]])
def test_trainer_precision_auto_is_accepted_and_resolved(monkeypatch, tmp_path, form):
    # Lightning itself refuses "auto"; on a CPU it resolves to 32-true for training (bf16 backward measured slower).
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert precision.trainer_auto_to_precision(["--x", "1", *form]) == ["--x", "1", "--precision", "auto"]
    cli = pretrain_cli._build_cli(
        ["--config", str(REPO / "configs/pretrain/smoke.yaml"), *form, "--trainer.default_root_dir", str(tmp_path)]
    )
    assert cli.trainer.precision == "32-true"
    seen = []
    monkeypatch.setattr(finetune_cli.Trainer, "fit", lambda self, *a, **k: seen.append(self.precision))
    code = finetune_cli.main(
        ["--config", str(REPO / "configs/finetune/smoke.yaml"), *form,
         "--trainer.default_root_dir", str(tmp_path / "f")]
    )
    assert code == 0 and seen == ["32-true"]
