"""Autograd-aware gathering across processes for contrastive losses.

Contrastive losses draw their negatives (and FALSE its false-negative candidates) from the *global* batch. Lightning's
``all_gather(..., sync_grads=True)`` returns wrong gradients on the gloo backend, so we use lightly's ``GatherLayer``
(all-gather forward, all-reduce of the incoming gradients backward), which is correct on gloo and NCCL alike.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightly.utils import dist as lightly_dist
from torch import Tensor


def rank_and_world() -> tuple[int, int]:
    """Return ``(rank, world_size)`` of the default process group, or ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all processes along dim 0, keeping gradients for every slice.

    Every rank must pass a tensor of the same shape (use ``drop_last=True`` in the data loader). In a single
    process this returns ``x`` itself.

    Args:
        x: Local tensor of shape ``(n, ...)``.

    Returns:
        Tensor of shape ``(world_size * n, ...)`` in rank order; rank ``r``'s rows start at ``r * n``.
    """
    _, world = rank_and_world()
    if world == 1:
        return x
    return torch.cat(lightly_dist.gather(x), dim=0)
