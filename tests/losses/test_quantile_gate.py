"""FALSE's batch-relative gate: the rows whose anchor-positive cosine is in the top q of the batch fire."""

from __future__ import annotations

import math

import pytest
import torch

from falsecl.losses.false import false_loss
from falsecl.losses.gates import quantile_gate
from falsecl.losses.moco_false import moco_false_loss


def _pairs(n: int, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, 16, generator=g)
    return z0, z0 + noise * torch.randn(n, 16, generator=g)


def test_quantile_gate_is_the_k_th_largest_cosine():
    pos = torch.tensor([0.1, 0.5, 0.3, 0.2, 0.4])
    assert float(quantile_gate(pos, 0.4)) == pytest.approx(0.4)  # k = ceil(0.4 * 5) = 2: 0.5, 0.4
    assert float(quantile_gate(pos, 1.0)) == pytest.approx(0.1)
    assert float(quantile_gate(pos, 0.01)) == pytest.approx(0.5)  # at least one row
    with pytest.raises(ValueError):
        quantile_gate(pos, 0.0)


def test_simclr_quantile_gate_fires_on_the_top_q_rows_although_every_cosine_is_below_t():
    z0, z1 = _pairs(16, noise=1.5)
    z = torch.nn.functional.normalize(torch.cat([z0, z1]), dim=1)
    pos = (z * z.roll(16, 0)).sum(1)
    assert float(pos.max()) < 0.9
    _, fixed = false_loss(z0, z1, threshold=0.9)
    assert float(fixed["fire_rate"]) == 0.0  # the paper's fixed gate never fires here
    loss, stats = false_loss(z0, z1, threshold=0.9, gate="quantile", gate_quantile=0.25)
    # Each positive pair's cosine is shared by its two rows: the top 8 of 32 rows are 4 pairs.
    assert float(stats["fire_rate"]) == pytest.approx(math.ceil(0.25 * 32) / 32)
    assert float(stats["gate_cos"]) == pytest.approx(float(pos.topk(8).values[-1]))
    # The fired rows are exactly those with the top cosines: compare with FALSE at a fixed T just below the gate.
    same, _ = false_loss(z0, z1, threshold=float(stats["gate_cos"]) - 1e-6)
    assert float(loss) == pytest.approx(float(same))
    # The official selection and symmetric per_anchor take the gate too.
    for kwargs in ({"selection": "official"}, {"symmetric": True}):
        _, s = false_loss(z0, z1, threshold=0.9, gate="quantile", gate_quantile=1.0, **kwargs)
        assert float(s["fire_rate"]) > 0.0


def test_moco_quantile_gate_fires_on_the_top_q_queries():
    g = torch.Generator().manual_seed(1)
    q, k = _pairs(8, noise=1.5, seed=2)
    queue = torch.randn(32, 16, generator=g)
    pos = torch.nn.functional.cosine_similarity(q, k, dim=1)
    assert float(pos.max()) < 0.9
    _, fixed = moco_false_loss(q, k, queue, threshold=0.9)
    assert float(fixed["fire_rate"]) == 0.0
    loss, stats = moco_false_loss(q, k, queue, threshold=0.9, gate="quantile", gate_quantile=0.25)
    assert float(stats["fire_rate"]) == pytest.approx(2 / 8)
    same, _ = moco_false_loss(q, k, queue, threshold=float(pos.topk(2).values[-1]) - 1e-6)
    assert float(loss) == pytest.approx(float(same))


def test_gate_arguments_are_checked():
    z0, z1 = _pairs(4, 0.1)
    with pytest.raises(ValueError, match="gate"):
        false_loss(z0, z1, gate="relative")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gate_quantile"):
        false_loss(z0, z1, gate="quantile", gate_quantile=1.5)


def test_tasks_pass_the_gate_to_their_loss():
    from falsecl.tasks.moco import MoCo
    from falsecl.tasks.simclr import SimCLR

    simclr = SimCLR(arch="resnet18", in_channels=3, hidden_dim=16, output_dim=8, gate="quantile", gate_quantile=0.5)
    v = torch.randn(4, 3, 32, 32)
    _, stats = simclr.pretrain_loss(v, torch.randn(4, 3, 32, 32))
    assert float(stats["false/fire_rate"]) == pytest.approx(0.5)
    moco = MoCo(arch="resnet18", in_channels=3, hidden_dim=16, output_dim=8, queue_size=8, gate="quantile",
                gate_quantile=0.5)
    moco.queue.enqueue(torch.nn.functional.normalize(torch.randn(8, 8), dim=1), None)
    _, stats = moco.pretrain_loss(v, torch.randn(4, 3, 32, 32))
    assert float(stats["false/fire_rate"]) == pytest.approx(0.5)
