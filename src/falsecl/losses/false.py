"""FALSE: false-negative-aware contrastive loss for remote-sensing imagery.

Zhang, Wang, Mei, Tao, Li. "FALSE: False Negative Samples Aware Contrastive Learning for Semantic Segmentation of
High-Resolution Remote Sensing Image." IEEE Geoscience and Remote Sensing Letters, 2022 (arXiv:2211.07928).

Notation. ``z0, z1`` are the projector outputs of two views of ``N`` images, stacked as ``z = [z0; z1]`` (``2N``
rows); the positive of row ``i`` is ``p(i) = i + N`` for ``i < N`` and ``i - N`` otherwise. With the cosine
``s_ij`` and ``e_ij = exp(s_ij / tau)``, the loss of row ``i`` is::

    L_i = -log( (e_ip + alpha * sum_{m in F_i} e_im) / (e_ip + sum_{k != i, p} e_ik) )

where ``F_i`` is the set of accepted false-negative candidates of row ``i`` (FNSD: coarse self-determination,
FNCC: confidence calibration by ``alpha``). The loss is the mean over the ``2N`` rows. With ``F_i`` empty for
every row, it is NT-Xent (Chen et al., SimCLR, 2020).

Two ways of choosing ``F_i``:

* ``selection="per_anchor"`` (default): for every row ``i`` the candidates are the ``top_k`` negatives ``j``
  (``j != i, p(i)``) with the smallest ``|s_ij - s_ip|``, measured in cosine space; ties go to the lower index.
  They are accepted when ``s_ip >= threshold``. ``symmetric=True`` also adds the pair ``(i, m)`` to row ``m``.
* ``selection="official"``: the behaviour of the authors' released code, reproduced to the operation so the
  paper's numbers can be reproduced. On ``S = exp(s / tau)`` it forms ``diff_ij = |S_ij - S_ip|`` only above the
  diagonal and away from the positive column; every other entry is the constant ``3.0``. The pairs ``(a, m)`` equal
  to the one *global* minimum of ``diff`` are selected (normally a single pair for the whole batch) and fire when
  ``log(S_ap) * tau >= threshold``; only row ``a`` is changed.

  **The filler-tie cliff.** When every real entry of ``diff`` is ``>= 3.0`` (it happens when all positive pairs are
  tightly aligned, e.g. ``tau = 0.5`` and every ``s_ip`` close to 1, so ``S_ip`` is near ``e^2 = 7.39`` while the
  negatives stay below ``4.39``), the global minimum is the filler itself and *every* filler entry ties: each firing
  row ``a`` then attracts all its negatives ``m < a`` at once. The released code does exactly this and so does
  this mode; ``per_anchor`` has no such cliff.

**The gate.** ``gate="fixed"`` (default, the paper's rule) accepts row ``i``'s candidates when ``s_ip >= T``.
``gate="quantile"`` makes the gate relative to the batch: with ``k = ceil(q * 2N)`` (``q = gate_quantile``),
row ``i`` passes when its positive cosine ``s_ip`` ranks among the ``k`` largest of the (global) batch,

    g_i = 1[ rank(s_ip) <= ceil(q * 2N) ]      (ties at the boundary broken by index)

so FALSE acts on a fixed share of rows even when every ``s_ip`` stays below ``T`` (MoCo's query-key cosines at a
short budget); ``T`` is then unused. The k-th largest cosine is reported as ``gate_cos``.

``negatives="eliminate"`` drops, for each accepted candidate, the ``(1 - alpha)`` share that FALSE leaves on the
negative side of the denominator (FNC-style elimination, Huynh et al., WACV 2022): the denominator becomes
``e_ip + alpha * sum_{m in F_i} e_im + sum_{k not in {i, p} U F_i} e_ik``. ``alpha = 0`` is then pure elimination,
and ``alpha = 1`` coincides with ``negatives="keep"`` (pure attraction).

``gather_distributed=True`` draws negatives and candidates from the global batch of all processes; the local rows'
losses are computed against it with the right global indices.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from falsecl.losses.distributed import gather, rank_and_world
from falsecl.losses.fp32 import fp32_similarities
from falsecl.losses.gates import GateMode, check_candidate_args, check_gate_args, quantile_gate, quantile_passes

Selection = Literal["per_anchor", "official"]
NegativesMode = Literal["keep", "eliminate"]

#: Constant the released code writes into the entries of ``diff`` it does not compare.
OFFICIAL_FILLER = 3.0


def _check_args(
    temperature: float,
    alpha: float,
    threshold: float,
    selection: str,
    top_k: int,
    symmetric: bool,
    negatives: str,
) -> None:
    check_candidate_args(temperature, alpha, threshold, top_k, negatives)
    if selection not in ("per_anchor", "official"):
        raise ValueError(f"selection must be 'per_anchor' or 'official', got {selection!r}")
    if selection == "official" and (top_k != 1 or symmetric):
        raise ValueError(
            "selection='official' reproduces the released code, which has no top_k or symmetric option; "
            "use selection='per_anchor' for them"
        )


def _check_inputs(z0: Tensor, z1: Tensor) -> None:
    if z0.dim() != 2 or z1.dim() != 2:
        raise ValueError(f"z0 and z1 must be 2-D (N, D), got shapes {tuple(z0.shape)} and {tuple(z1.shape)}")
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    if z0.shape[0] < 1 or z0.shape[1] < 1:
        raise ValueError(f"z0 and z1 must hold at least one row and one feature, got {tuple(z0.shape)}")


def positive_index(num_rows: int, device: torch.device | None = None) -> Tensor:
    """Column of each row's positive in the stacked ``[z0; z1]`` layout.

    Args:
        num_rows: ``2N``, the number of stacked rows.
        device: Device of the result.

    Returns:
        Long tensor ``(2N,)`` with ``p(i) = (i + N) mod 2N``.
    """
    idx = torch.arange(num_rows, device=device)
    return (idx + num_rows // 2) % num_rows


def negative_mask(num_rows: int, device: torch.device) -> Tensor:
    """``(2N, 2N)`` bool mask of the negatives of each row (neither itself nor its positive)."""
    cols = torch.arange(num_rows, device=device)
    pos = positive_index(num_rows, device)
    return (cols[None, :] != cols[:, None]) & (cols[None, :] != pos[:, None])


def _per_anchor_indices(
    sim_rows: Tensor, rows: Tensor, pos: Tensor, threshold: float, top_k: int, passes: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per-anchor candidates of some rows, as indices (the fast path of :func:`select_per_anchor`).

    Args:
        sim_rows: Cosines ``(R, 2N)`` of ``R`` rows against all stacked rows.
        rows: Global index of each row, ``(R,)``.
        pos: Global index of each row's positive, ``(R,)``.
        threshold: Gate on the row's positive cosine.
        top_k: Candidates per row (capped at the ``2N - 2`` negatives).
        passes: Bool ``(R,)``, rows that pass the gate, replacing ``threshold`` (the quantile gate), or ``None``.

    Returns:
        ``(idx, accepted)``: long ``(R, k)`` candidate columns (lowest index first among ties) and bool
        ``(R, k)``, true where the row passes the gate.
    """
    r = torch.arange(sim_rows.shape[0], device=sim_rows.device)
    pos_sim = sim_rows[r, pos]
    dist = (sim_rows - pos_sim[:, None]).abs()
    dist[r, rows] = math.inf
    dist[r, pos] = math.inf
    k = min(top_k, sim_rows.shape[1] - 2)
    if k <= 0:
        idx = torch.zeros(sim_rows.shape[0], 0, dtype=torch.long, device=sim_rows.device)
    elif k == 1:
        idx = dist.argmin(dim=1, keepdim=True)  # first minimal index on ties
    else:
        kth = dist.topk(k, dim=1, largest=False).values[:, -1:]
        below, at_kth = dist < kth, dist == kth
        chosen = below | (at_kth & (at_kth.cumsum(dim=1) <= k - below.sum(dim=1, keepdim=True)))
        # Exactly k entries per row are chosen; topk on the 0/1 mask returns their columns without a host sync.
        idx = chosen.to(sim_rows.dtype).topk(k, dim=1).indices
    gated = pos_sim >= threshold if passes is None else passes
    return idx, gated[:, None].expand_as(idx)


