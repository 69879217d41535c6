from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from falsecl.cli.finetune import main as finetune_main
from falsecl.models import build_backbone, save_backbone_file
from falsecl.models.segmentation import build_deeplabv3plus
from falsecl.tasks.segmentation import SegmentationTask, poly_factor


class _Patches(Dataset):
    def __init__(self, n: int, bands: int, size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, bands, size, size, generator=g)
        self.masks = (self.images[:, 0] > 0).long() + (self.images[:, 1] > 1).long()
        self.masks[:, :2] = 255

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "mask": self.masks[i]}


class FakeSegmentationDataModule(LightningDataModule):
    """Tiny in-memory stand-in for falsecl.datamodules.SegmentationDataModule (normalised batches)."""

    def __init__(self, bands: int = 3, batch_size: int = 2, size: int = 32) -> None:
        super().__init__()
        self.bands, self.batch_size, self.size = bands, batch_size, size

    def setup(self, stage: str) -> None:
        self.in_channels = self.bands
        self.num_classes = 3
        self.class_names = ["a", "b", "c"]
        self.mean = [100.0 + i for i in range(self.bands)]
        self.std = [10.0] * self.bands
        self.ignore_index = 255

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Patches(4, self.bands, self.size, 0), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Patches(2, self.bands, self.size, 1), batch_size=self.batch_size)


def encoder_state_equal(encoder: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = encoder.state_dict()
    return all(torch.equal(own[k].cpu(), v) for k, v in state.items())


def test_backbone_file_loads_into_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", in_channels=4)
    path = save_backbone_file(tmp_path / "backbone.pt", backbone, "resnet18", 4)
    state = {k: v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    random_model = build_deeplabv3plus("resnet18", 4, 5, 8)
    assert not encoder_state_equal(random_model.encoder, state)
    model = build_deeplabv3plus("resnet18", 4, 5, 8, backbone_weights=str(path))
    assert encoder_state_equal(model.encoder, state)
    assert model(torch.randn(2, 4, 32, 32)).shape == (2, 5, 32, 32)
    # a bare torchvision state dict works too
    torch.save(backbone.state_dict(), tmp_path / "bare.pth")
    assert encoder_state_equal(build_deeplabv3plus("resnet18", 4, 5, 16, str(tmp_path / "bare.pth")).encoder, state)


def test_backbone_mismatch_refused(tmp_path: Path) -> None:
    path = save_backbone_file(tmp_path / "b.pt", build_backbone("resnet18", 4), "resnet18", 4)
    with pytest.raises(ValueError, match="4 band.*has 3"):
        build_deeplabv3plus("resnet18", 3, 5, backbone_weights=str(path))
    with pytest.raises(ValueError, match="resnet18 backbone but the model uses resnet34"):
        build_deeplabv3plus("resnet34", 4, 5, backbone_weights=str(path))
    torch.save({"conv1.weight": torch.zeros(64, 4, 7, 7), "junk": torch.zeros(1)}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="missing keys"):
        build_deeplabv3plus("resnet18", 4, 5, backbone_weights=str(tmp_path / "partial.pt"))
    with pytest.raises(FileNotFoundError):
        build_deeplabv3plus("resnet18", 4, 5, backbone_weights=str(tmp_path / "none.pt"))
    with pytest.raises(ValueError, match="output_stride"):
        build_deeplabv3plus("resnet18", 4, 5, output_stride=32)


def test_poly_schedule() -> None:
    assert poly_factor(0, 100, 0.9, 0.01) == pytest.approx(1.0)
    assert poly_factor(100, 100, 0.9, 0.01) == pytest.approx(0.01)
    assert poly_factor(500, 100, 0.9, 0.01) == pytest.approx(0.01)
    assert poly_factor(50, 100, 0.9, 0.01) == pytest.approx(0.99 * 0.5**0.9 + 0.01)


def test_freeze_and_param_groups() -> None:
    task = SegmentationTask(in_channels=3, num_classes=4, freeze_backbone=True)
    assert not any(p.requires_grad for p in task.encoder.parameters())
    task.train()
    assert not task.encoder.training and task.model.decoder.training
    full = SegmentationTask(in_channels=3, num_classes=4, lr=0.02, backbone_lr_factor=0.1)
    assert all(p.requires_grad for p in full.encoder.parameters())
    full.train()
    assert full.encoder.training
    # the poly schedule needs a trainer for its length; check groups through a minimal fake
    full._trainer = type("T", (), {"max_steps": 10, "estimated_stepping_batches": 10})()  # type: ignore[assignment]
    cfg = full.configure_optimizers()
    lrs = sorted(g["lr"] for g in cfg["optimizer"].param_groups)
    assert lrs == pytest.approx([0.002, 0.02])
    frozen_cfg = SegmentationTask(in_channels=3, num_classes=4, freeze_backbone=True)
    frozen_cfg._trainer = full._trainer
    assert len(frozen_cfg.configure_optimizers()["optimizer"].param_groups) == 1


def test_forward_pads_odd_sizes_and_ignores_all_unlabelled() -> None:
    task = SegmentationTask(in_channels=3, num_classes=4).eval()
    assert task(torch.randn(1, 3, 30, 42)).shape == (1, 4, 30, 42)
    loss = task._loss(torch.randn(1, 4, 8, 8, requires_grad=True), torch.full((1, 8, 8), 255))
    assert float(loss) == 0.0


def test_finetune_cli_frozen_backbone_end_to_end(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", in_channels=3)
    bb_path = save_backbone_file(tmp_path / "backbone.pt", backbone, "resnet18", 3)
    argv = [
        "--name",
        "smoke",
        "--runs_dir",
        str(tmp_path / "runs"),
        "--model.backbone_weights",
        str(bb_path),
        "--model.freeze_backbone",
        "true",
        "--trainer.max_steps",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.val_check_interval",
        "2",
        "--trainer.check_val_every_n_epoch",
        "null",
    ]
    assert finetune_main(argv, datamodule_class=FakeSegmentationDataModule) == 0
    run = tmp_path / "runs" / "smoke"
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert list(run.glob("csv/metrics.csv"))
    task = SegmentationTask.load_from_checkpoint(last, map_location="cpu")
    hp = task.hparams
    assert (hp.in_channels, hp.num_classes, hp.class_names) == (3, 3, ["a", "b", "c"])
    assert hp.mean == [100.0, 101.0, 102.0] and hp.std == [10.0] * 3
    # frozen encoder (weights and batch-norm statistics) equals the pretrained backbone after training
    state = {k: v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    assert encoder_state_equal(task.encoder, state)
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    metrics = (next(run.glob("csv/metrics.csv"))).read_text()
    assert "val/mIoU" in metrics


def test_setup_refuses_mismatch_with_data() -> None:
    from lightning.pytorch import Trainer

    task = SegmentationTask(in_channels=4, num_classes=3)
    trainer = Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="in_channels=4 but the data has 3"):
        trainer.fit(task, datamodule=FakeSegmentationDataModule())


def test_finetune_cli_reports_configuration_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bb_path = save_backbone_file(tmp_path / "b4.pt", build_backbone("resnet18", 4), "resnet18", 4)
    argv = [
        "--runs_dir",
        str(tmp_path),
        "--model.backbone_weights",
        str(bb_path),
        "--trainer.max_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]
    assert finetune_main(argv, datamodule_class=FakeSegmentationDataModule) == 2
    assert "pretrained on 4 band(s) but the data has 3" in capsys.readouterr().err
    assert finetune_main(["--print_config"], datamodule_class=FakeSegmentationDataModule) == 0
    assert "backbone_lr_factor" in capsys.readouterr().out
