"""MoCo keeps the patch id of every queued key and never contrasts a query with its own patch."""

import logging
import math

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from torch.utils.data import DataLoader, Dataset

from falsecl.tasks.moco import MoCo, expected_self_keys, queue_size_warning

SMALL = {"arch": "resnet18", "hidden_dim": 32, "output_dim": 16}


class IndexedViews(Dataset):
    """Two noisy views of random images, with the patch index (or without, ``with_index=False``)."""

    def __init__(self, n=8, with_index=True):
        self.images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        self.with_index = with_index

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        out = {"views": [x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)]}
        if self.with_index:
            out["index"] = torch.tensor(i)
        return out


class Data(LightningDataModule):
    def __init__(self, **kw):
        super().__init__()
        self.dataset = IndexedViews(**kw)

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=4, shuffle=False, drop_last=True)


def _fit(tmp_path, model, data, steps=3):
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data)
    return trainer


def test_queue_keeps_ids_masks_self_keys_and_warns(tmp_path):
    seed_everything(0)
    model = MoCo(**SMALL, in_channels=3, queue_size=12, loss="false")
    with pytest.warns(UserWarning, match=r"12 keys.*8 pretraining patches.*queue_size 4 or less"):
        trainer = _fit(tmp_path, model, Data())
    # 3 steps of 4: patches 0..7 (one epoch), then 0..3 again; 4 random initial keys were overwritten last
    assert model.queue.ids.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3]
    # in step 3 every query met its earlier view in the queue, and it was masked
    assert float(trainer.callback_metrics["train/self_key_rate"]) == 1.0
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    # the ids are checkpointed and resumed with the keys
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    state = torch.load(tmp_path / "m.ckpt", weights_only=False)["state_dict"]
    assert torch.equal(state["queue.ids"], model.queue.ids)
    restored = MoCo.load_from_checkpoint(tmp_path / "m.ckpt")
    assert torch.equal(restored.queue.ids, model.queue.ids) and torch.equal(restored.queue.keys, model.queue.keys)


@pytest.mark.parametrize("loss", ["false", "ntxent", "fnc", "debiased", "hard_negative"])
def test_a_queue_of_self_keys_gives_no_negatives(loss):
    seed_everything(0)
    masked = MoCo(**SMALL, in_channels=3, queue_size=6, loss=loss, tau_plus=0.0, threshold=-1.0)
    plain = MoCo(**SMALL, in_channels=3, queue_size=6, loss=loss, tau_plus=0.0, threshold=-1.0, mask_self_keys=False)
    plain.load_state_dict(masked.state_dict())
    v0, v1 = torch.randn(2, 3, 3, 32, 32).unbind(0)
    index = torch.tensor([5, 5, 5])  # three views of one patch, so one queue can be all self-keys
    for model in (masked, plain):
        model.queue.ids.fill_(5)
    got, stats = masked.pretrain_loss(v0, v1, {"index": index})
    ref, ref_stats = plain.pretrain_loss(v0, v1, {"index": index})
    assert got.item() == pytest.approx(0.0, abs=1e-5)  # numerator == denominator: nothing to push away
    assert ref.item() > 0.01
    assert stats["self_key_rate"] == ref_stats["self_key_rate"] == 1.0
    if loss in ("false", "fnc"):
        assert stats["false/fire_rate"] == 0 and ref_stats["false/fire_rate"] == 1


def test_missing_index_trains_without_masking_and_logs_once(tmp_path, caplog):
    seed_everything(0)
    model = MoCo(**SMALL, in_channels=3, queue_size=4, loss="false")
    with caplog.at_level(logging.WARNING, logger="falsecl.tasks.moco"):
        trainer = _fit(tmp_path, model, Data(with_index=False))
    assert sum("no per-patch 'index'" in r.getMessage() for r in caplog.records) == 1
    assert model.queue.ids.tolist() == [-1] * 4 and "train/self_key_rate" not in trainer.callback_metrics


def test_queue_size_warning_numbers():
    assert queue_size_warning(2205, 4410) is None and queue_size_warning(10, 0) is None
    text = queue_size_warning(4096, 4410)
    assert "43 %" in text and "0.43 such keys" in text and "queue_size 2205" in text
    assert "100 %" in queue_size_warning(65536, 4410) and "14.36 such keys" in queue_size_warning(65536, 4410)


@pytest.mark.parametrize("queue_size", [12, 30, 45, 110])
def test_expected_self_keys_matches_a_simulated_queue(queue_size):
    """Shuffle 40 patches per epoch, queue the ids, count each query's own ids in the queue (epochs 2+)."""
    n, epochs = 40, 400
    g = torch.Generator().manual_seed(0)
    stream = torch.cat([torch.randperm(n, generator=g) for _ in range(epochs)])
    hits, counts = [], []
    for t in range(n, len(stream)):
        window = stream[max(0, t - queue_size) : t]
        c = int((window == stream[t]).sum())
        hits.append(c > 0)
        counts.append(c)
    share, mean = expected_self_keys(queue_size, n)
    assert sum(hits) / len(hits) == pytest.approx(share, abs=0.02)
    assert sum(counts) / len(counts) == pytest.approx(mean, abs=0.03)
