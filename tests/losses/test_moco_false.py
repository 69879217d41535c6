"""MoCo + FALSE against a naive per-query reference; the MoCo queue."""

import math

import pytest
import torch
import torch.nn.functional as F

from falsecl.losses.moco_false import MoCoFALSELoss, moco_false_loss, select_queue_candidates
from falsecl.losses.queue import NO_ID, KeyQueue, self_key_mask


def naive_moco_false(q, k, queue, t, alpha, threshold, top_k, negatives, query_ids=None, queue_ids=None):
    """Per query, straight from the equations: candidates by |s_qm - s_q+|, ties to the lower queue index.

    With ids, each query's queue is the queue without the keys of its own patch (ids < 0 never match).
    """
    q, k, queue = (F.normalize(x, dim=1) for x in (q, k, queue))
    losses, fired = [], 0
    for i in range(q.shape[0]):
        sp = q[i] @ k[i]
        rows = range(len(queue))
        if query_ids is not None:
            rows = [j for j in rows if not (queue_ids[j] >= 0 and queue_ids[j] == query_ids[i])]
        sims = [q[i] @ queue[j] for j in rows]
        order = sorted(range(len(sims)), key=lambda j: (abs(sims[j].item() - sp.item()), j))
        cands = set(order[:top_k]) if sp.item() >= threshold else set()
        fired += bool(cands)
        ep = torch.exp(sp / t)
        num = ep + sum((alpha * torch.exp(sims[j] / t) for j in cands), torch.zeros((), dtype=q.dtype))
        den = ep
        for j, s in enumerate(sims):
            w = alpha if (negatives == "eliminate" and j in cands) else 1.0
            den = den + w * torch.exp(s / t)
        losses.append(-torch.log(num / den))
    return torch.stack(losses).mean(), fired / q.shape[0]


def _data(n=6, d=4, size=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, d, generator=g, dtype=torch.float64)
    # half the keys close to the query (gate passes), half far (gate fails)
    noise = torch.randn(n, d, generator=g, dtype=torch.float64)
    k = q + torch.where(torch.arange(n)[:, None] < n // 2, 0.05, 3.0) * noise
    queue = torch.randn(size, d, generator=g, dtype=torch.float64)
    queue[:3] = q[:3] + 0.3 * torch.randn(3, d, generator=g, dtype=torch.float64)  # near-duplicates of queries
    return q.requires_grad_(), k, queue


@pytest.mark.parametrize("negatives", ["keep", "eliminate"])
@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
@pytest.mark.parametrize("top_k", [1, 3])
def test_matches_naive_reference(negatives, alpha, top_k):
    q, k, queue = _data()
    loss, stats = moco_false_loss(q, k, queue, 0.2, alpha, 0.9, top_k, negatives)
    ref, fire_rate = naive_moco_false(q, k, queue, 0.2, alpha, 0.9, top_k, negatives)
    torch.testing.assert_close(loss, ref)
    (g,) = torch.autograd.grad(loss, q)
    (g_ref,) = torch.autograd.grad(ref, q)
    torch.testing.assert_close(g, g_ref)
    assert 0 < fire_rate < 1  # the data exercises both sides of the gate
    assert stats["fire_rate"].item() == pytest.approx(fire_rate)


def infonce(q, k, queue, t):
    q, k, queue = (F.normalize(x, dim=1) for x in (q, k, queue))
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / t
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))


def test_alpha_zero_is_moco_infonce():
    q, k, queue = _data(seed=1)
    loss, stats = moco_false_loss(q, k, queue, 0.2, alpha=0.0, threshold=0.9)
    assert stats["fire_rate"] > 0
    torch.testing.assert_close(loss, infonce(q, k, queue, 0.2))
    # nothing passes the gate: InfoNCE whatever alpha is
    loss, stats = moco_false_loss(q, k, queue, 0.2, alpha=1.0, threshold=1.0)
    assert stats["fire_rate"] == 0
    torch.testing.assert_close(loss, infonce(q, k, queue, 0.2))
    # a firing FALSE lowers the loss (candidates join the numerator)
    assert moco_false_loss(q, k, queue, 0.2, alpha=1.0, threshold=0.9)[0] < infonce(q, k, queue, 0.2)


def test_selection_ties_and_top_k_beyond_queue():
    pos = torch.tensor([0.95, 0.5])
    neg = torch.tensor([[0.90, 1.00, 0.2], [0.4, 0.6, 0.5]])
    accepted, chosen = select_queue_candidates(pos, neg, threshold=0.9, top_k=1)
    # row 0: |0.9-0.95| == |1.0-0.95| -> tie goes to the lower index 0; row 1 fails the gate
    assert chosen.tolist() == [[True, False, False], [False, False, True]]
    assert accepted.tolist() == [[True, False, False], [False, False, False]]
    accepted, _ = select_queue_candidates(pos, neg, threshold=0.9, top_k=10)
    assert accepted[0].all() and not accepted[1].any()


