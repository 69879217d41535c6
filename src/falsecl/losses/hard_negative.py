"""Hard-negative weighted contrastive loss.

Robinson, Chuang, Sra, Jegelka, "Contrastive Learning with Hard Negative Samples", ICLR 2021
(arXiv 2010.04592).

Negatives are importance-weighted by ``exp(beta * s_k / t)``: harder (more similar) negatives count more. The
weighted negative sum ``K * sum_k softmax(beta * s / t)_k * exp(s_k / t)`` enters the debiased estimator of
Chuang et al. (2020) with class prior ``tau_plus``; with ``beta = 0`` and ``tau_plus = 0`` it is exactly
NT-Xent / InfoNCE. Against a MoCo queue, keys of the query's own patch can be excluded (patch ids).
"""

from __future__ import annotations

from torch import Tensor, nn

from falsecl.losses.debiased import debiased_from_similarities, queue_self_mask, queue_stats
from falsecl.losses.pairs import anchor_similarities


def _check(beta: float) -> None:
    if beta < 0:
        raise ValueError(f"beta (hardness concentration) must be >= 0, got {beta}")


def hard_negative_from_similarities(
    pos: Tensor,
    neg: Tensor,
    temperature: float = 0.5,
    beta: float = 1.0,
    tau_plus: float = 0.0,
    excluded: Tensor | None = None,
) -> Tensor:
    """Per-anchor hard-negative loss from cosine similarities.

    Args:
        pos: Anchor-positive cosines, shape ``(A,)``.
        neg: Anchor-negative cosines, shape ``(A, K)``.
        temperature: Softmax temperature ``t`` (> 0).
        beta: Concentration of the hardness weighting (>= 0); 0 weights all negatives equally.
        tau_plus: Class prior of the debiasing term in ``[0, 1)``.
        excluded: Bool ``(A, K)``, entries that are not negatives of their anchor (weight 0, not counted).

    Returns:
        Loss per anchor, shape ``(A,)``.

    Raises:
        ValueError: On illegal arguments or shapes.
    """
    _check(beta)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    # As in the authors' implementation, gradients also flow through the importance weights.
    return debiased_from_similarities(
        pos, neg, temperature, tau_plus, neg_log_weights=beta * neg / temperature, excluded=excluded
    )


def hard_negative_loss(
    z0: Tensor,
    z1: Tensor,
    temperature: float = 0.5,
    beta: float = 1.0,
    tau_plus: float = 0.0,
    queue: Tensor | None = None,
    gather_distributed: bool = False,
    query_ids: Tensor | None = None,
    queue_ids: Tensor | None = None,
) -> Tensor:
    """Hard-negative loss for two views (SimCLR layout) or queries/keys against a queue (MoCo layout).

    Args:
        z0: View-0 projections (SimCLR) or queries (MoCo), shape ``(N, D)``.
        z1: View-1 projections (SimCLR) or keys (MoCo, detached), shape ``(N, D)``.
        temperature: Softmax temperature (> 0).
        beta: Hardness concentration (>= 0).
        tau_plus: Class prior in ``[0, 1)``.
        queue: MoCo queue of keys ``(K, D)``; ``None`` for the in-batch SimCLR layout.
        gather_distributed: SimCLR layout only: negatives from all ranks.
        query_ids: MoCo layout only: patch id of each query ``(N,)``.
        queue_ids: MoCo layout only: patch id of each queue key ``(K,)``; with ``query_ids``, keys of the
            query's own patch are not negatives.

    Returns:
        Scalar mean loss over the local anchors.
    """
    _check(beta)
    pos, neg = anchor_similarities(z0, z1, queue, gather_distributed)
    excluded = queue_self_mask(queue, query_ids, queue_ids)
    return hard_negative_from_similarities(pos, neg, temperature, beta, tau_plus, excluded).mean()


class HardNegativeLoss(nn.Module):
    """Module form of :func:`hard_negative_loss` (Robinson et al., ICLR 2021).

    After each call ``last_stats`` holds ``positive_cos`` (mean anchor-positive cosine), shape ``()``, and with
    ids ``self_key_rate`` (share of queries with a key of their own patch in the queue, masked).

    Args:
        temperature: Softmax temperature (> 0).
        beta: Hardness concentration (>= 0).
        tau_plus: Class prior in ``[0, 1)``.
        gather_distributed: Negatives from all ranks in the SimCLR layout.
    """

    def __init__(
        self,
        temperature: float = 0.5,
        beta: float = 1.0,
        tau_plus: float = 0.0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        _check(beta)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= tau_plus < 1.0:
            raise ValueError(f"tau_plus (class prior) must be in [0, 1), got {tau_plus}")
        self.temperature = temperature
        self.beta = beta
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
        """Return the scalar loss; see :func:`hard_negative_loss` for the shapes."""
        pos, neg = anchor_similarities(z0, z1, queue, self.gather_distributed)
        excluded = queue_self_mask(queue, query_ids, queue_ids)
        self.last_stats = queue_stats(pos, excluded)
        return hard_negative_from_similarities(pos, neg, self.temperature, self.beta, self.tau_plus, excluded).mean()

    def extra_repr(self) -> str:
        """Show the hyper-parameters in ``repr``."""
        return f"temperature={self.temperature}, beta={self.beta}, tau_plus={self.tau_plus}"
