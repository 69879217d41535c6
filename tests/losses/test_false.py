"""FALSELoss against a naive per-row reference written straight from the equations."""

from __future__ import annotations

import math

import pytest
import torch
from lightly.loss import NTXentLoss

from falsecl.losses import FALSELoss, false_loss
from falsecl.losses.false import OFFICIAL_FILLER


def _cos_matrix(z0: torch.Tensor, z1: torch.Tensor) -> list[list[float]]:
    z = torch.cat([z0, z1]).tolist()
    norms = [math.sqrt(sum(v * v for v in row)) for row in z]
    rows = list(zip(z, norms, strict=True))
    return [[sum(a * b for a, b in zip(zi, zj, strict=True)) / (ni * nj) for zj, nj in rows] for zi, ni in rows]


def _naive_sets_per_anchor(s, threshold, top_k, symmetric):
    n2 = len(s)
    sets = [set() for _ in range(n2)]
    for i in range(n2):
        p = (i + n2 // 2) % n2
        negs = [j for j in range(n2) if j not in (i, p)]
        # Stable sort on (distance, index): ties go to the lower index.
        ranked = sorted(negs, key=lambda j: (abs(s[i][j] - s[i][p]), j))
        if s[i][p] >= threshold:
            sets[i].update(ranked[:top_k])
    if symmetric:
        for i in range(n2):
            for m in list(sets[i]):
                sets[m].add(i)
    return sets


def _naive_sets_official(s, tau, threshold):
    n2 = len(s)
    big = [[math.exp(v / tau) for v in row] for row in s]
    pos_sim = [big[i][(i + n2 // 2) % n2] for i in range(n2)]
    diff = [[OFFICIAL_FILLER] * n2 for _ in range(n2)]
    for i in range(n2):
        for j in range(i + 1, n2):
            if j != (i + n2 // 2) % n2:
                diff[i][j] = abs(big[i][j] - pos_sim[i])
    gmin = min(min(row) for row in diff)
    sets = [set() for _ in range(n2)]
    for a in range(n2):
        p = (a + n2 // 2) % n2
        if math.log(pos_sim[a]) * tau < threshold:
            continue
        for m in range(n2):
            if diff[a][m] == gmin and m not in (a, p):
                sets[a].add(m)
    return sets


def naive_false(z0, z1, tau=0.5, alpha=1.0, threshold=0.9, selection="per_anchor", top_k=1, symmetric=False,
                negatives="keep"):
    s = _cos_matrix(z0, z1)
    n2 = len(s)
    if selection == "per_anchor":
        sets = _naive_sets_per_anchor(s, threshold, top_k, symmetric)
    else:
        sets = _naive_sets_official(s, tau, threshold)
    total = 0.0
    for i in range(n2):
        p = (i + n2 // 2) % n2
        e = [math.exp(s[i][k] / tau) for k in range(n2)]
        num = e[p] + alpha * sum(e[m] for m in sets[i])
        if negatives == "keep":
            den = e[p] + sum(e[k] for k in range(n2) if k not in (i, p))
        else:
            den = num + sum(e[k] for k in range(n2) if k not in (i, p) and k not in sets[i])
        total += -math.log(num / den)
    return total / n2, sets


CASES = [
    # n, d, tau, alpha, threshold, selection, top_k, symmetric, negatives
    (1, 4, 0.5, 1.0, -1.0, "per_anchor", 1, False, "keep"),
    (2, 3, 0.5, 1.0, -1.0, "per_anchor", 1, False, "keep"),
    (5, 8, 0.5, 1.0, 0.0, "per_anchor", 1, False, "keep"),
    (6, 4, 0.2, 0.5, -0.2, "per_anchor", 3, False, "keep"),
    (6, 4, 0.2, 0.5, -0.2, "per_anchor", 3, True, "keep"),
    (7, 5, 0.1, 0.3, -1.0, "per_anchor", 2, True, "eliminate"),
    (4, 3, 1.0, 0.0, -1.0, "per_anchor", 1, False, "eliminate"),
    (3, 6, 0.5, 1.0, -1.0, "per_anchor", 50, False, "keep"),
    (5, 8, 0.5, 1.0, -1.0, "official", 1, False, "keep"),
    (8, 3, 0.3, 0.7, 0.0, "official", 1, False, "keep"),
    (8, 3, 0.3, 0.7, -1.0, "official", 1, False, "eliminate"),
    (1, 3, 0.5, 1.0, -1.0, "official", 1, False, "keep"),
]


@pytest.mark.parametrize("n,d,tau,alpha,thr,selection,top_k,symmetric,negatives", CASES)
def test_matches_naive_reference(n, d, tau, alpha, thr, selection, top_k, symmetric, negatives):
    gen = torch.Generator().manual_seed(n * 100 + d)
    z0 = torch.randn(n, d, generator=gen, dtype=torch.float64)
    # Correlated views so that some positives pass the gate.
    z1 = z0 + 0.5 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    expected, sets = naive_false(z0, z1, tau, alpha, thr, selection, top_k, symmetric, negatives)
    loss, stats = false_loss(z0, z1, tau, alpha, thr, selection, top_k, symmetric, negatives)
    assert loss.item() == pytest.approx(expected, abs=1e-9, rel=1e-9)
    fired = sum(1 for f in sets if f)
    assert stats["num_fired"].item() == fired


def test_official_filler_tie_cliff_matches_reference():
    # All positives tightly aligned, negatives far apart: every real diff entry exceeds the 3.0 filler.
    n, d = 4, 8
    z0 = torch.eye(n, d, dtype=torch.float64)
    z1 = z0 + 1e-3 * torch.randn(n, d, dtype=torch.float64)
    expected, sets = naive_false(z0, z1, 0.5, 1.0, 0.9, "official")
    loss, stats = false_loss(z0, z1, 0.5, 1.0, 0.9, "official")
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    # Every firing row a attracts all its negatives m < a: row 2N-1 has 2N-2 of them.
    assert sets[2 * n - 1] == set(range(2 * n - 1)) - {n - 1}
    assert stats["fire_rate"].item() > 0.5
    per_anchor, _ = false_loss(z0, z1, 0.5, 1.0, 0.9, "per_anchor")
    assert per_anchor.item() != pytest.approx(loss.item())


@pytest.mark.parametrize("selection", ["per_anchor", "official"])
@pytest.mark.parametrize("n", [1, 3, 16])
def test_alpha_zero_and_high_threshold_are_ntxent(selection, n):
    z0, z1 = torch.randn(n, 32), torch.randn(n, 32)
    reference = NTXentLoss(temperature=0.5)(z0, z1)
    for kwargs in ({"alpha": 0.0, "threshold": -1.0}, {"alpha": 1.0, "threshold": 1.0}):
        loss = FALSELoss(temperature=0.5, selection=selection, **kwargs)(z0, z1)
        assert loss.item() == pytest.approx(reference.item(), abs=1e-6)


def test_symmetric_in_views_when_nothing_fires():
    z0, z1 = torch.randn(10, 16), torch.randn(10, 16)
    loss = FALSELoss(threshold=1.0)
    assert loss(z0, z1).item() == pytest.approx(loss(z1, z0).item(), abs=1e-6)


def test_symmetric_option_is_view_symmetric():
    z0 = torch.randn(10, 16, dtype=torch.float64)
    z1 = z0 + 0.1 * torch.randn(10, 16, dtype=torch.float64)
    loss = FALSELoss(threshold=0.0, symmetric=True, top_k=2)
    # Swapping views permutes rows (i <-> i+N), which the per-anchor rule respects.
    assert loss(z0, z1).item() == pytest.approx(loss(z1, z0).item(), abs=1e-12)


def test_perfectly_correlated_one_dimensional():
    # As in lightly's own test: identical 1-D embeddings make every similarity 1 -> -log(1 / (2N - 1)).
    n = 5
    z = torch.ones(n, 1)
    loss = FALSELoss(temperature=0.5, alpha=0.0)(z, z)
    assert loss.item() == pytest.approx(-math.log(1 / (2 * n - 1)), abs=1e-6)


def test_hand_computed_two_by_two():
    # N = 2, D = 2: rows a0=(1,0), a1=(0,1), b0=(1,0), b1=(1,1)/sqrt2.
    z0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    tau, alpha, r = 0.5, 1.0, 1 / math.sqrt(2)
    e = lambda c: math.exp(c / tau)  # noqa: E731
    # Cosines: row0 = [1, 0, 1, r], row1 = [0, 1, 0, r], row2 = [1, 0, 1, r], row3 = [r, r, r, 1].
    # Gate T = 0.9: rows 0 and 2 (s_ip = 1) pass; rows 1 and 3 (s_ip = r) do not.
    # Row 0: positive col 2 (s=1); negatives 1 (s=0), 3 (s=r): closest to 1 is col 3.
    row0 = -math.log((e(1) + alpha * e(r)) / (e(1) + e(0) + e(r)))
    # Row 2: positive col 0; negatives 1 (0), 3 (r): col 3 again.
    row2 = row0
    row1 = -math.log(e(r) / (e(r) + e(0) + e(0)))
    row3 = -math.log(e(r) / (e(r) + e(r) + e(r)))
    expected = (row0 + row1 + row2 + row3) / 4
    loss, stats = false_loss(z0, z1, tau, alpha, 0.9)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert stats["num_fired"].item() == 2


def test_exact_ties_go_to_lower_index():
    # Three identical negatives at the same distance from the positive's cosine.
    z0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    for k in (1, 2):
        expected, sets = naive_false(z0, z1, 0.5, 0.5, 0.5, top_k=k)
        loss, _ = false_loss(z0, z1, 0.5, 0.5, 0.5, top_k=k)
        assert loss.item() == pytest.approx(expected, abs=1e-12)
    # Row 1 (positive 4) has duplicates 2 and 5 (cos 1) and 0, 3 (cos 0): top-1 must be col 2.
    _, sets = naive_false(z0, z1, 0.5, 0.5, 0.5, top_k=1)
    assert sets[1] == {2}


def test_known_duplicate_is_selected():
    # Sample 3 is a near-copy of sample 0 (same ground object in two patches): per_anchor must pick it for row 0.
    gen = torch.Generator().manual_seed(3)
    z0 = torch.randn(8, 64, generator=gen)
    z0[3] = z0[0] + 0.01 * torch.randn(64, generator=gen)
    z1 = z0 + 0.05 * torch.randn(8, 64, generator=gen)
    sim = torch.nn.functional.normalize(torch.cat([z0, z1]), dim=1)
    from falsecl.losses import select_per_anchor

    accepted, _ = select_per_anchor(sim @ sim.T, threshold=0.9)
    assert accepted[0].nonzero().flatten().tolist() in ([3], [11])
    assert accepted[0, 3] or accepted[0, 11]
    assert not accepted[0, 0] and not accepted[0, 8]


def test_gradcheck_float64():
    z0 = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    z1 = (z0.detach() + 0.3 * torch.randn(4, 5, dtype=torch.float64)).requires_grad_()
    for selection in ("per_anchor", "official"):
        for negatives in ("keep", "eliminate"):
            def fn(a, b, selection=selection, negatives=negatives):
                return false_loss(a, b, 0.5, 0.6, -1.0, selection, negatives=negatives)[0]
            assert torch.autograd.gradcheck(fn, (z0, z1))


def test_stable_at_small_temperature():
    z0 = torch.randn(64, 128, requires_grad=True)
    z1 = z0.detach() + 0.01 * torch.randn(64, 128)
    for selection in ("per_anchor", "official"):
        loss = FALSELoss(temperature=0.07, threshold=0.5, selection=selection)
        value = loss(z0 * 1e3, z1 * 1e3)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(z0.grad).all()
    z0 = torch.randn(16, 8, requires_grad=True)
    out = FALSELoss(temperature=0.01, threshold=-1.0)(z0, z0.detach() + 1e-3)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z0.grad).all()


def test_cpu_determinism():
    z0, z1 = torch.randn(32, 16), torch.randn(32, 16)
    a = FALSELoss(threshold=-1.0, top_k=3)(z0, z1)
    b = FALSELoss(threshold=-1.0, top_k=3)(z0.clone(), z1.clone())
    assert a.item() == b.item()


def test_stats_are_logged_and_detached():
    z0 = torch.randn(6, 8, requires_grad=True)
    loss = FALSELoss(threshold=-1.0)
    loss(z0, z0 + 0.1)
    assert set(loss.last_stats) == {"fire_rate", "num_fired", "candidate_cos", "positive_cos", "gate_cos"}
    assert loss.last_stats["fire_rate"].item() == 1.0
    assert not any(v.requires_grad for v in loss.last_stats.values())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"alpha": -0.1},
        {"alpha": 1.5},
        {"threshold": 1.1},
        {"threshold": -2.0},
        {"top_k": 0},
        {"selection": "global"},
        {"negatives": "drop"},
        {"selection": "official", "top_k": 2},
        {"selection": "official", "symmetric": True},
    ],
)
def test_illegal_arguments(kwargs):
    with pytest.raises(ValueError):
        FALSELoss(**kwargs)
    with pytest.raises(ValueError):
        false_loss(torch.randn(2, 3), torch.randn(2, 3), **kwargs)


@pytest.mark.parametrize("shapes", [((4,), (4,)), ((2, 3), (3, 3)), ((2, 3), (2, 4)), ((2, 3, 1), (2, 3, 1)),
                                    ((0, 3), (0, 3))])
def test_illegal_shapes(shapes):
    with pytest.raises(ValueError):
        FALSELoss()(torch.randn(*shapes[0]), torch.randn(*shapes[1]))


def test_follows_input_dtype_and_device():
    z = torch.randn(4, 3, dtype=torch.float64)
    out = FALSELoss(threshold=-1.0)(z, z + 0.1)
    assert out.dtype == torch.float64 and out.device == z.device


GLOO_CASES = [
    {"threshold": 0.0, "selection": "per_anchor", "top_k": 2, "symmetric": True},
    {"threshold": -1.0, "selection": "per_anchor", "negatives": "eliminate", "alpha": 0.3},
    {"threshold": -1.0, "selection": "official", "alpha": 0.5},
]


def _ddp_worker(rank, world, port, z0_all, z1_all, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        n = z0_all.shape[0] // world
        results = []
        for kwargs in GLOO_CASES:
            z0 = z0_all[rank * n:(rank + 1) * n].clone().requires_grad_()
            z1 = z1_all[rank * n:(rank + 1) * n].clone().requires_grad_()
            loss, stats = false_loss(z0, z1, gather_distributed=True, **kwargs)
            loss.backward()
            # DDP averages gradients over ranks; emulate that for the inputs.
            results.append((loss.item(), (z0.grad / world).tolist(), (z1.grad / world).tolist(),
                            stats["num_fired"].item()))
        out.put((rank, results))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_single_process():
    import socket

    import torch.multiprocessing as mp

    gen = torch.Generator().manual_seed(7)
    z0_all = torch.randn(8, 6, generator=gen, dtype=torch.float64)
    z1_all = z0_all + 0.4 * torch.randn(8, 6, generator=gen, dtype=torch.float64)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, z0_all, z1_all, queue)) for r in range(2)]
    for p in procs:
        p.start()
    by_rank = dict(queue.get() for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    for case, kwargs in enumerate(GLOO_CASES):
        ref0, ref1 = z0_all.clone().requires_grad_(), z1_all.clone().requires_grad_()
        ref_loss, ref_stats = false_loss(ref0, ref1, **kwargs)
        ref_loss.backward()
        ranks = [by_rank[0][case], by_rank[1][case]]
        # The global loss is the mean of the per-rank means (equal local batch sizes).
        assert (ranks[0][0] + ranks[1][0]) / 2 == pytest.approx(ref_loss.item(), abs=1e-12)
        assert ranks[0][3] + ranks[1][3] == ref_stats["num_fired"].item()
        g0 = torch.tensor(ranks[0][1] + ranks[1][1], dtype=torch.float64)
        g1 = torch.tensor(ranks[0][2] + ranks[1][2], dtype=torch.float64)
        torch.testing.assert_close(g0, ref0.grad, atol=1e-12, rtol=0)
        torch.testing.assert_close(g1, ref1.grad, atol=1e-12, rtol=0)
