"""``--precision auto``: fp32 or bf16, contiguous or channels-last, chosen by a cached measurement on the model."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import falsecl.calibration as calibration
import falsecl.precision as precision
from falsecl.calibration import choose_precision, pick, trainer_precision
from falsecl.cli import finetune as finetune_cli
from falsecl.cli import pretrain as pretrain_cli
from falsecl.inference import SlidingWindowPredictor
from falsecl.inference.checkpoint import make_predictor
from falsecl.precision import Workload, resolve_precision
from falsecl.tasks.segmentation import SegmentationTask
from falsecl.tasks.simclr import SimCLR

REPO = Path(__file__).parents[1]
# The figures for the SimCLR preset on an AMD EPYC with AVX-512 BF16: fp32 1.772 s, bf16 0.917 s per step.
EPYC = {"fp32": 1.772, "bf16": 0.917, "fp32+cl": 1.555, "bf16+cl": 0.834}


class FakeTimer:
    """Stands in for :func:`falsecl.calibration.time_step`: scripted seconds per configuration, calls recorded."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds, self.calls = seconds, []

    def __call__(self, workload: Workload, prec: str, channels_last: bool, training: bool) -> float:
        self.calls.append((workload.name, prec, channels_last, training))
        return self.seconds[("bf16" if prec == "bf16-mixed" else "fp32") + ("+cl" if channels_last else "")]


def tiny_workload(batch: int = 2, size: int = 8) -> Workload:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    x = torch.randn(batch, 3, size, size)
    return Workload("tiny conv", model, (x,), lambda m, x: m(x).mean())


@pytest.fixture
def timer(monkeypatch):
    fake = FakeTimer(dict(EPYC))
    monkeypatch.setattr(calibration, "time_step", fake)
    monkeypatch.setattr(calibration, "cpu_supports_bf16", lambda: True)
    return fake


def test_measures_once_then_reads_the_cache(timer, capsys):
    first = choose_precision("auto", "cpu", True, tiny_workload)
    assert (first.precision, first.channels_last) == ("bf16-mixed", True)  # channels-last: 0.917 / 0.834 > 1.05
    assert timer.calls and {c[3] for c in timer.calls} == {True}
    err = capsys.readouterr().err
    assert "bf16 1.93x of fp32 (0.917 s vs 1.77 s per step), channels-last 1.10x in bf16" in err and "cached in" in err
    entries = json.loads(calibration.cache_path().read_text())["entries"]
    assert len(entries) == 1 and next(iter(entries.values()))["key"]["inputs"] == [[2, 3, 8, 8]]

    timer.calls.clear()
    again = choose_precision("auto", "cpu", True, tiny_workload)
    assert timer.calls == []  # a cache hit measures nothing
    assert again.precision == first.precision and "measured earlier" in capsys.readouterr().err


@pytest.mark.parametrize("change", ["batch", "size", "mode"])
def test_a_changed_key_measures_again(timer, change):
    choose_precision("auto", "cpu", True, tiny_workload)
    timer.calls.clear()
    if change == "batch":
        choose_precision("auto", "cpu", True, lambda: tiny_workload(batch=3))
    elif change == "size":
        choose_precision("auto", "cpu", True, lambda: tiny_workload(size=16))
    else:
        choose_precision("auto", "cpu", False, tiny_workload)
    assert timer.calls
    assert len(json.loads(calibration.cache_path().read_text())["entries"]) == 2


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"entries": {"k": 3}}', ""])
def test_a_corrupt_cache_warns_and_measures_again(timer, content):
    path = calibration.cache_path()
    path.write_text(content)
    if content.startswith("{\"entries\""):  # readable, but an entry of the wrong shape is a miss
        choice = choose_precision("auto", "cpu", True, tiny_workload)
    else:
        with pytest.warns(UserWarning, match="unreadable"):
            choice = choose_precision("auto", "cpu", True, tiny_workload)
    assert timer.calls and choice.precision == "bf16-mixed"
    assert len(json.loads(path.read_text())["entries"]) >= 1  # rewritten, valid


def test_ties_keep_fp32_and_contiguous_memory():
    assert pick({"fp32": 1.0, "bf16": 0.96, "fp32+cl": 0.97, "bf16+cl": 0.99}) == ("32-true", False)
    assert pick({"fp32": 1.0, "bf16": 0.90, "fp32+cl": 1.2, "bf16+cl": 0.88}) == ("bf16-mixed", False)
    assert pick({"fp32": 1.0, "bf16": 0.90, "fp32+cl": 1.2, "bf16+cl": 0.80}) == ("bf16-mixed", True)
    assert pick({"fp32": 1.0, "bf16": 1.7, "fp32+cl": 0.8, "bf16+cl": 1.5}) == ("32-true", True)
    assert pick({"fp32": 1.0, "fp32+cl": 0.9}) == ("32-true", True)  # no bf16 measured