def test_keys_and_queue_get_no_gradient_and_small_tau_is_finite():
    q, k, queue = _data(seed=2)
    k.requires_grad_()
    queue.requires_grad_()
    loss, _ = moco_false_loss(q.float(), k.float(), queue.float(), temperature=0.01)
    loss.backward()
    assert math.isfinite(loss.item()) and k.grad is None and queue.grad is None and q.grad is not None


def test_module_and_stats():
    q, k, queue = _data(seed=3)
    m = MoCoFALSELoss(0.2, alpha=0.5, threshold=0.8, top_k=2, negatives="eliminate")
    torch.testing.assert_close(m(q, k, queue), moco_false_loss(q, k, queue, 0.2, 0.5, 0.8, 2, "eliminate")[0])
    assert set(m.last_stats) == {"fire_rate", "num_fired", "candidate_cos", "positive_cos", "gate_cos"}
    assert -1 <= m.last_stats["candidate_cos"] <= 1
    assert "negatives='eliminate'" in repr(m)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0.0},
        {"alpha": 1.5},
        {"threshold": 2.0},
        {"top_k": 0},
        {"top_k": True},
        {"negatives": "drop"},
    ],
)
def test_illegal_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        MoCoFALSELoss(**kwargs)
    q = torch.randn(3, 4)
    with pytest.raises(ValueError):
        moco_false_loss(q, q, torch.randn(5, 4), **kwargs)


def test_shape_errors():
    q = torch.randn(3, 4)
    with pytest.raises(ValueError, match="queue"):
        moco_false_loss(q, q, torch.randn(5, 3))
    with pytest.raises(ValueError):
        moco_false_loss(q, q[:2], torch.randn(5, 4))


def test_queue_fifo_wraps_and_is_in_state_dict():
    torch.manual_seed(0)
    queue = KeyQueue(size=5, dim=2)
    assert torch.allclose(queue.keys.norm(dim=1), torch.ones(5))
    a = torch.arange(6.0).view(3, 2)
    queue.enqueue(a)
    assert torch.equal(queue.keys[:3], a) and int(queue.ptr) == 3
    b = 10 + torch.arange(6.0).view(3, 2)
    queue.enqueue(b)  # slots 3, 4, then wraps to 0
    assert torch.equal(queue.keys[3:], b[:2]) and torch.equal(queue.keys[0], b[2]) and int(queue.ptr) == 1
    state = queue.state_dict()
    assert set(state) == {"keys", "ids", "ptr"}
    other = KeyQueue(size=5, dim=2)
    other.load_state_dict(state)
    assert torch.equal(other.keys, queue.keys) and int(other.ptr) == 1
    big = torch.arange(14.0).view(7, 2)  # more keys than slots: the newest 5 survive, FIFO slots
    other.enqueue(big)  # one by one from slot 1: rows 0..3 -> slots 1..4, rows 4..6 -> slots 0..2
    assert torch.equal(other.keys, big[[4, 5, 6, 2, 3]]) and int(other.ptr) == (1 + 7) % 5
    with pytest.raises(ValueError):
        other.enqueue(torch.zeros(2, 3))
    with pytest.raises(ValueError):
        KeyQueue(0, 2)


def _with_self_keys(seed=0):
    """Queue with keys of the queries' own patches: 2 of query 0, 1 of queries 1 to 3 (query 2's is an exact copy)."""
    q, k, queue = _data(seed=seed)
    query_ids = torch.tensor([10, 11, 12, 13, 14, 15])
    queue_ids = torch.tensor([10, 11, 10, 12, NO_ID, 99, 13, 7, 8])
    queue[3] = k[2]  # an earlier view identical to query 2's positive: the perfect "closest to the positive"
    return q, k, queue, query_ids, queue_ids


