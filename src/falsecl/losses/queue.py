"""A FIFO queue of keys for MoCo (He et al., CVPR 2020), saved in checkpoints and shared by all ranks.

lightly's ``MemoryBankModule`` registers its bank as a non-persistent buffer, so a resumed run would restart
from a random queue; this queue is a persistent buffer, so ``--ckpt_path last`` restores it exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from falsecl.losses.distributed import gather


class KeyQueue(nn.Module):
    """Ring buffer of ``size`` unit-norm keys of dimension ``dim``.

    In a multi-process run :meth:`enqueue` gathers the keys of all ranks in rank order first, so every rank
    holds the same queue and the queue is independent of how the global batch is split.

    Args:
        size: Number of keys ``K`` (>= 1).
        dim: Key dimension ``D`` (>= 1).

    Attributes:
        keys: Buffer ``(K, D)``, initialised with random unit vectors as in MoCo.
        ptr: Buffer ``()``, index of the next slot to overwrite.
    """

    keys: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be >= 1, got size={size}, dim={dim}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor, gather_distributed: bool = True) -> None:
        """Replace the oldest entries with ``keys`` (wrapping around the end of the buffer).

        Args:
            keys: New keys ``(B, D)`` of this rank; detached and gathered from all ranks when distributed.
            gather_distributed: Gather from all ranks first (a no-op in one process).

        Raises:
            ValueError: If the key dimension differs from the queue's.
        """
        if keys.ndim != 2 or keys.shape[1] != self.keys.shape[1]:
            raise ValueError(f"keys must have shape (B, {self.keys.shape[1]}), got {tuple(keys.shape)}")
        keys = keys.detach()
        if gather_distributed:
            keys = gather(keys)
        size, count = self.keys.shape[0], keys.shape[0]
        # More keys than slots: only the newest survive, in the slots a one-by-one FIFO would give them.
        dropped = max(0, count - size)
        idx = (int(self.ptr) + dropped + torch.arange(count - dropped, device=keys.device)) % size
        self.keys[idx.to(self.keys.device)] = keys[dropped:].to(self.keys.dtype)
        self.ptr.fill_((int(self.ptr) + count) % size)

    def extra_repr(self) -> str:
        """Show the hyper-parameters in ``repr``."""
        return f"size={self.keys.shape[0]}, dim={self.keys.shape[1]}"