def test_slower_bf16_keeps_fp32(timer, capsys):
    timer.seconds.update({"bf16": 3.0, "bf16+cl": 3.4})  # the CPU where bf16 training measured 0.59x
    choice = choose_precision("auto", "cpu", True, tiny_workload)
    assert (choice.precision, choice.channels_last) == ("32-true", True)
    assert "bf16 0.59x of fp32" in capsys.readouterr().err


def test_a_disturbed_measurement_is_used_but_not_cached(monkeypatch, capsys):
    monkeypatch.setattr(calibration, "cpu_supports_bf16", lambda: True)
    fp32 = iter([1.0, 1.0] + [3.0] * 10)  # warm-up, one step, then a burst of other load during fp32's steps
    other = {("32-true", True): 1.0, ("bf16-mixed", False): 0.5, ("bf16-mixed", True): 0.5}
    monkeypatch.setattr(calibration, "time_step", lambda w, p, cl, t: other.get((p, cl)) or next(fp32))
    choice = choose_precision("auto", "cpu", True, tiny_workload)
    assert choice.precision == "bf16-mixed"
    assert "not cached" in capsys.readouterr().err and not calibration.cache_path().exists()


def test_without_native_bf16_only_fp32_is_measured(timer, monkeypatch, capsys):
    monkeypatch.setattr(calibration, "cpu_supports_bf16", lambda: False)
    choice = choose_precision("auto", "cpu", True, tiny_workload)
    assert {c[1] for c in timer.calls} == {"32-true"} and choice == precision.PrecisionChoice(
        "32-true", True, choice.line
    )
    assert "no native bf16" in capsys.readouterr().err


def test_the_real_timer_runs_every_configuration_and_restores_the_memory_format():
    workload = tiny_workload()
    seconds, spread = calibration.measure(workload, training=True, min_rounds=2, max_rounds=2)
    assert set(seconds) == {"fp32", "bf16", "fp32+cl", "bf16+cl"} and all(s > 0 for s in seconds.values())
    assert spread >= 1.0
    weight = workload.module[0].weight
    assert weight.is_contiguous() and weight.grad is None  # gradients cleared, contiguous again


def test_explicit_values_and_gpus_are_not_measured(timer, monkeypatch, capsys):
    assert choose_precision("bf16-mixed", "cpu", True, tiny_workload) == precision.PrecisionChoice("bf16-mixed")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_precision("auto", "gpu", True, tiny_workload).precision == "bf16-mixed"
    assert timer.calls == [] and "GPU with bf16; not measured" in capsys.readouterr().err


def test_explicit_trainer_precision_wins_and_bad_values_are_refused():
    assert trainer_precision("auto", "32-true", "cpu") is None  # Lightning keeps --trainer.precision
    assert trainer_precision(None, None, "cpu") is None
    with pytest.raises(ValueError, match="--precision must be one of auto"):
        trainer_precision("fp8", None, "cpu")
    assert trainer_precision("bf16-mixed", None, "cpu") == "bf16-mixed"  # forcing bf16 still works


