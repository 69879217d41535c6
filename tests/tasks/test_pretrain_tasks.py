"""Pretraining tasks (SimCLR, MoCo v2, BYOL) trained for a few steps on tiny fake views."""

import math

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from falsecl.models.backbones import load_backbone_file
from falsecl.tasks.base import AtomicCheckpointIO, NonFiniteLossError
from falsecl.tasks.byol import BYOL, byol_loss
from falsecl.tasks.moco import MoCo
from falsecl.tasks.simclr import SimCLR

SMALL = {"arch": "resnet18", "hidden_dim": 32, "output_dim": 16}


class FakeViews(Dataset):
    """Two noisy views of random images; optionally NaN from sample ``nan_from`` on."""

    def __init__(self, n=16, channels=4, size=32, nan_from=None):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, channels, size, size, generator=g)
        self.nan_from = nan_from

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        if self.nan_from is not None and i >= self.nan_from:
            x = torch.full_like(x, float("nan"))
        return {"views": [x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)]}


class FakeSSLData(LightningDataModule):
    def __init__(self, channels=4, batch_size=4, n=16, nan_from=None):
        super().__init__()
        self.in_channels = channels
        self.dataset = FakeViews(n, channels, nan_from=nan_from)
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, drop_last=True)


def _trainer(tmp_path, **kw):
    args = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 2,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
    }
    args.update(kw)
    return Trainer(**args)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (SimCLR, {"loss": "false", "threshold": -1.0}),
        (SimCLR, {"loss": "false", "selection": "official"}),
        (SimCLR, {"loss": "ntxent"}),
        (SimCLR, {"loss": "fnc", "alpha": 0.0}),
        (SimCLR, {"loss": "debiased"}),
        (SimCLR, {"loss": "hard_negative", "beta": 0.5}),
        (MoCo, {"loss": "false", "threshold": -1.0, "queue_size": 12}),
        (MoCo, {"loss": "ntxent", "queue_size": 12}),
        (MoCo, {"loss": "debiased", "queue_size": 12}),
        (MoCo, {"loss": "hard_negative", "queue_size": 12}),
        (BYOL, {}),
    ],
)
def test_methods_train_and_write_backbone(tmp_path, cls, kwargs):
    seed_everything(0)
    model = cls(**SMALL, **kwargs)  # in_channels comes from the datamodule
    trainer = _trainer(tmp_path)
    assert not hasattr(model, "backbone")  # built lazily: the band count is not known yet
    trainer.fit(model, datamodule=FakeSSLData(channels=4))
    assert trainer.global_step == 2
    metrics = trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss"]))
    assert -1 <= float(metrics["train/positive_cos"]) <= 1  # logged by every method
    if kwargs.get("loss") == "false" and kwargs.get("threshold") == -1.0:
        # the gate is open for every anchor, so FALSE fires everywhere
        assert float(metrics["train/false/fire_rate"]) == 1.0
    payload = load_backbone_file(tmp_path / "backbone.pt")
    assert payload["in_channels"] == 4 and payload["arch"] == "resnet18"
    assert payload["state_dict"]["conv1.weight"].shape[1] == 4
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(payload["state_dict"][key], value)
    assert model.hparams["in_channels"] == 4


def test_moco_queue_receives_keys_and_momentum_encoder_is_frozen(tmp_path):
    seed_everything(0)
    model = MoCo(**SMALL, in_channels=4, queue_size=12, loss="false")
    initial = model.queue.keys.clone()
    assert not any(p.requires_grad for p in model.backbone_momentum.parameters())
    _trainer(tmp_path, max_steps=3).fit(model, datamodule=FakeSSLData(channels=4))
    assert int(model.queue.ptr) == (3 * 4) % 12
    assert not torch.equal(model.queue.keys, initial)
    assert torch.allclose(model.queue.keys.norm(dim=1), torch.ones(12), atol=1e-5)
    # momentum weights moved towards the online weights but are not equal to them
    online = model.backbone.conv1.weight
    assert not torch.equal(online, model.backbone_momentum.conv1.weight)


