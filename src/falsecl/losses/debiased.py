"""Debiased contrastive loss (Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020, arXiv 2007.00224).

Unlabeled negatives contain samples of the anchor's own class with probability ``tau_plus`` (the class prior).
The debiased loss replaces the sum over the ``K`` negatives by an estimate of the sum over true negatives::

    g    = max( (mean_k exp(s_k / t) - tau_plus * exp(s_+ / t)) / (1 - tau_plus),  exp(-1 / t) )
    loss = -log( exp(s_+ / t) / (exp(s_+ / t) + K * g) )

With ``tau_plus = 0`` the clamp never binds (cosines are >= -1) and the loss is exactly NT-Xent / InfoNCE.

Against a MoCo queue, keys of the query's own patch can be excluded per query (``excluded`` mask, or patch ids):
they leave the sum and the count ``K`` of that query's negatives.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from falsecl.losses.pairs import anchor_similarities
from falsecl.losses.queue import check_self_mask, self_key_mask


def _check(temperature: float, tau_plus: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= tau_plus < 1.0:
        raise ValueError(f"tau_plus (class prior) must be in [0, 1), got {tau_plus}")


def debiased_from_similarities(
    pos: Tensor,
    neg: Tensor,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    neg_log_weights: Tensor | None = None,
    excluded: Tensor | None = None,
) -> Tensor:
    """Per-anchor debiased contrastive loss from cosine similarities, optionally with weighted negatives.

    The negative sum may be importance-weighted as in hard-negative sampling (Robinson et al., ICLR 2021):
    ``sum_k exp(s_k / t)`` becomes ``K * sum_k softmax(neg_log_weights)_k * exp(s_k / t)``. Everything is
    computed after subtracting the row maximum of the logits, so small temperatures do not overflow.

    Args:
        pos: Anchor-positive cosine similarities, shape ``(A,)``.
        neg: Anchor-negative cosine similarities, shape ``(A, K)`` with ``K >= 1``.
        temperature: Softmax temperature ``t`` (> 0).
        tau_plus: Class prior ``tau+`` in ``[0, 1)``; 0 disables debiasing.
        neg_log_weights: Unnormalised log-weights of the negatives, shape ``(A, K)``; ``None`` for uniform.
        excluded: Bool ``(A, K)``, entries that are not negatives of their anchor (a query's own patch in a
            MoCo queue); they leave the sum, and ``K`` becomes the anchor's count of remaining negatives.

    Returns:
        Loss per anchor, shape ``(A,)``.

    Raises:
        ValueError: On illegal arguments or shapes.
    """
    _check(temperature, tau_plus)
    if pos.ndim != 1 or neg.ndim != 2 or neg.shape[0] != pos.shape[0] or neg.shape[1] < 1:
        raise ValueError(f"expected pos (A,) and neg (A, K >= 1); got {tuple(pos.shape)} and {tuple(neg.shape)}")
    if neg_log_weights is not None and neg_log_weights.shape != neg.shape:
        raise ValueError(f"neg_log_weights must have shape {tuple(neg.shape)}, got {tuple(neg_log_weights.shape)}")
    check_self_mask(excluded, *neg.shape)
    lp = pos / temperature
    ln = neg / temperature
    if excluded is None:
        k = torch.full_like(pos, float(neg.shape[1]))
    else:
        k = (~excluded).sum(dim=1).to(neg.dtype)
        ln = ln.masked_fill(excluded, -torch.inf)  # exp gives 0, and the masked fill passes no gradient
    shift = torch.maximum(lp, ln.max(dim=1).values).detach()
    ep = torch.exp(lp - shift)
    en = torch.exp(ln - shift[:, None])
    if neg_log_weights is None:
        neg_sum = en.sum(dim=1)
    else:
        if excluded is not None:
            # Excluded entries get weight 0; a row with nothing left keeps finite weights (its en are all 0).
            neg_log_weights = neg_log_weights.masked_fill(excluded & (k > 0)[:, None], -torch.inf)
        neg_sum = k * (torch.softmax(neg_log_weights, dim=1) * en).sum(dim=1)
    ng = (neg_sum - tau_plus * k * ep) / (1.0 - tau_plus)
    ng = torch.maximum(ng, k * torch.exp(-1.0 / temperature - shift))
    return torch.log(ep + ng) - (lp - shift)


def debiased_contrastive_loss(
    z0: Tensor,
    z1: Tensor,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    queue: Tensor | None = None,
    gather_distributed: bool = False,
    query_ids: Tensor | None = None,
    queue_ids: Tensor | None = None,
) -> Tensor:
    """Debiased contrastive loss for two views (SimCLR layout) or queries/keys against a queue (MoCo layout).

    Args:
        z0: View-0 projections (SimCLR) or queries (MoCo), shape ``(N, D)``.
        z1: View-1 projections (SimCLR) or keys (MoCo, detached), shape ``(N, D)``.
        temperature: Softmax temperature (> 0).
        tau_plus: Class prior in ``[0, 1)``.
        queue: MoCo queue of keys ``(K, D)``; ``None`` for the in-batch SimCLR layout.
        gather_distributed: SimCLR layout only: negatives from all ranks.
        query_ids: MoCo layout only: patch id of each query ``(N,)``.
        queue_ids: MoCo layout only: patch id of each queue key ``(K,)``; with ``query_ids``, keys of the
            query's own patch are not negatives.

    Returns:
        Scalar mean loss over the local anchors (``2N`` for SimCLR, ``N`` for MoCo).
    """
    _check(temperature, tau_plus)
    pos, neg = anchor_similarities(z0, z1, queue, gather_distributed)
    excluded = queue_self_mask(queue, query_ids, queue_ids)
    return debiased_from_similarities(pos, neg, temperature, tau_plus, excluded=excluded).mean()


def queue_self_mask(queue: Tensor | None, query_ids: Tensor | None, queue_ids: Tensor | None) -> Tensor | None:
    """Self-key mask for the MoCo layout (see :func:`falsecl.losses.queue.self_key_mask`).

    Raises:
        ValueError: If ids are given without a queue (the SimCLR layout has no self-keys to mask).
    """
    if queue is None:
        if query_ids is not None or queue_ids is not None:
            raise ValueError("query_ids/queue_ids apply to a MoCo queue only; pass queue=... or no ids")
        return None
    return self_key_mask(query_ids, queue_ids)


def queue_stats(pos: Tensor, excluded: Tensor | None) -> dict[str, Tensor]:
    """Detached ``positive_cos`` and, given a self-key mask, ``self_key_rate`` of a call."""
    stats = {"positive_cos": pos.detach().mean()}
    if excluded is not None:
        stats["self_key_rate"] = excluded.any(dim=1).to(pos.dtype).mean()
    return stats


class DebiasedContrastiveLoss(nn.Module):
    """Module form of :func:`debiased_contrastive_loss` (Chuang et al., NeurIPS 2020).

    After each call ``last_stats`` holds ``positive_cos`` (mean anchor-positive cosine), shape ``()``, and with
    ids ``self_key_rate`` (share of queries with a key of their own patch in the queue, masked).

    Args:
        temperature: Softmax temperature (> 0).
        tau_plus: Class prior in ``[0, 1)``.
        gather_distributed: Negatives from all ranks in the SimCLR layout.
    """

    def __init__(self, temperature: float = 0.5, tau_plus: float = 0.1, gather_distributed: bool = False) -> None:
        super().__init__()
        _check(temperature, tau_plus)
        self.temperature = temperature
        self.tau_plus = tau_plus
        self.gather_distributed = gather_distributed
        self.last_stats: dict[str, Tensor] = {}

    def forward(
        self,
        z0: Tensor,
        z1: Tensor,
        queue: Tensor | None = None,
        query_ids: Tensor | None = None,
        queue_ids: Tensor | None = None,
    ) -> Tensor:
        """Return the scalar loss; see :func:`debiased_contrastive_loss` for the shapes."""
        pos, neg = anchor_similarities(z0, z1, queue, self.gather_distributed)
        excluded = queue_self_mask(queue, query_ids, queue_ids)
        self.last_stats = queue_stats(pos, excluded)
        return debiased_from_similarities(pos, neg, self.temperature, self.tau_plus, excluded=excluded).mean()

    def extra_repr(self) -> str:
        """Show the hyper-parameters in ``repr``."""
        return f"temperature={self.temperature}, tau_plus={self.tau_plus}"