@pytest.mark.parametrize("native, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_unmeasured_fallback_follows_the_cpu(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("auto", "cpu", training=True) == "32-true"
    assert resolve_precision("32-true", "cpu") == "32-true" and resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_pretrain_measures_the_task_and_applies_channels_last(timer, tmp_path, capsys):
    timer.seconds["bf16+cl"] = 0.95
    cli = pretrain_cli._build_cli(
        ["--config", str(REPO / "configs/pretrain/smoke.yaml"), "--precision", "auto",
         "--trainer.default_root_dir", str(tmp_path)]
    )
    assert cli.trainer.precision == "bf16-mixed" and cli.model.channels_last is False
    name = timer.calls[0][0]
    assert name.startswith("SimCLR resnet18")
    assert "precision auto: bf16-mixed" in capsys.readouterr().err
    timer.seconds["bf16+cl"] = 0.5
    calibration.cache_path().unlink()
    cli = pretrain_cli._build_cli(
        ["--config", str(REPO / "configs/pretrain/smoke.yaml"), "--precision", "auto",
         "--trainer.default_root_dir", str(tmp_path)]
    )
    assert cli.model.channels_last is True
    explicit = pretrain_cli._build_cli(
        ["--config", str(REPO / "configs/pretrain/smoke.yaml"), "--precision", "auto",
         "--trainer.precision", "32-true", "--trainer.default_root_dir", str(tmp_path)]
    )
    assert explicit.trainer.precision == "32-true"


def test_pretrain_workload_is_the_task_at_the_runs_batch_and_crop():
    from types import SimpleNamespace

    task = SimCLR(arch="resnet18", hidden_dim=32, output_dim=16)
    workload = task.calibration_workload(SimpleNamespace(batch_size=4, crop_size=32, in_channels=0, bands=[0, 1]))
    assert [tuple(v.shape) for v in workload.inputs] == [(4, 2, 32, 32)] * 2
    assert task.in_channels is None  # the task itself is untouched: a copy is measured
    loss = workload.step(workload.module, *workload.inputs)
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_channels_last_training_step_matches_contiguous():
    torch.manual_seed(0)
    task = SimCLR(arch="resnet18", in_channels=3, hidden_dim=32, output_dim=16)
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    reference = task.training_step({"views": views}, 0)
    task.channels_last = True
    task.on_fit_start()
    assert task.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(task.training_step({"views": views}, 0), reference, atol=1e-4, rtol=1e-4)


def test_finetune_measures_deeplab_and_converts_it(timer, tmp_path):
    timer.seconds.update({"fp32+cl": 1.0, "bf16": 2.0, "bf16+cl": 2.0})  # channels-last fp32 fastest
    seen = []
    finetune_cli.Trainer.fit  # noqa: B018 (exists)

    def fit(self, model, *a, **k):
        seen.append((self.precision, model.channels_last))

    import unittest.mock

    with unittest.mock.patch.object(finetune_cli.Trainer, "fit", fit):
        code = finetune_cli.main(
            ["--config", str(REPO / "configs/finetune/smoke.yaml"), "--precision", "auto",
             "--trainer.default_root_dir", str(tmp_path / "a")]
        )
    assert code == 0 and seen == [("32-true", True)]
    assert timer.calls[0][0] == "DeepLabv3+ resnet18 os16"
    task = SegmentationTask(in_channels=3, num_classes=2, output_stride=16)
    x = torch.randn(1, 3, 32, 32)
    task.eval()
    reference = task(x)
    task.channels_last = True
    task.on_fit_start()
    torch.testing.assert_close(task(x), reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("form", [["--trainer.precision", "auto"], ["--trainer.precision=auto"]])
def test_trainer_precision_auto_is_accepted_and_measured(timer, tmp_path, form):
    # Lightning itself refuses "auto": it is rewritten as --precision auto, then measured.
    assert precision.trainer_auto_to_precision(["--x", "1", *form]) == ["--x", "1", "--precision", "auto"]
    cli = pretrain_cli._build_cli(
        ["--config", str(REPO / "configs/pretrain/smoke.yaml"), *form, "--trainer.default_root_dir", str(tmp_path)]
    )
    assert cli.trainer.precision == "bf16-mixed"


def test_inference_auto_measures_the_forward_pass(timer, capsys):
    timer.seconds["fp32+cl"] = 0.1
    task = SegmentationTask(in_channels=3, num_classes=2, output_stride=16).eval()
    predictor = make_predictor(task, window=32, overlap=0.25, blend="gaussian", tta=False, batch_size=2,
                               precision="auto")
    assert {c[3] for c in timer.calls} == {False} and timer.calls[0][0].startswith("SegmentationTask")  # forward only
    assert (predictor.precision, predictor.channels_last) == ("32-true", True)
    assert task.model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert "precision auto: 32-true + channels-last (inference" in capsys.readouterr().err
    image = torch.rand(3, 40, 48)
    plain = SlidingWindowPredictor(task, window=32, batch_size=2, precision="32-true")
    plain.use_precision(precision.PrecisionChoice("32-true", False))
    torch.testing.assert_close(predictor.predict_tensor(image), plain.predict_tensor(image), atol=1e-4, rtol=1e-4)


def test_the_core_alone_uses_the_unmeasured_rule(timer):
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1))
    predictor = SlidingWindowPredictor(model, window=16, batch_size=2, precision="auto")
    assert timer.calls == [] and predictor.channels_last is False  # the file-free core never measures
    with pytest.raises(ValueError, match="precision must be"):
        predictor.use_precision(precision.PrecisionChoice("fp8"))
