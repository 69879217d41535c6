"""Debiased and hard-negative losses against naive per-row references written from the papers' equations."""

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from falsecl.losses.debiased import (
    DebiasedContrastiveLoss,
    debiased_contrastive_loss,
    debiased_from_similarities,
)
from falsecl.losses.hard_negative import HardNegativeLoss, hard_negative_loss
from falsecl.losses.pairs import queue_similarities, simclr_similarities


def _rows(z0, z1):
    """Stacked normalised rows and the positive of each row, as in the SimCLR paper."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    n = z0.shape[0]
    return z, [(i + n) % (2 * n) for i in range(2 * n)]


def naive_estimator(sp, sn, t, tau_plus, beta):
    """One anchor: Chuang et al. 2020 Eq. (debiased g) with Robinson et al. 2021 importance weights."""
    k = len(sn)
    ep = torch.exp(sp / t)
    en = [torch.exp(s / t) for s in sn]
    w = [torch.exp(beta * s / t) for s in sn]
    reweighted = sum(wi * ei for wi, ei in zip(w, en, strict=True)) / (sum(w) / k)
    ng = (reweighted - tau_plus * k * ep) / (1 - tau_plus)
    ng = torch.clamp(ng, min=k * math.exp(-1 / t))
    return -torch.log(ep / (ep + ng))


def naive_simclr(z0, z1, t, tau_plus=0.0, beta=0.0):
    z, pos = _rows(z0, z1)
    losses = []
    for i in range(z.shape[0]):
        sp = z[i] @ z[pos[i]]
        sn = [z[i] @ z[k] for k in range(z.shape[0]) if k not in (i, pos[i])]
        losses.append(naive_estimator(sp, sn, t, tau_plus, beta))
    return torch.stack(losses).mean()


def naive_queue(q, k, queue, t, tau_plus=0.0, beta=0.0):
    q, k, queue = (F.normalize(x, dim=1) for x in (q, k, queue))
    losses = [naive_estimator(q[i] @ k[i], [q[i] @ m for m in queue], t, tau_plus, beta) for i in range(len(q))]
    return torch.stack(losses).mean()


def naive_ntxent(z0, z1, t):
    z, pos = _rows(z0, z1)
    out = []
    for i in range(z.shape[0]):
        den = sum(torch.exp(z[i] @ z[k] / t) for k in range(z.shape[0]) if k != i)
        out.append(-torch.log(torch.exp(z[i] @ z[pos[i]] / t) / den))
    return torch.stack(out).mean()


def _pair(n=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, d, generator=g, dtype=dtype)
    z1 = z0 + 0.5 * torch.randn(n, d, generator=g, dtype=dtype)
    return z0.requires_grad_(), z1.requires_grad_()


def _grads(fn, z0, z1):
    loss = fn(z0, z1)
    g0, g1 = torch.autograd.grad(loss, (z0, z1))
    return loss.detach(), g0, g1


def test_simclr_similarities_layout():
    z0, z1 = _pair(4, 3)
    pos, neg = simclr_similarities(z0, z1)
    z, p = _rows(z0, z1)
    assert pos.shape == (8,) and neg.shape == (8, 6)
    for i in range(8):
        torch.testing.assert_close(pos[i], z[i] @ z[p[i]])
        expected = torch.stack([z[i] @ z[k] for k in range(8) if k not in (i, p[i])])
        torch.testing.assert_close(neg[i], expected)


@pytest.mark.parametrize("tau_plus", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("t", [0.5, 0.1])
def test_debiased_matches_naive_reference(tau_plus, t):
    z0, z1 = _pair()
    got = _grads(lambda a, b: debiased_contrastive_loss(a, b, t, tau_plus), z0, z1)
    ref = _grads(lambda a, b: naive_simclr(a, b, t, tau_plus), z0, z1)
    for x, y in zip(got, ref, strict=True):
        torch.testing.assert_close(x, y)


def test_debiased_clamp_binds_and_is_matched():
    # Aligned positives and a large prior push the estimate below K * exp(-1/t): the clamp must bind.
    z0, z1 = _pair(n=5, d=4, seed=3)
    z1 = (z0.detach() + 0.01 * torch.randn_like(z0)).requires_grad_()
    pos, neg = simclr_similarities(z0, z1)
    t, tau_plus = 0.5, 0.9
    raw = (torch.exp(neg / t).sum(1) - tau_plus * neg.shape[1] * torch.exp(pos / t)) / (1 - tau_plus)
    assert (raw < neg.shape[1] * math.exp(-1 / t)).any()
    got = _grads(lambda a, b: debiased_contrastive_loss(a, b, t, tau_plus), z0, z1)
    ref = _grads(lambda a, b: naive_simclr(a, b, t, tau_plus), z0, z1)
    for x, y in zip(got, ref, strict=True):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("tau_plus", [0.0, 0.1])
def test_hard_negative_matches_naive_reference(beta, tau_plus):
    z0, z1 = _pair(seed=1)
    got = _grads(lambda a, b: hard_negative_loss(a, b, 0.5, beta, tau_plus), z0, z1)
    ref = _grads(lambda a, b: naive_simclr(a, b, 0.5, tau_plus, beta), z0, z1)
    for x, y in zip(got, ref, strict=True):
        torch.testing.assert_close(x, y)


def test_identities_with_ntxent():
    z0, z1 = _pair(seed=2)
    nt = _grads(lambda a, b: naive_ntxent(a, b, 0.5), z0, z1)
    lightly_nt = NTXentLoss(temperature=0.5)(z0.float(), z1.float())
    torch.testing.assert_close(nt[0].float(), lightly_nt)
    for got in (
        _grads(lambda a, b: debiased_contrastive_loss(a, b, 0.5, tau_plus=0.0), z0, z1),
        _grads(lambda a, b: hard_negative_loss(a, b, 0.5, beta=0.0, tau_plus=0.0), z0, z1),
    ):
        for x, y in zip(got, nt, strict=True):
            torch.testing.assert_close(x, y)
    # and the hardness weighting does change the loss when beta > 0
    assert not torch.isclose(hard_negative_loss(z0, z1, 0.5, beta=1.0), nt[0]).item()


def test_hard_negative_beta_zero_is_debiased():
    z0, z1 = _pair(seed=4)
    a = hard_negative_loss(z0, z1, 0.3, beta=0.0, tau_plus=0.2)
    b = debiased_contrastive_loss(z0, z1, 0.3, tau_plus=0.2)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_queue_layout_matches_naive(beta):
    q, k = _pair(n=4, d=5, seed=5)
    queue = torch.randn(7, 5, dtype=torch.float64)
    got = hard_negative_loss(q, k, 0.2, beta, 0.1, queue=queue)
    ref = naive_queue(q, k, queue, 0.2, 0.1, beta)
    torch.testing.assert_close(got, ref)
    got = debiased_contrastive_loss(q, k, 0.2, 0.1, queue=queue)
    torch.testing.assert_close(got, naive_queue(q, k, queue, 0.2, 0.1, 0.0))
    # tau_plus = 0, beta = 0 with a queue is MoCo's InfoNCE
    pos, neg = queue_similarities(q, k, queue)
    infonce = F.cross_entropy(torch.cat([pos[:, None], neg], 1) / 0.2, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(debiased_contrastive_loss(q, k, 0.2, 0.0, queue=queue), infonce)


def test_small_temperature_is_finite_and_correct():
    z0, z1 = _pair(seed=6)
    t = 0.01
    got = _grads(lambda a, b: hard_negative_loss(a.float(), b.float(), t, 1.0, 0.1), z0, z1)
    ref = _grads(lambda a, b: naive_simclr(a, b, t, 0.1, 1.0), z0, z1)
    assert all(torch.isfinite(x).all() for x in got)
    torch.testing.assert_close(got[0], ref[0].float(), rtol=1e-4, atol=1e-3)


def test_modules_and_stats():
    z0, z1 = _pair(seed=7)
    m = DebiasedContrastiveLoss(0.5, 0.1)
    torch.testing.assert_close(m(z0, z1), debiased_contrastive_loss(z0, z1, 0.5, 0.1))
    assert set(m.last_stats) == {"positive_cos"}
    h = HardNegativeLoss(0.5, beta=2.0, tau_plus=0.1)
    torch.testing.assert_close(h(z0, z1), hard_negative_loss(z0, z1, 0.5, 2.0, 0.1))
    assert "beta=2.0" in repr(h)


@pytest.mark.parametrize(
    "call",
    [
        lambda z: debiased_contrastive_loss(z, z, temperature=0.0),
        lambda z: debiased_contrastive_loss(z, z, tau_plus=1.0),
        lambda z: debiased_contrastive_loss(z, z, tau_plus=-0.1),
        lambda z: hard_negative_loss(z, z, beta=-1.0),
        lambda z: hard_negative_loss(z, z[:, :2]),
        lambda z: hard_negative_loss(z[:1], z[:1]),
        lambda z: debiased_from_similarities(torch.zeros(3), torch.zeros(3, 0)),
        lambda z: DebiasedContrastiveLoss(tau_plus=2.0),
        lambda z: HardNegativeLoss(temperature=-1.0),
        lambda z: queue_similarities(z, z, torch.zeros(4, 7)),
    ],
)
def test_illegal_arguments_raise(call):
    with pytest.raises(ValueError):
        call(torch.randn(4, 3))


@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("tau_plus", [0.0, 0.1])
def test_queue_self_keys_are_not_negatives(beta, tau_plus):
    q, k = _pair(n=4, d=5, seed=8)
    queue = torch.randn(7, 5, dtype=torch.float64)
    queue[2] = k.detach()[1]  # query 1's earlier view, identical to its positive
    query_ids = torch.tensor([0, 1, 2, 3])
    queue_ids = torch.tensor([0, 0, 1, -1, 5, 3, 6])  # query 0 meets two self-keys, 1 and 3 one each
    got = hard_negative_loss(q, k, 0.2, beta, tau_plus, queue=queue, query_ids=query_ids, queue_ids=queue_ids)
    # naive: each query's own negatives are the queue without its self-keys
    qn, kn, mn = (F.normalize(x, dim=1) for x in (q, k, queue))
    losses = []
    for i in range(4):
        sn = [qn[i] @ mn[j] for j in range(7) if queue_ids[j] != query_ids[i]]
        losses.append(naive_estimator(qn[i] @ kn[i], sn, 0.2, tau_plus, beta))
    ref = torch.stack(losses).mean()
    torch.testing.assert_close(got, ref)
    (g,) = torch.autograd.grad(got, q)
    (g_ref,) = torch.autograd.grad(ref, q)
    torch.testing.assert_close(g, g_ref)
    if beta == 0.0:
        torch.testing.assert_close(
            debiased_contrastive_loss(q, k, 0.2, tau_plus, queue, query_ids=query_ids, queue_ids=queue_ids), got
        )
    assert not torch.allclose(got, hard_negative_loss(q, k, 0.2, beta, tau_plus, queue=queue))


def test_queue_self_keys_edge_cases_and_modules():
    q, k = _pair(n=3, d=4, seed=9)
    queue = torch.randn(5, 4, dtype=torch.float64)
    ids = torch.tensor([1, 2, 3])
    all_own = torch.full((5,), 1)  # query 0 has no negatives left: loss 0, finite gradients
    for beta in (0.0, 1.0):
        per = hard_negative_loss(q.float(), k.float(), 0.01, beta, 0.1, queue.float(), query_ids=ids, queue_ids=all_own)
        (g,) = torch.autograd.grad(per, q)
        assert torch.isfinite(per) and torch.isfinite(g).all()
    pos, neg = queue_similarities(q, k, queue)
    excluded = torch.zeros(3, 5, dtype=torch.bool)
    excluded[0] = True
    rows = debiased_from_similarities(pos, neg, 0.2, 0.1, excluded=excluded)
    assert rows[0].item() == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(rows[1:], debiased_from_similarities(pos, neg, 0.2, 0.1)[1:])
    # no ids, or unknown ids: unchanged
    unknown = torch.full((5,), -1)
    torch.testing.assert_close(
        debiased_contrastive_loss(q, k, 0.2, 0.1, queue, query_ids=ids, queue_ids=unknown),
        debiased_contrastive_loss(q, k, 0.2, 0.1, queue),
    )
    m, h = DebiasedContrastiveLoss(0.2, 0.1), HardNegativeLoss(0.2, 1.0, 0.1)
    own = torch.tensor([1, -1, 9, 9, 9])
    torch.testing.assert_close(
        m(q, k, queue, ids, own), debiased_contrastive_loss(q, k, 0.2, 0.1, queue, query_ids=ids, queue_ids=own)
    )
    assert m.last_stats["self_key_rate"].item() == pytest.approx(1 / 3)
    torch.testing.assert_close(
        h(q, k, queue, ids, own), hard_negative_loss(q, k, 0.2, 1.0, 0.1, queue, query_ids=ids, queue_ids=own)
    )
    with pytest.raises(ValueError, match="MoCo queue only"):
        m(q, k, None, ids, own)
    with pytest.raises(ValueError, match="one id per query"):
        debiased_from_similarities(pos, neg, excluded=excluded[:2])