def test_self_key_mask():
    own = self_key_mask(torch.tensor([3, 5, -1]), torch.tensor([5, 3, -1, 3, 7]))
    assert own.tolist() == [
        [False, True, False, True, False],
        [True, False, False, False, False],
        [False, False, False, False, False],  # unknown ids (-1) never match, not even each other
    ]
    assert self_key_mask(None, torch.zeros(3, dtype=torch.long)) is None
    with pytest.raises(ValueError, match="integer"):
        self_key_mask(torch.zeros(2), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("negatives", ["keep", "eliminate"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("top_k", [1, 3])
def test_masked_matches_naive_reference(negatives, alpha, top_k):
    q, k, queue, query_ids, queue_ids = _with_self_keys()
    loss, stats = moco_false_loss(q, k, queue, 0.2, alpha, 0.9, top_k, negatives, query_ids, queue_ids)
    ref, fire_rate = naive_moco_false(q, k, queue, 0.2, alpha, 0.9, top_k, negatives, query_ids, queue_ids)
    torch.testing.assert_close(loss, ref)
    (g,) = torch.autograd.grad(loss, q)
    (g_ref,) = torch.autograd.grad(ref, q)
    torch.testing.assert_close(g, g_ref)
    assert torch.isfinite(g).all()
    assert stats["fire_rate"].item() == pytest.approx(fire_rate)
    assert stats["self_key_rate"].item() == pytest.approx(4 / 6)
    # the masked loss differs from the unmasked one (the self-keys were in the denominator)
    assert not torch.allclose(loss, moco_false_loss(q, k, queue, 0.2, alpha, 0.9, top_k, negatives)[0])


def test_planted_self_key_is_never_a_candidate_nor_a_negative():
    q, k, queue, query_ids, queue_ids = _with_self_keys()
    pos = (F.normalize(q, dim=1) * F.normalize(k, dim=1)).sum(1).detach()
    neg = F.normalize(q, dim=1).detach() @ F.normalize(queue, dim=1).T
    own = self_key_mask(query_ids, queue_ids)
    for top_k in (1, 2, 9, 20):
        _, chosen_plain = select_queue_candidates(pos, neg, -1.0, top_k)
        accepted, chosen = select_queue_candidates(pos, neg, -1.0, top_k, own)
        assert not (chosen & own).any() and not (accepted & own).any()
        assert (chosen.sum(1) == torch.clamp((~own).sum(1), max=top_k)).all()
    assert chosen_plain[2, 3]  # unmasked, FALSE picks query 2's own earlier view (|s - s+| = 0)
    # masked: exactly the loss on a queue without query 2's self-key, for query 2
    loss_2, _ = moco_false_loss(q[2:3], k[2:3], queue, 0.2, 1.0, -1.0, 1, "keep", query_ids[2:3], queue_ids)
    keep = torch.arange(len(queue)) != 3
    ref_2, _ = moco_false_loss(q[2:3], k[2:3], queue[keep], 0.2, 1.0, -1.0, 1, "keep")
    torch.testing.assert_close(loss_2, ref_2)


def test_all_keys_masked_is_finite_and_without_ids_unchanged():
    q, k, queue = _data(seed=4)
    ids = torch.zeros(len(q), dtype=torch.long)
    queue_ids = torch.zeros(len(queue), dtype=torch.long)  # every key is every query's own: no negatives
    loss, stats = moco_false_loss(q.float(), k.float(), queue.float(), 0.01, 1.0, -1.0, 3, "eliminate", ids, queue_ids)
    (g,) = torch.autograd.grad(loss, q)
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(g).all() and stats["fire_rate"] == 0
    plain = moco_false_loss(q, k, queue, 0.2, 0.5, 0.9, 2)
    unknown = torch.full((len(queue),), NO_ID)
    for args in ((None, None), (ids, None), (None, queue_ids), (ids, unknown)):
        got = moco_false_loss(q, k, queue, 0.2, 0.5, 0.9, 2, "keep", *args)
        torch.testing.assert_close(got[0], plain[0])
        assert got[1]["fire_rate"] == plain[1]["fire_rate"]
    with pytest.raises(ValueError, match="one id per query"):
        moco_false_loss(q, k, queue, query_ids=ids[:2], queue_ids=queue_ids)
    m = MoCoFALSELoss(0.2, 0.5, 0.9, 2)
    torch.testing.assert_close(m(q, k, queue, ids, unknown), plain[0])


def test_queue_keeps_ids_through_wrap_and_checkpoint():
    queue = KeyQueue(size=5, dim=2)
    assert queue.ids.tolist() == [NO_ID] * 5 and queue.ids.dtype == torch.long
    queue.enqueue(torch.randn(3, 2), torch.tensor([4, 5, 6]))
    queue.enqueue(torch.randn(3, 2), torch.tensor([7, 8, 9]))  # slots 3, 4, then wraps to 0
    assert queue.ids.tolist() == [9, 5, 6, 7, 8]
    queue.enqueue(torch.randn(1, 2))  # no ids: unknown
    assert queue.ids.tolist() == [9, NO_ID, 6, 7, 8]
    queue.enqueue(torch.randn(7, 2), torch.arange(20, 27))  # more than the queue: the newest 5, FIFO slots
    assert queue.ids.tolist() == [23, 24, 25, 26, 22]  # from slot 2: 20..26 -> slots 2, 3, 4, 0, 1, 2, 3
    state = queue.state_dict()
    other = KeyQueue(size=5, dim=2)
    other.load_state_dict(state)
    assert torch.equal(other.ids, queue.ids) and torch.equal(other.keys, queue.keys)
    # a checkpoint from before ids were kept loads with unknown ids
    old = {name: v for name, v in state.items() if name != "ids"}
    other.load_state_dict(old)
    assert other.ids.tolist() == [NO_ID] * 5 and torch.equal(other.keys, queue.keys)
    with pytest.raises(ValueError, match="ids"):
        queue.enqueue(torch.randn(2, 2), torch.tensor([1, 2, 3]))
