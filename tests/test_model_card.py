"""The model card: merging writes and the card of a fine-tuning run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from falsecl.model_card import MODEL_CARD, read_model_card, update_model_card


def test_update_merges_nested_fields_and_writes_json_types(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = update_model_card(run, {"dataset": "dubai", "test": {"mIoU": 0.5, "OA": float("nan")}})
    assert path == run / MODEL_CARD
    update_model_card(run, {"test": {"kappa": torch.tensor(0.25)}, "mean": torch.tensor([1.0, 2.0])})
    card = json.loads(path.read_text())
    assert card == {"dataset": "dubai", "test": {"mIoU": 0.5, "OA": None, "kappa": 0.25}, "mean": [1.0, 2.0]}
    assert not [p for p in run.iterdir() if p.name != MODEL_CARD]  # no temporary file left behind


def test_update_replaces_non_mapping_values(tmp_path: Path) -> None:
    update_model_card(tmp_path, {"class_names": ["a", "b"], "test": {"mIoU": 0.1}})
    update_model_card(tmp_path, {"class_names": ["c"], "test": None})
    assert read_model_card(tmp_path) == {"class_names": ["c"], "test": None}


def test_read_missing_and_broken_cards(tmp_path: Path) -> None:
    assert read_model_card(tmp_path) == {}
    (tmp_path / MODEL_CARD).write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_model_card(tmp_path)
    (tmp_path / MODEL_CARD).write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        update_model_card(tmp_path, {"a": 1})


def _pretrain_run(folder: Path) -> Path:
    """A pretraining run folder as `falsecl pretrain` leaves it: backbone, resolved config, image list."""
    from falsecl.models import build_backbone, save_backbone_file

    path = save_backbone_file(folder / "backbone.pt", build_backbone("resnet18", 3), "resnet18", 3)
    (folder / "tensorboard").mkdir()
    (folder / "tensorboard" / "config.yaml").write_text(
        "model:\n  class_path: falsecl.tasks.simclr.SimCLR\n  init_args:\n    arch: resnet18\n    loss: 'false'\n"
    )
    (folder / "pretrain_images.txt").write_text("# images used\nTile 1/images/a.jpg\nTile 4/images/b.jpg\n\n")
    return path


def test_pretraining_source(tmp_path: Path) -> None:
    from falsecl.model_card import pretraining_source

    assert pretraining_source(None)["method"] == "none (random initialisation)"
    info = pretraining_source(_pretrain_run(tmp_path))
    assert (info["method"], info["loss"], info["images"]) == ("SimCLR", "false", 2)
    bare = tmp_path / "elsewhere" / "weights.pt"
    bare.parent.mkdir()
    bare.write_bytes(b"")
    assert pretraining_source(bare) == {
        "backbone": str(bare), "method": None, "loss": None, "images": None, "config": None
    }  # fmt: skip


def test_finetune_run_writes_the_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from falsecl.cli.finetune import main as finetune_main
    from tests.data.fake_layouts import make_dubai

    root = make_dubai(tmp_path / "dubai", size=(64, 64))
    backbone = _pretrain_run(tmp_path / "pre")
    run = tmp_path / "runs" / "ft"
    argv = [
        "--data.dataset", "dubai", "--data.root", str(root), "--data.label_fraction", "0.5",
        "--data.patch_size", "32", "--data.batch_size", "2", "--data.stats_patches", "4",
        "--model.backbone_weights", str(backbone), "--model.output_stride", "16",
        "--trainer.default_root_dir", str(run), "--trainer.max_steps", "1", "--trainer.max_epochs", "-1",
        "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    assert finetune_main(argv) == 0
    card = read_model_card(run)
    assert card["dataset"]["name"] == "dubai" and card["dataset"]["root"] == str(root)
    assert card["class_names"] == ["building", "land", "road", "vegetation", "water"]
    assert len(card["class_colours"]) == 5 and all(len(c) == 3 for c in card["class_colours"])
    assert card["in_channels"] == 3 and len(card["normalisation"]["mean"]) == 3
    assert all(s > 0 for s in card["normalisation"]["std"])
    assert card["labels"]["label_fraction"] == 0.5
    # the training pixels' data type and value range, in the card and the checkpoint (predict checks inputs on it)
    assert card["input"]["dtype"] == "uint8" and len(card["input"]["value_range"]) == 3
    assert all(0 <= lo <= hi <= 255 for lo, hi in card["input"]["value_range"])
    hparams = torch.load(card["checkpoints"]["last"], weights_only=False)["hyper_parameters"]
    assert hparams["data_dtype"] == "uint8" and hparams["data_value_range"] == card["input"]["value_range"]
    assert card["labels"]["subset_file"] and Path(card["labels"]["subset_file"]).is_file()
    pre = card["pretraining"]
    assert (pre["backbone"], pre["method"], pre["loss"], pre["images"]) == (str(backbone), "SimCLR", "false", 2)
    assert card["checkpoints"]["last"].endswith("last.ckpt") and card["fine_tuning"]["global_step"] == 1
    # evaluate adds its metrics later without losing anything
    update_model_card(run, {"test": {"mIoU": 0.5}})
    assert read_model_card(run)["pretraining"] == pre and read_model_card(run)["test"] == {"mIoU": 0.5}


def test_card_records_the_input_range_and_held_out_use() -> None:
    from types import SimpleNamespace

    from falsecl.model_card import HELD_OUT_NOTE, fit_fields, held_out_note

    def card(**hparams: object) -> dict[str, object]:
        trainer = SimpleNamespace(datamodule=None, default_root_dir="/nonexistent/run", max_steps=1, max_epochs=1)
        task = SimpleNamespace(hparams={"mean": [1.0], "std": [1.0], **hparams})
        return fit_fields(trainer, task)  # type: ignore[arg-type]

    plain = card(data_dtype="uint16", data_value_range=[[100.0, 3000.0]])
    assert plain["input"]["dtype"] == "uint16" and plain["input"]["value_range"] == [[100.0, 3000.0]]  # type: ignore[index]
    assert plain["notes"] == [] and plain["dataset"]["allow_held_out"] is False  # type: ignore[index]
    flagged = card(allow_held_out=True)
    assert flagged["notes"] == [HELD_OUT_NOTE] and flagged["dataset"]["allow_held_out"] is True  # type: ignore[index]
    assert HELD_OUT_NOTE == "held-out data was used for training/selection (--allow_held_out)"
    for value, expected in [("true", True), (1, True), ("no", False), (None, False), ([1], False), (0, False)]:
        assert (held_out_note({"allow_held_out": value}) is not None) is expected, value
    assert held_out_note(None) is None and held_out_note({"data_allow_held_out": True}) == HELD_OUT_NOTE
