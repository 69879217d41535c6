"""FALSE against a queue of keys: false-negative-aware InfoNCE for MoCo v2.

MoCo v2 (Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning", arXiv 2003.04297)
contrasts each query ``q_i`` with its key ``k_i`` (positive) and the ``K`` keys of a queue (negatives). FALSE
(Zhang et al., IEEE GRSL 2022, arXiv 2211.07928) is extended to the queue with the same rule as the in-batch
``selection="per_anchor"`` mode of :mod:`falsecl.losses.false`: for query ``i`` the candidates ``F_i`` are the
``top_k`` queue keys ``m`` with the smallest ``|s_im - s_i+|`` (cosines; ties go to the lower queue index),
accepted when ``s_i+ >= threshold``. With ``e = exp(s / tau)``::

    L_i = -log( (e_i+ + alpha * sum_{m in F_i} e_im) / (e_i+ + sum_{k in queue} e_ik) )

and with ``negatives="eliminate"`` the denominator keeps only the ``alpha`` share of each accepted candidate
(FNC-style elimination, Huynh et al., WACV 2022): ``e_i+ + alpha * sum_{F_i} e_im + sum_{k not in F_i} e_ik``.
The gate is the in-batch loss's (see :mod:`falsecl.losses.false`): ``gate="fixed"`` accepts query ``i`` when
``s_i+ >= T`` (the paper's rule, default); ``gate="quantile"`` accepts the ``ceil(q * N)`` queries of the batch
with the largest ``s_i+``, ``g_i = 1[rank(s_i+) <= ceil(q * N)]``, so FALSE still acts when every query-key
cosine stays below ``T``.

With ``alpha = 0`` and ``negatives="keep"`` (or an empty ``F_i``) the loss is exactly MoCo's InfoNCE.

Given the patch ids of the queries and of the queue keys, keys of the query's own patch (earlier views of the
same patch, still in the queue) are neither negatives nor candidates: they leave both sums, so the queue is
effectively ``queue minus self-keys`` per query. Without ids nothing is masked.

Keys and queue carry no gradient (they come from the momentum encoder), so the loss needs no gathering: each
rank's queries only meet their own keys and the queue, which holds the keys of all ranks.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from falsecl.losses.gates import GateMode, check_candidate_args, check_gate_args, quantile_gate, quantile_passes
from falsecl.losses.pairs import queue_similarities
from falsecl.losses.queue import check_self_mask, self_key_mask

NegativesMode = Literal["keep", "eliminate"]


def select_queue_candidates(
    pos: Tensor,
    neg: Tensor,
    threshold: float,
    top_k: int = 1,
    excluded: Tensor | None = None,
    passes: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """FNSD against a queue: each query's keys whose cosine is closest to its positive's.

    Args:
        pos: Query-key (positive) cosines, shape ``(N,)``.
        neg: Query-queue cosines, shape ``(N, K)``.
        threshold: Gate ``T`` on ``pos``.
        top_k: Candidates per query; more than the eligible keys selects them all.
        excluded: Bool ``(N, K)``, keys that may never be chosen (the query's own patch), or ``None``.
        passes: Bool ``(N,)`` queries passing the gate, replacing ``threshold`` (the quantile gate), or ``None``.

    Returns:
        ``(accepted, chosen)``: bool masks ``(N, K)`` of the accepted candidates and of the chosen ones before
        the gate.
    """
    dist = (neg - pos[:, None]).abs()
    if excluded is not None:
        dist = dist.masked_fill(excluded, torch.inf)
    k = min(top_k, neg.shape[1])
    chosen = torch.zeros_like(neg, dtype=torch.bool)
    if k == 1:
        chosen.scatter_(1, dist.argmin(dim=1, keepdim=True), True)  # first minimum: ties go to the lower index
    else:
        chosen.scatter_(1, torch.sort(dist, dim=1, stable=True).indices[:, :k], True)
    if excluded is not None:
        chosen &= ~excluded  # a row with fewer eligible keys than k (or none) would otherwise pick excluded ones
    gated = pos >= threshold if passes is None else passes
    return chosen & gated[:, None], chosen


def moco_false_loss(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    temperature: float = 0.2,
    alpha: float = 1.0,
    threshold: float = 0.9,
    top_k: int = 1,
    negatives: NegativesMode = "keep",
    query_ids: Tensor | None = None,
    queue_ids: Tensor | None = None,
    gate: GateMode = "fixed",
    gate_quantile: float = 0.1,
) -> tuple[Tensor, dict[str, Tensor]]:
    """MoCo InfoNCE with FALSE candidates searched among the queue keys; see the module docstring.

    Args:
        q: Queries (online encoder projections), shape ``(N, D)``, not necessarily normalised.
        k: Keys (momentum encoder projections), shape ``(N, D)``; detached.
        queue: Keys of earlier batches, shape ``(K, D)``; detached.
        temperature: ``tau`` (> 0); MoCo v2 uses 0.2.
        alpha: Share of an accepted candidate moved into the numerator, in ``[0, 1]``; 0 gives InfoNCE.
        threshold: Cosine gate ``T`` on the query-key similarity, in ``[-1, 1]``.
        top_k: Candidates per query.
        negatives: ``"keep"`` (FALSE) or ``"eliminate"``.
        query_ids: Patch id of each query ``(N,)``, or ``None``.
        queue_ids: Patch id of each queue key ``(K,)`` (negative: unknown), or ``None``. With both ids, keys of
            the query's own patch are masked from negatives and candidates.
        gate: ``"fixed"`` (``s_i+ >= threshold``) or ``"quantile"`` (the top ``ceil(q * N)`` queries by ``s_i+``).
        gate_quantile: ``q`` of the quantile gate, in ``(0, 1]``.

    Returns:
        ``(loss, stats)``: the scalar mean loss over the ``N`` queries and detached statistics ``fire_rate``,
        ``num_fired``, ``candidate_cos`` (mean cosine of the chosen candidates before the gate),
        ``positive_cos`` (mean query-key cosine), ``gate_cos`` (the cosine gate in force) and, with ids,
        ``self_key_rate`` (share of queries with at least one key of their own patch in the queue, masked).

    Raises:
        ValueError: On illegal arguments or shapes.
    """
    check_candidate_args(temperature, alpha, threshold, top_k, negatives)
    check_gate_args(gate, gate_quantile)
    pos, neg = queue_similarities(q, k, queue)
    own = self_key_mask(query_ids, queue_ids)
    check_self_mask(own, *neg.shape)
    with torch.no_grad():
        passes = quantile_passes(pos.detach(), gate_quantile) if gate == "quantile" else None
        accepted, chosen = select_queue_candidates(pos.detach(), neg.detach(), threshold, top_k, own, passes)
        log_alpha = math.log(alpha) if alpha > 0 else -math.inf
        zero = torch.zeros((), dtype=neg.dtype, device=neg.device)
        cand_w = torch.full_like(zero, log_alpha)
        # Log-weights of the queue columns in numerator and denominator (logsumexp keeps small tau stable).
        log_w_num = torch.where(accepted, cand_w, torch.full_like(zero, -math.inf))
        log_w_den = torch.where(accepted, cand_w, zero) if negatives == "eliminate" else torch.zeros_like(neg)
        if own is not None:  # self-keys leave the denominator (weight 0); they are never candidates
            log_w_den = log_w_den.masked_fill(own, -math.inf)
    lp = (pos / temperature)[:, None]
    ln = neg / temperature
    numerator = torch.logsumexp(torch.cat([lp, ln + log_w_num], dim=1), dim=1)
    denominator = torch.logsumexp(torch.cat([lp, ln + log_w_den], dim=1), dim=1)
    loss = (denominator - numerator).mean()
    with torch.no_grad():
        fired = accepted.any(dim=1)
        stats = {
            "fire_rate": fired.to(neg.dtype).mean(),
            "num_fired": fired.sum(),
            "candidate_cos": (neg * chosen).sum() / chosen.sum().clamp(min=1),
            "positive_cos": pos.mean(),
            "gate_cos": quantile_gate(pos, gate_quantile) if gate == "quantile" else torch.full_like(zero, threshold),
        }
        if own is not None:
            stats["self_key_rate"] = own.any(dim=1).to(neg.dtype).mean()
    return loss, stats


class MoCoFALSELoss(nn.Module):
    """Module form of :func:`moco_false_loss`; ``alpha=0`` is MoCo v2's InfoNCE.

    Attributes:
        last_stats: Detached statistics of the last call, for logging.

    Args:
        temperature: ``tau`` (> 0).
        alpha: Share moved into the numerator, in ``[0, 1]``.
        threshold: Cosine gate ``T``.
        top_k: Candidates per query.
        negatives: ``"keep"`` or ``"eliminate"``.
        gate: ``"fixed"`` or ``"quantile"``.
        gate_quantile: ``q`` of the quantile gate.
    """

    def __init__(
        self,
        temperature: float = 0.2,
        alpha: float = 1.0,
        threshold: float = 0.9,
        top_k: int = 1,
        negatives: NegativesMode = "keep",
        gate: GateMode = "fixed",
        gate_quantile: float = 0.1,
    ) -> None:
        super().__init__()
        check_candidate_args(temperature, alpha, threshold, top_k, negatives)
        check_gate_args(gate, gate_quantile)
        self.gate: GateMode = gate
        self.gate_quantile = gate_quantile
        self.temperature = temperature
        self.alpha = alpha
        self.threshold = threshold
        self.top_k = top_k
        self.negatives: NegativesMode = negatives
        self.last_stats: dict[str, Tensor] = {}

    def forward(
        self, q: Tensor, k: Tensor, queue: Tensor, query_ids: Tensor | None = None, queue_ids: Tensor | None = None
    ) -> Tensor:
        """Scalar loss of queries ``q`` ``(N, D)``, keys ``k`` ``(N, D)``, ``queue`` ``(K, D)``; see the function."""
        loss, self.last_stats = moco_false_loss(
            q, k, queue, self.temperature, self.alpha, self.threshold, self.top_k, self.negatives, query_ids, queue_ids,
            self.gate, self.gate_quantile,
        )
        return loss

    def extra_repr(self) -> str:
        """Show the hyper-parameters in ``repr``."""
        return (
            f"temperature={self.temperature}, alpha={self.alpha}, threshold={self.threshold}, "
            f"top_k={self.top_k}, negatives={self.negatives!r}, gate={self.gate!r}, gate_quantile={self.gate_quantile}"
        )