def test_optimizer_groups_and_schedule(tmp_path):
    model = SimCLR(**SMALL, in_channels=3, optimizer="lars", lr=0.4, weight_decay=1e-4, warmup_fraction=0.25)
    trainer = _trainer(tmp_path, max_steps=8)
    trainer.fit(model, datamodule=FakeSSLData(channels=3, n=8, batch_size=2))  # 4 steps per epoch, 2 epochs
    opt = trainer.optimizers[0]
    assert type(opt).__name__ == "LARS"
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 1e-4 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("weight") and p.ndim > 1 for p in decayed["params"])
    assert any("bn" in names[id(p)] for p in plain["params"]) and any("bias" in names[id(p)] for p in plain["params"])
    sched = trainer.lr_scheduler_configs[0]
    assert sched.interval == "step"
    lam = sched.scheduler.lr_lambdas[0]
    assert [round(lam(s), 6) for s in (0, 1)] == [0.5, 1.0]  # 2 warm-up steps
    assert lam(2) == pytest.approx(1.0) and lam(7) == pytest.approx(0.0) and 0 < lam(5) < 1


def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path):
    seed_everything(0)
    model = SimCLR(**SMALL, in_channels=3)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, every_n_epochs=1)
    # epoch 0 is clean (samples 0..7); in epoch 1 the data are the same, so poison the second epoch only
    data = FakeSSLData(channels=3, n=8, batch_size=4)
    trainer = _trainer(
        tmp_path, max_steps=10, enable_checkpointing=True, callbacks=[ckpt], plugins=[AtomicCheckpointIO()]
    )

    orig = model.pretrain_loss

    def poisoned(v0, v1, meta=None):
        loss, stats = orig(v0, v1, meta)
        return (loss * float("nan") if model.current_epoch >= 1 else loss), stats

    model.pretrain_loss = poisoned
    with pytest.raises(NonFiniteLossError, match=r"nan at global step 2 .*last\.ckpt.*--ckpt_path last"):
        trainer.fit(model, datamodule=data)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2 and state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_nan_from_data_is_caught(tmp_path):
    model = SimCLR(**SMALL, in_channels=3)
    with pytest.raises(NonFiniteLossError):
        _trainer(tmp_path).fit(model, datamodule=FakeSSLData(channels=3, nan_from=0))


def test_runs_are_repeatable_with_a_seed(tmp_path):
    weights = []
    for run in range(2):
        seed_everything(123)
        model = MoCo(**SMALL, in_channels=3, queue_size=8)
        _trainer(tmp_path / str(run)).fit(model, datamodule=FakeSSLData(channels=3))
        weights.append((model.backbone.conv1.weight.detach().clone(), model.queue.keys.clone()))
    assert torch.equal(weights[0][0], weights[1][0]) and torch.equal(weights[0][1], weights[1][1])


def test_in_channels_required_without_datamodule():
    model = SimCLR(**SMALL)
    with pytest.raises(ValueError, match="in_channels"):
        model.configure_model()


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (SimCLR, {"loss": "nope"}),
        (SimCLR, {"alpha": 2.0}),
        (SimCLR, {"selection": "official", "top_k": 2}),
        (SimCLR, {"num_layers": 1}),
        (SimCLR, {"arch": "vgg"}),
        (SimCLR, {"optimizer": "rmsprop"}),
        (SimCLR, {"warmup_fraction": 1.0}),
        (MoCo, {"queue_size": 0}),
        (MoCo, {"key_momentum": 1.5}),
        (MoCo, {"loss": "false", "top_k": 0}),
        (BYOL, {"base_momentum": -0.1}),
    ],
)
def test_illegal_arguments(cls, kwargs):
    with pytest.raises(ValueError):
        cls(in_channels=3, **kwargs)


def test_byol_loss_range():
    p = torch.randn(5, 8)
    assert byol_loss(p, p).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(p, -p).item() == pytest.approx(4.0)


def test_atomic_checkpoint_io_leaves_no_temporary_file(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"a": torch.ones(2)}, tmp_path / "sub" / "x.ckpt")
    io.save_checkpoint({"a": torch.zeros(2)}, tmp_path / "sub" / "x.ckpt")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.ckpt"]
    assert torch.equal(torch.load(tmp_path / "sub" / "x.ckpt")["a"], torch.zeros(2))
