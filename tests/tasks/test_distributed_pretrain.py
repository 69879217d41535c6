"""Two gloo processes give the same losses and gradients as one process on the concatenated batch.

Each rank holds half of a global batch. Negatives and FALSE candidates come from the global batch (gathered
with gradients), so the mean of the per-rank losses must equal the single-process loss, and the gradient
reaching each rank's local projections must be ``world`` times the single-process gradient of those rows
(DDP then divides the parameter gradients by ``world``). For MoCo, every rank must end with the same queue
as a single process that enqueued the concatenated keys.
"""

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightly.loss import NTXentLoss
from lightning.pytorch import Callback, Trainer

from falsecl.losses.debiased import debiased_contrastive_loss
from falsecl.losses.false import false_loss
from falsecl.losses.hard_negative import hard_negative_loss
from falsecl.losses.moco_false import moco_false_loss
from falsecl.losses.queue import KeyQueue
from falsecl.tasks.moco import MoCo

WORLD = 2
N_LOCAL = 4
DIM = 6


def _global_data():
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(WORLD * N_LOCAL, DIM, generator=g, dtype=torch.float64)
    z1 = z0 + 0.3 * torch.randn(WORLD * N_LOCAL, DIM, generator=g, dtype=torch.float64)
    z0[5] = z0[1] + 0.05 * torch.randn(DIM, generator=g, dtype=torch.float64)  # a cross-rank false negative
    queue = torch.randn(10, DIM, generator=g, dtype=torch.float64)
    return z0, z1, queue


GLOBAL_IDS = torch.arange(WORLD * N_LOCAL) + 100
# queue keys 0 and 7 are earlier views of global samples 1 (rank 0) and 6 (rank 1); -1 is unknown
QUEUE_IDS = torch.tensor([101, 3, -1, 4, 5, 6, 7, 106, 8, 9])


CASES = {
    "false_per_anchor": lambda a, b, gd: false_loss(a, b, 0.5, 1.0, 0.5, "per_anchor", gather_distributed=gd)[0],
    "false_per_anchor_sym_top2_elim": lambda a, b, gd: false_loss(
        a, b, 0.5, 0.5, 0.5, "per_anchor", 2, True, "eliminate", gather_distributed=gd
    )[0],
    "false_official": lambda a, b, gd: false_loss(a, b, 0.5, 1.0, 0.5, "official", gather_distributed=gd)[0],
    "ntxent_lightly": lambda a, b, gd: NTXentLoss(0.5, gather_distributed=gd)(a, b),
    "debiased": lambda a, b, gd: debiased_contrastive_loss(a, b, 0.5, 0.1, gather_distributed=gd),
    "hard_negative": lambda a, b, gd: hard_negative_loss(a, b, 0.5, 1.0, 0.1, gather_distributed=gd),
}


def _losses_and_grads(z0, z1, queue, gd, ids):
    out = {}
    for name, fn in CASES.items():
        a, b = z0.clone().requires_grad_(), z1.clone().requires_grad_()
        loss = fn(a, b, gd)
        g0, g1 = torch.autograd.grad(loss, (a, b))
        out[name] = (loss.detach(), g0, g1)
    q = z0.clone().requires_grad_()
    loss, stats = moco_false_loss(q, z1, queue, 0.2, 1.0, 0.3, 2)
    (gq,) = torch.autograd.grad(loss, q)
    out["moco_false"] = (loss.detach(), gq, stats["fire_rate"])
    q = z0.clone().requires_grad_()
    loss, stats = moco_false_loss(q, z1, queue, 0.2, 1.0, 0.3, 2, "keep", ids, QUEUE_IDS)
    (gq,) = torch.autograd.grad(loss, q)
    out["moco_false_self_masked"] = (loss.detach(), gq, stats["fire_rate"])
    torch.manual_seed(1)
    key_queue = KeyQueue(7, DIM).double()
    key_queue.enqueue(z1, ids, gather_distributed=gd)
    out["queue"] = (key_queue.keys.clone(), key_queue.ptr.clone(), key_queue.ids.clone())
    return out


