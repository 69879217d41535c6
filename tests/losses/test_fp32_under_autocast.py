"""bf16 never reaches the similarities that FALSE selects from: under autocast the losses equal fp32."""

import pytest
import torch

from falsecl.losses import FALSELoss
from falsecl.losses.false import false_loss, select_per_anchor
from falsecl.losses.pairs import queue_similarities, simclr_similarities


def near_ties(n=16, d=64, seed=0):
    """Embeddings whose similarities differ by less than bf16's resolution (1/128 near 1)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.normalize(torch.randn(1, d, generator=g), dim=1)
    z0 = base + 0.02 * torch.randn(n, d, generator=g)
    z1 = z0 + 0.002 * torch.randn(n, d, generator=g)
    return z0, z1


@pytest.mark.parametrize("selection", ["per_anchor", "official"])
def test_false_loss_and_selection_under_bf16_autocast_equal_fp32(selection):
    z0, z1 = near_ties()
    ref, ref_stats = false_loss(z0, z1, 0.5, 1.0, 0.9, selection)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, stats = false_loss(z0, z1, 0.5, 1.0, 0.9, selection)
        got_bf16_in, _ = false_loss(z0.bfloat16().float(), z1.bfloat16().float(), 0.5, 1.0, 0.9, selection)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    assert stats["num_fired"] == ref_stats["num_fired"]
    torch.testing.assert_close(stats["candidate_cos"], ref_stats["candidate_cos"], rtol=0, atol=1e-6)
    ref_in, _ = false_loss(z0.bfloat16().float(), z1.bfloat16().float(), 0.5, 1.0, 0.9, selection)
    torch.testing.assert_close(got_bf16_in, ref_in, rtol=0, atol=1e-6)  # bf16 inputs: only their own rounding


def test_similarities_under_autocast_equal_fp32():
    z0, z1 = near_ties(32)
    ref_pos, ref_neg = simclr_similarities(z0, z1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pos, neg = simclr_similarities(z0, z1)
    assert pos.dtype == neg.dtype == torch.float32
    torch.testing.assert_close(pos, ref_pos, rtol=0, atol=1e-6)
    torch.testing.assert_close(neg, ref_neg, rtol=0, atol=1e-6)


def test_near_ties_are_reordered_by_bf16_so_the_guard_matters():
    z0, z1 = near_ties(32)
    z = torch.nn.functional.normalize(torch.cat([z0, z1]), dim=1)
    ref = select_per_anchor(z @ z.T, 0.9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = (z @ z.T).float()
    picked = select_per_anchor(rounded, 0.9)
    assert any(not torch.equal(a, b) for a, b in zip(ref, picked, strict=True))


def test_queue_similarities_under_autocast_are_fp32():
    q, k = near_ties(8)
    queue = torch.randn(64, q.shape[1])
    ref = queue_similarities(q, k, queue)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = queue_similarities(q, k, queue)
    for a, b in zip(got, ref, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_module_with_bf16_projection_head_matches_fp32_on_the_same_embeddings():
    z0, z1 = near_ties()
    head = torch.nn.Linear(z0.shape[1], 32)
    loss_fn = FALSELoss(0.5, 1.0, 0.9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p0, p1 = head(z0), head(z1)  # bf16 activations, as a projection head gives under autocast
        got = loss_fn(p0, p1)
    assert p0.dtype == torch.bfloat16
    ref = loss_fn(p0.float(), p1.float())
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_lightly_ntxent_in_the_simclr_task_runs_in_fp32():
    from falsecl.tasks.simclr import build_contrastive_loss

    loss_fn = build_contrastive_loss("ntxent", 0.5, 0.0, 0.9, "per_anchor", 1, False, "keep", 0.1, 1.0)
    z0, z1 = near_ties()
    ref = loss_fn(z0, z1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss_fn(z0, z1)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_byol_loss_under_autocast_is_fp32_on_the_same_embeddings():
    from falsecl.tasks.byol import byol_loss

    p, z = near_ties()
    p16, z16 = p.bfloat16(), z.bfloat16()
    expected = byol_loss(p16.float(), z16.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = byol_loss(p16, z16)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
