"""Positive and negative cosine similarities in the SimCLR and MoCo layouts.

The contrastive losses of :mod:`falsecl.losses` other than FALSE itself (debiased, hard-negative) work on the
same two tensors: the cosine similarity of each anchor to its positive, ``pos`` of shape ``(A,)``, and to its
negatives, ``neg`` of shape ``(A, K)``. This module builds them once, for the in-batch layout of SimCLR (Chen
et al., ICML 2020) over the local or the global (all-rank) batch, and for the queue layout of MoCo v2 (Chen et
al., arXiv 2003.04297).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from falsecl.losses.distributed import gather, rank_and_world
from falsecl.losses.fp32 import fp32_similarities


def _check_pair(z0: Tensor, z1: Tensor, names: tuple[str, str] = ("z0", "z1")) -> None:
    if z0.ndim != 2 or z1.ndim != 2 or z0.shape != z1.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must both have shape (N, D); got {tuple(z0.shape)}, {tuple(z1.shape)}"
        )
    if z0.shape[0] < 1:
        raise ValueError(f"{names[0]} is empty; pass at least one sample")


@fp32_similarities
def simclr_similarities(z0: Tensor, z1: Tensor, gather_distributed: bool = False) -> tuple[Tensor, Tensor]:
    """Cosine similarities of the SimCLR layout: 2N anchors, each against the other 2M - 1 samples.

    Anchors are the local samples of both views (view 0 first). With ``gather_distributed`` the candidates are
    the samples of all ranks (``M = N * world``, gathered with gradients), so negatives are global; without it
    ``M = N``. For a local anchor with global index ``g`` the positive is the other view of ``g`` and the
    negatives are every candidate except the anchor itself and its positive.

    Args:
        z0: Projections of view 0, shape ``(N, D)``; need not be normalised.
        z1: Projections of view 1, shape ``(N, D)``.
        gather_distributed: Gather candidates from all ranks (a no-op in one process).

    Returns:
        ``(pos, neg)``: ``pos`` of shape ``(2N,)`` and ``neg`` of shape ``(2N, 2M - 2)``; rows ``0..N-1``
        are the view-0 anchors, rows ``N..2N-1`` the view-1 anchors; columns of ``neg`` keep the candidate
        order ``[z0 of all ranks, z1 of all ranks]`` with the two excluded columns removed.

    Raises:
        ValueError: If the shapes differ, or the global batch has fewer than 2 samples (no negatives).
    """
    _check_pair(z0, z1)
    n = z0.shape[0]
    z0 = F.normalize(z0, dim=1)
    z1 = F.normalize(z1, dim=1)
    rank, world = rank_and_world() if gather_distributed else (0, 1)
    z0_all = gather(z0) if gather_distributed else z0
    z1_all = gather(z1) if gather_distributed else z1
    m = z0_all.shape[0]
    if m < 2:
        raise ValueError("the (global) batch holds a single sample, so there are no negatives; use batch size >= 2")
    anchors = torch.cat([z0, z1])  # (2N, D)
    candidates = torch.cat([z0_all, z1_all])  # (2M, D)
    sim = anchors @ candidates.T  # (2N, 2M)
    g = torch.arange(n, device=z0.device) + rank * n
    pos_col = torch.cat([g + m, g])
    self_col = torch.cat([g, g + m])
    rows = torch.arange(2 * n, device=z0.device)
    pos = sim[rows, pos_col]
    keep = torch.ones_like(sim, dtype=torch.bool)
    keep[rows, pos_col] = False
    keep[rows, self_col] = False
    neg = sim[keep].view(2 * n, 2 * m - 2)
    return pos, neg


@fp32_similarities
def queue_similarities(q: Tensor, k: Tensor, queue: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine similarities of the MoCo layout: each query against its key and against the queue of keys.

    Args:
        q: Queries from the online encoder, shape ``(N, D)``.
        k: Keys from the momentum encoder, shape ``(N, D)``; treated as constants (detached).
        queue: Keys of earlier batches, shape ``(K, D)``; treated as constants.

    Returns:
        ``(pos, neg)`` of shapes ``(N,)`` and ``(N, K)``.

    Raises:
        ValueError: If the shapes do not match or the queue is empty.
    """
    _check_pair(q, k, ("q", "k"))
    if queue.ndim != 2 or queue.shape[1] != q.shape[1] or queue.shape[0] < 1:
        raise ValueError(f"queue must have shape (K >= 1, {q.shape[1]}); got {tuple(queue.shape)}")
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    queue = F.normalize(queue.detach().to(q.dtype), dim=1)
    return (q * k).sum(dim=1), q @ queue.T


@fp32_similarities
def anchor_similarities(
    z0: Tensor, z1: Tensor, queue: Tensor | None = None, gather_distributed: bool = False
) -> tuple[Tensor, Tensor]:
    """Positive and negative cosines in either layout: in-batch (``queue=None``) or against a MoCo queue.

    Args:
        z0: View-0 projections or queries ``(N, D)``.
        z1: View-1 projections or keys ``(N, D)``.
        queue: MoCo queue of keys ``(K, D)``, or ``None`` for the SimCLR layout.
        gather_distributed: SimCLR layout only: negatives from all ranks.

    Returns:
        ``(pos, neg)`` as :func:`simclr_similarities` or :func:`queue_similarities` return them.
    """
    if queue is None:
        return simclr_similarities(z0, z1, gather_distributed)
    return queue_similarities(z0, z1, queue)
