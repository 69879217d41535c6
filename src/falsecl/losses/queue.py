"""A FIFO queue of keys for MoCo (He et al., CVPR 2020), saved in checkpoints and shared by all ranks.

lightly's ``MemoryBankModule`` registers its bank as a non-persistent buffer, so a resumed run would restart
from a random queue; this queue is a persistent buffer, so ``--ckpt_path last`` restores it exactly.

Each key is stored with the id of the patch it came from (the dataset index), so a query can be kept from
meeting keys of its own patch as "negatives": once the queue spans more than a fraction of an epoch, earlier
views of the query's own patch sit in it, and FALSE's rule (candidates closest to the positive) would pick
exactly those. :func:`self_key_mask` marks them; the losses exclude them from negatives and candidates.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from falsecl.losses.distributed import gather

#: Id of a queue slot whose patch is unknown (the random initial keys, or keys enqueued without ids).
NO_ID = -1


def self_key_mask(query_ids: Tensor | None, queue_ids: Tensor | None) -> Tensor | None:
    """Mark the queue keys that come from each query's own patch.

    Args:
        query_ids: Patch id of each query, shape ``(N,)`` integer, or ``None``.
        queue_ids: Patch id of each queue key, shape ``(K,)`` integer (:data:`NO_ID` where unknown), or ``None``.

    Returns:
        Bool ``(N, K)``, ``True`` where key ``m`` has the id of query ``i``; ``None`` when either id tensor is
        ``None`` (nothing can be masked). Negative ids never match.

    Raises:
        ValueError: If the ids are not 1-D integer tensors.
    """
    if query_ids is None or queue_ids is None:
        return None
    for name, ids in (("query_ids", query_ids), ("queue_ids", queue_ids)):
        if ids.ndim != 1 or ids.is_floating_point() or ids.is_complex():
            raise ValueError(f"{name} must be a 1-D integer tensor, got {ids.dtype} of shape {tuple(ids.shape)}")
    query_ids = query_ids.to(queue_ids.device)
    return (query_ids[:, None] == queue_ids[None, :]) & (queue_ids >= 0)[None, :]


def check_self_mask(mask: Tensor | None, n: int, k: int) -> None:
    """Raise ``ValueError`` unless ``mask`` is ``None`` or a bool tensor of shape ``(n, k)``."""
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (n, k)):
        raise ValueError(
            f"query_ids and queue_ids must hold one id per query ({n}) and per queue key ({k}); "
            f"got a self-key mask of shape {tuple(mask.shape)}"
        )


class KeyQueue(nn.Module):
    """Ring buffer of ``size`` unit-norm keys of dimension ``dim``, each with its patch id.

    In a multi-process run :meth:`enqueue` gathers the keys (and ids) of all ranks in rank order first, so every
    rank holds the same queue and the queue is independent of how the global batch is split.

    Args:
        size: Number of keys ``K`` (>= 1).
        dim: Key dimension ``D`` (>= 1).

    Attributes:
        keys: Buffer ``(K, D)``, initialised with random unit vectors as in MoCo.
        ids: Buffer ``(K,)`` int64, the patch id of each key; :data:`NO_ID` for the random initial keys.
        ptr: Buffer ``()``, index of the next slot to overwrite.
    """

    keys: Tensor
    ids: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be >= 1, got size={size}, dim={dim}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ids", torch.full((size,), NO_ID, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Checkpoints written before ids were kept: their keys get unknown ids (never masked).
        if prefix + "keys" in state_dict and prefix + "ids" not in state_dict:
            size = state_dict[prefix + "keys"].shape[0]
            state_dict[prefix + "ids"] = torch.full((size,), NO_ID, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def enqueue(self, keys: Tensor, ids: Tensor | None = None, gather_distributed: bool = True) -> None:
        """Replace the oldest entries with ``keys`` and their ``ids`` (wrapping around the end of the buffer).

        Args:
            keys: New keys ``(B, D)`` of this rank; detached and gathered from all ranks when distributed.
            ids: Patch ids ``(B,)`` of the keys (gathered like them), or ``None``: stored as :data:`NO_ID`.
                In a multi-process run all ranks must pass ids, or none.
            gather_distributed: Gather from all ranks first (a no-op in one process).

        Raises:
            ValueError: If the key dimension differs from the queue's, or ``ids`` does not have shape ``(B,)``.
        """
        if keys.ndim != 2 or keys.shape[1] != self.keys.shape[1]:
            raise ValueError(f"keys must have shape (B, {self.keys.shape[1]}), got {tuple(keys.shape)}")
        if ids is None:
            ids = torch.full((keys.shape[0],), NO_ID, dtype=torch.long, device=keys.device)
        if ids.shape != (keys.shape[0],) or ids.is_floating_point():
            raise ValueError(f"ids must be integer of shape ({keys.shape[0]},), got {ids.dtype} {tuple(ids.shape)}")
        keys = keys.detach()
        ids = ids.detach().to(device=keys.device, dtype=torch.long)
        if gather_distributed:
            keys, ids = gather(keys), gather(ids)
        size, count = self.keys.shape[0], keys.shape[0]
        # More keys than slots: only the newest survive, in the slots a one-by-one FIFO would give them.
        dropped = max(0, count - size)
        idx = ((int(self.ptr) + dropped + torch.arange(count - dropped, device=keys.device)) % size).to(
            self.keys.device
        )
        self.keys[idx] = keys[dropped:].to(self.keys.dtype).to(self.keys.device)
        self.ids[idx] = ids[dropped:].to(self.ids.device)
        self.ptr.fill_((int(self.ptr) + count) % size)

    def extra_repr(self) -> str:
        """Show the hyper-parameters in ``repr``."""
        return f"size={self.keys.shape[0]}, dim={self.keys.shape[1]}"
