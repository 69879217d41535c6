"""``falsecl pretrain`` end to end on tiny fake images: print_config, a short run, resume, SIGKILL."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from falsecl.cli.pretrain import main
from falsecl.models.backbones import build_backbone, load_backbone_file
from falsecl.tasks.simclr import SimCLR

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs" / "pretrain" / "smoke.yaml")
PRESETS = sorted((REPO / "configs" / "pretrain").glob("*.yaml"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    return root


def _logged_steps(run_dir):
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss_step")]


def _args(images, run_dir, *extra):
    return [
        "--config",
        SMOKE,
        f"--trainer.default_root_dir={run_dir}",
        f"--data.roots=[{images}]",
        "--data.patch_size=32",
        "--data.crop_size=24",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_parses(preset, capsys):
    assert main(["--config", str(preset), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("falsecl.tasks.")
    assert printed["trainer"]["default_root_dir"].startswith("runs/")


def test_paper_preset_is_the_authors_recipe(capsys):
    assert main(["--config", str(REPO / "configs/pretrain/paper_simclr_false.yaml"), "--print_config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    m, d = cfg["model"]["init_args"], cfg["data"]
    assert cfg["model"]["class_path"] == "falsecl.tasks.simclr.SimCLR"
    assert (m["arch"], m["hidden_dim"], m["output_dim"], m["loss"]) == ("resnet50", 2048, 128, "false")
    assert (m["temperature"], m["alpha"], m["threshold"]) == (0.5, 1.0, 0.9)
    assert (m["optimizer"], m["momentum"], m["weight_decay"], m["warmup_fraction"]) == (
        "lars",
        0.9,
        1e-6,
        0.1,
    )
    assert (d["batch_size"], d["crop_size"], cfg["trainer"]["max_epochs"]) == (256, 224, 200)


def test_help_and_bad_arguments_return_codes(capsys):
    assert main(["--help"]) == 0
    assert "--ckpt_path" in capsys.readouterr().out
    assert main(["--config", SMOKE, "--model.init_args.loss", "nope"]) != 0


def test_two_step_run_and_resume(images, tmp_path):
    run = tmp_path / "run"
    assert main(_args(images, run, "--trainer.max_steps=-1", "--trainer.max_epochs=1")) == 0  # 8 patches: 2 steps
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
    payload = load_backbone_file(run / "backbone.pt")
    backbone = build_backbone(payload["arch"], payload["in_channels"])
    backbone.load_state_dict(payload["state_dict"], strict=False)
    metrics = (run / "csv" / "metrics.csv").read_text()
    for key in (
        "train/loss_step",
        "train/lr",
        "train/false/fire_rate",
        "train/false/candidate_cos",
        "train/positive_cos",
        "train/images_per_s",
    ):
        assert key in metrics
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "tensorboard" / "config.yaml").is_file()
    logged = _logged_steps(run)
    # resume for one more epoch: the step counter and the optimiser state continue from the checkpoint
    assert main(_args(images, run, "--trainer.max_steps=-1", "--trainer.max_epochs=2", "--ckpt_path=last")) == 0
    # ... and the log too: the first epoch's rows are kept (Lightning's CSV writer deleted them)
    after = _logged_steps(run)
    assert logged and after[: len(logged)] == logged and len(after) > len(logged) and after == sorted(set(after))
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 4
    assert resumed["optimizer_states"][0]["state"]  # momentum buffers carried on
    # the band count came from the data; the checkpoint records it, so the model rebuilds without a datamodule
    model = SimCLR.load_from_checkpoint(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert model.hparams["in_channels"] == 3 and model.backbone.conv1.in_channels == 3
    assert model.hparams["threshold"] == 0.9 and model.hparams["hidden_dim"] == 32


def test_sigkill_then_resume_loses_at_most_one_epoch(images, tmp_path):
    """Kill -9 a MoCo run after its first epoch's checkpoint, resume with --ckpt_path last."""
    run = tmp_path / "killed"
    args = _args(
        images,
        run,
        "--model=falsecl.tasks.moco.MoCo",
        "--model.init_args.queue_size=16",
        "--model.init_args.hidden_dim=32",
        "--model.init_args.output_dim=16",
        "--trainer.max_steps=-1",
        "--trainer.max_epochs=1000",
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    code = "import sys; from falsecl.cli.pretrain import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = run / "checkpoints" / "last.ckpt"
    try:
        deadline = time.time() + 90
        while not last.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert last.exists(), "the run wrote no checkpoint in 90 s"
        time.sleep(1.0)  # let it train into a later epoch, maybe mid-write of the next checkpoint
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # it was still training when killed
    saved = torch.load(last, weights_only=False)  # an atomic write never leaves a truncated file
    steps_per_epoch = 2  # 8 patches of 32 px, batch 4
    assert saved["global_step"] >= steps_per_epoch and saved["global_step"] % steps_per_epoch == 0
    queue = saved["state_dict"]["queue.keys"].clone()
    ptr = int(saved["state_dict"]["queue.ptr"])
    assert ptr == (saved["global_step"] * 4) % 16
    # resume for exactly one more epoch: the step counter continues and the queue starts from the saved one
    target_epochs = saved["epoch"] + 2
    assert (
        main(
            _args(
                images,
                run,
                "--model=falsecl.tasks.moco.MoCo",
                "--model.init_args.queue_size=16",
                "--model.init_args.hidden_dim=32",
                "--model.init_args.output_dim=16",
                "--trainer.max_steps=-1",
                f"--trainer.max_epochs={target_epochs}",
                "--ckpt_path=last",
            )
        )
        == 0
    )
    resumed = torch.load(last, weights_only=False)
    assert resumed["global_step"] == saved["global_step"] + steps_per_epoch
    new_ptr = int(resumed["state_dict"]["queue.ptr"])
    assert new_ptr == (ptr + steps_per_epoch * 4) % 16
    # the slots the resumed epoch did not overwrite are exactly the restored queue's
    written = {(ptr + i) % 16 for i in range(steps_per_epoch * 4)}
    kept = [i for i in range(16) if i not in written]
    assert kept and torch.equal(resumed["state_dict"]["queue.keys"][kept], queue[kept])


def test_diverging_run_exits_with_a_clear_message(images, tmp_path, capsys):
    run = tmp_path / "diverged"
    args = ["--model.init_args.optimizer=sgd", "--model.init_args.lr=1e30", "--model.init_args.warmup_fraction=0"]
    assert main(_args(images, run, "--trainer.max_steps=-1", "--trainer.max_epochs=3", *args)) == 1
    err = capsys.readouterr().err
    assert "falsecl pretrain: training loss is" in err and "--ckpt_path last" in err