def select_per_anchor(
    sim: Tensor, threshold: float, top_k: int = 1, symmetric: bool = False, passes: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """FNSD per anchor: each row's negatives whose cosine is closest to its positive's.

    Args:
        sim: Cosine similarities ``(2N, 2N)`` of the stacked rows (no gradient needed).
        threshold: Gate ``T``: a row's candidates are accepted only if its positive cosine ``s_ip >= T``.
        top_k: Candidates per row; more than the ``2N - 2`` negatives selects all of them.
        symmetric: Also apply each accepted pair ``(i, m)`` to row ``m``.
        passes: Bool ``(2N,)`` rows passing the gate, replacing ``threshold`` (the quantile gate), or ``None``.

    Returns:
        ``(accepted, chosen)``: bool ``(2N, 2N)`` masks of the accepted pairs and of the chosen candidates before
        the gate.
    """
    n2 = sim.shape[0]
    rows = torch.arange(n2, device=sim.device)
    idx, ok = _per_anchor_indices(sim, rows, positive_index(n2, sim.device), threshold, top_k, passes)
    chosen = torch.zeros(n2, n2, dtype=torch.bool, device=sim.device).scatter_(1, idx, True)
    accepted = torch.zeros_like(chosen).scatter_(1, idx, ok)
    if symmetric:
        accepted = accepted | accepted.T
    return accepted, chosen


def select_official(
    sim: Tensor, temperature: float, threshold: float, passes: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The candidate selection of the authors' released code (one global minimum per batch, exp space).

    Args:
        sim: Cosine similarities ``(2N, 2N)`` of the stacked rows (no gradient needed).
        temperature: ``tau``.
        threshold: Gate ``T`` applied as ``log(S_ap) * tau >= T``.
        passes: Bool ``(2N,)`` rows passing the gate, replacing ``threshold`` (the quantile gate), or ``None``.

    Returns:
        ``(accepted, chosen)``: bool ``(2N, 2N)`` masks of the accepted pairs (restricted to real negatives, the
        only ones that change the loss) and of all selected pairs before the gate.
    """
    n2 = sim.shape[0]
    big_s = torch.exp(sim / temperature)
    rows = torch.arange(n2, device=sim.device)
    pos = positive_index(n2, sim.device)
    pos_s = big_s[rows, pos]
    diff = (big_s - pos_s[:, None]).abs()
    compared = torch.ones(n2, n2, dtype=torch.bool, device=sim.device).triu(diagonal=1)
    compared &= rows[None, :] != pos[:, None]
    diff = diff.masked_fill(~compared, OFFICIAL_FILLER)
    chosen = diff == diff.min()
    gate = torch.log(pos_s) * temperature >= threshold if passes is None else passes
    accepted = chosen & gate[:, None] & negative_mask(n2, sim.device)
    return accepted, chosen


@fp32_similarities
def false_loss(
    z0: Tensor,
    z1: Tensor,
    temperature: float = 0.5,
    alpha: float = 1.0,
    threshold: float = 0.9,
    selection: Selection = "per_anchor",
    top_k: int = 1,
    symmetric: bool = False,
    negatives: NegativesMode = "keep",
    gather_distributed: bool = False,
    gate: GateMode = "fixed",
    gate_quantile: float = 0.1,
) -> tuple[Tensor, dict[str, Tensor]]:
    """FALSE loss of two batches of projections; see the module docstring for the equations.

    Args:
        z0: Projections of view 0, ``(N, D)``, not necessarily normalised.
        z1: Projections of view 1, ``(N, D)``.
        temperature: ``tau`` (> 0).
        alpha: Share of an accepted candidate moved into the numerator, in ``[0, 1]``; 0 gives NT-Xent.
        threshold: Cosine gate ``T`` on the anchor-positive similarity, in ``[-1, 1]``.
        selection: ``"per_anchor"`` (correct, vectorised) or ``"official"`` (the released code's behaviour).
        top_k: Candidates per anchor (``per_anchor`` only).
        symmetric: Apply accepted pairs to both rows (``per_anchor`` only).
        negatives: ``"keep"`` (FALSE) or ``"eliminate"`` (drop the rest of each candidate from the negatives).
        gather_distributed: Use the global batch of all processes for negatives and candidates.
        gate: ``"fixed"`` (``s_ip >= threshold``, the paper's rule) or ``"quantile"`` (the ``ceil(q * 2N)`` rows of
            the global batch with the largest ``s_ip``; ``threshold`` unused).
        gate_quantile: ``q`` of the quantile gate, in ``(0, 1]``.

    Returns:
        ``(loss, stats)``: the scalar mean loss over the local ``2N`` rows and detached statistics ``fire_rate``
        (fraction of rows modified), ``num_fired``, ``candidate_cos`` (mean cosine of the chosen candidates before
        the gate), ``positive_cos`` (mean anchor-positive cosine), ``gate_cos`` (the cosine gate in force: ``T``,
        or the quantile gate's k-th largest positive cosine).

    Raises:
        ValueError: On illegal arguments or shapes.
    """
    _check_args(temperature, alpha, threshold, selection, top_k, symmetric, negatives)
    check_gate_args(gate, gate_quantile)
    _check_inputs(z0, z1)
    n = z0.shape[0]
    rank, world = rank_and_world() if gather_distributed else (0, 1)
    if world > 1:
        z0, z1 = gather(z0), gather(z1)
    n_global = z0.shape[0]
    z = F.normalize(torch.cat([z0, z1], dim=0), dim=1)
    n2 = 2 * n_global
    device = z.device
    if world == 1:
        local = torch.arange(n2, device=device)
        sim_local = z @ z.T
    else:
        # Each rank computes its own rows against the global batch, with global column indices.
        first = torch.arange(rank * n, rank * n + n, device=device)
        local = torch.cat([first, first + n_global])
        sim_local = z[local] @ z.T
    rows = torch.arange(len(local), device=device)
    pos = positive_index(n2, device)[local]
    logits = sim_local / temperature
    log_alpha = math.log(alpha) if alpha > 0 else -math.inf
    # Denominator over every k != i (log-sum-exp: stable at tau = 0.07 and below).
    den_logits = logits.masked_fill(local[:, None] == torch.arange(n2, device=device)[None, :], -math.inf)
    pos_logit = logits[rows, pos]
    passes_all: Tensor | None = None  # (2N,) over the global batch, quantile gate only
    with torch.no_grad():
        if gate == "quantile":
            pos_all = sim_local.detach()[rows, pos] if world == 1 else (z * z.roll(n_global, 0)).sum(1).detach()
            passes_all = quantile_passes(pos_all, gate_quantile)
            gate_cos = quantile_gate(pos_all, gate_quantile)
        else:
            gate_cos = torch.tensor(float(threshold), device=device)
    passes_local = None if passes_all is None else passes_all[local]

    if selection == "per_anchor" and not symmetric:
        # Each row needs only its own similarities: candidates as (rows, k) indices, no 2N x 2N masks.
        with torch.no_grad():
            idx, ok = _per_anchor_indices(sim_local.detach(), local, pos, threshold, top_k, passes_local)
        cand = logits.gather(1, idx)
        num = torch.logsumexp(torch.cat([pos_logit[:, None], (cand + log_alpha).masked_fill(~ok, -math.inf)], 1), 1)
        if negatives == "eliminate":
            den_logits = den_logits.scatter(1, idx, torch.where(ok, cand + log_alpha, cand))
        with torch.no_grad():
            fired = ok.any(dim=1)
            cand_cos = sim_local.detach().gather(1, idx)
            candidate_cos = cand_cos.mean() if idx.numel() else cand_cos.sum()
    else:
        # Symmetric pairs and the official global minimum need the whole (global) similarity matrix.
        with torch.no_grad():
            sim_all = sim_local.detach() if world == 1 else z.detach() @ z.detach().T
            if selection == "per_anchor":
                accepted, chosen = select_per_anchor(sim_all, threshold, top_k, symmetric, passes_all)
            else:
                accepted, chosen = select_official(sim_all, temperature, threshold, passes_all)
            accepted, chosen = accepted[local], chosen[local]
            # Only real negatives count as candidates (the official mode may select self/positive entries).
            chosen &= local[:, None] != torch.arange(n2, device=device)[None, :]
            chosen[rows, pos] = False
            fired = accepted.any(dim=1)
            candidate_cos = sim_all[local][chosen].sum() / chosen.sum().clamp(min=1)
        is_pos = torch.zeros_like(accepted)
        is_pos[rows, pos] = True
        num_logits = torch.where(accepted, logits + log_alpha, logits.masked_fill(~is_pos, -math.inf))
        num = torch.logsumexp(num_logits, dim=1)
        if negatives == "eliminate":
            den_logits = torch.where(accepted, den_logits + log_alpha, den_logits)

    loss = (torch.logsumexp(den_logits, dim=1) - num).mean()
    with torch.no_grad():
        stats = {
            "fire_rate": fired.to(logits.dtype).mean(),
            "num_fired": fired.sum(),
            "candidate_cos": candidate_cos,
            "positive_cos": sim_local.detach()[rows, pos].mean(),
            "gate_cos": gate_cos.to(logits.dtype),
        }
    return loss, stats


class FALSELoss(nn.Module):
    """FALSE contrastive loss as an ``nn.Module`` (see :func:`false_loss` and the module docstring).

    Example:
        >>> loss_fn = FALSELoss(temperature=0.5, alpha=1.0, threshold=0.9)
        >>> loss = loss_fn(projector(backbone(view0)), projector(backbone(view1)))  # doctest: +SKIP
        >>> loss_fn.last_stats["fire_rate"]  # doctest: +SKIP

    Attributes:
        last_stats: Detached statistics of the last call, for logging.
    """

    def __init__(
        self,
        temperature: float = 0.5,
        alpha: float = 1.0,
        threshold: float = 0.9,
        selection: Selection = "per_anchor",
        top_k: int = 1,
        symmetric: bool = False,
        negatives: NegativesMode = "keep",
        gather_distributed: bool = False,
        gate: GateMode = "fixed",
        gate_quantile: float = 0.1,
    ) -> None:
        super().__init__()
        _check_args(temperature, alpha, threshold, selection, top_k, symmetric, negatives)
        check_gate_args(gate, gate_quantile)
        self.gate: GateMode = gate
        self.gate_quantile = gate_quantile
        self.temperature = temperature
        self.alpha = alpha
        self.threshold = threshold
        self.selection: Selection = selection
        self.top_k = top_k
        self.symmetric = symmetric
        self.negatives: NegativesMode = negatives
        self.gather_distributed = gather_distributed
        self.last_stats: dict[str, Tensor] = {}

    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Return the scalar loss of projections ``z0, z1`` of shape ``(N, D)``; fills :attr:`last_stats`."""
        loss, self.last_stats = false_loss(
            z0,
            z1,
            temperature=self.temperature,
            alpha=self.alpha,
            threshold=self.threshold,
            selection=self.selection,
            top_k=self.top_k,
            symmetric=self.symmetric,
            negatives=self.negatives,
            gather_distributed=self.gather_distributed,
            gate=self.gate,
            gate_quantile=self.gate_quantile,
        )
        return loss

    def extra_repr(self) -> str:
        """Show the loss settings in the module repr."""
        return (
            f"temperature={self.temperature}, alpha={self.alpha}, threshold={self.threshold}, "
            f"selection={self.selection!r}, top_k={self.top_k}, symmetric={self.symmetric}, "
            f"negatives={self.negatives!r}, gather_distributed={self.gather_distributed}, gate={self.gate!r}, "
            f"gate_quantile={self.gate_quantile}"
        )