def _worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        z0, z1, queue = _global_data()
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        result = _losses_and_grads(z0[rows], z1[rows], queue, True, GLOBAL_IDS[rows])
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    # the spawned children import this module by its package path and inherit the parent's sys.path
    root = str(Path(__file__).resolve().parents[2])
    sys.path.insert(0, root)
    try:
        mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    finally:
        sys.path.remove(root)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single():
    return _losses_and_grads(*_global_data(), gd=False, ids=GLOBAL_IDS)


@pytest.mark.parametrize("name", list(CASES))
def test_simclr_losses_match_single_process(ranks, single, name):
    loss, g0, g1 = single[name]
    mean_loss = sum(r[name][0] for r in ranks) / WORLD
    torch.testing.assert_close(mean_loss, loss)
    for rank, result in enumerate(ranks):
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        torch.testing.assert_close(result[name][1], WORLD * g0[rows])
        torch.testing.assert_close(result[name][2], WORLD * g1[rows])


def test_false_fires_across_ranks(single):
    # the planted cross-rank pair makes the test sensitive to wrong rank offsets
    _, stats = false_loss(*_global_data()[:2], 0.5, 1.0, 0.5, "per_anchor")
    assert stats["fire_rate"] > 0


@pytest.mark.parametrize("name", ["moco_false", "moco_false_self_masked"])
def test_moco_false_matches_single_process(ranks, single, name):
    loss, gq, fire_rate = single[name]
    assert fire_rate > 0
    torch.testing.assert_close(sum(r[name][0] for r in ranks) / WORLD, loss)
    for rank, result in enumerate(ranks):
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        torch.testing.assert_close(result[name][1], WORLD * gq[rows])
    if name == "moco_false_self_masked":  # the planted self-keys on both ranks changed the loss
        assert not torch.allclose(loss, single["moco_false"][0])


def test_moco_queue_holds_keys_of_all_ranks_in_rank_order(ranks, single):
    keys, ptr, ids = single["queue"]
    for result in ranks:
        torch.testing.assert_close(result["queue"][0], keys)
        assert int(result["queue"][1]) == int(ptr) == (WORLD * N_LOCAL) % 7
        assert torch.equal(result["queue"][2], ids)  # ids gathered in the same rank order as the keys
    assert ids.tolist() == [107, 101, 102, 103, 104, 105, 106]


class _FakeViews(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(3, 32, 32, generator=g)
        return {
            "views": [
                x + 0.1 * torch.randn(x.shape, generator=g),
                x + 0.1 * torch.randn(x.shape, generator=g),
            ],
            "index": torch.tensor(i),
        }


class _SaveQueuePerRank(Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        torch.save(
            {
                "keys": pl_module.queue.keys.clone(),
                "ids": pl_module.queue.ids.clone(),
                "ptr": int(pl_module.queue.ptr),
                "step": trainer.global_step,
            },
            os.path.join(self.out_dir, f"queue{trainer.global_rank}.pt"),
        )


def test_lightning_ddp_moco_false_shares_one_queue(tmp_path):
    """A real 2-process Lightning DDP run (gloo): both ranks end with one queue holding all ranks' keys."""
    model = MoCo(arch="resnet18", in_channels=3, hidden_dim=16, output_dim=8, queue_size=32, threshold=-1.0)
    loader = torch.utils.data.DataLoader(_FakeViews(), batch_size=4, drop_last=True)
    trainer = Trainer(
        accelerator="cpu",
        devices=WORLD,
        strategy="ddp_spawn",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[_SaveQueuePerRank(str(tmp_path))],
    )
    root = str(Path(__file__).resolve().parents[2])
    sys.path.insert(0, root)
    try:
        trainer.fit(model, train_dataloaders=loader)
    finally:
        sys.path.remove(root)
    q0, q1 = (torch.load(tmp_path / f"queue{r}.pt") for r in range(WORLD))
    assert q0["step"] == q1["step"] == 2
    assert q0["ptr"] == q1["ptr"] == 2 * WORLD * 4  # two steps of the global batch (2 ranks x 4)
    torch.testing.assert_close(q0["keys"], q1["keys"])
    # every rank holds the patch ids of all ranks' keys: the 16 patches of two global batches, each once
    assert torch.equal(q0["ids"], q1["ids"]) and sorted(q0["ids"][:16].tolist()) == list(range(16))
    assert (q0["ids"][16:] == -1).all()
    assert (tmp_path / "backbone.pt").is_file()
