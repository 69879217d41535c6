"""Similarities in fp32 whatever the autocast precision.

bf16 keeps 8 bits of mantissa, so cosines near 1 are rounded to steps of about 0.004: near ties between the
positive and the closest negatives, exactly the pairs FALSE's selection compares, would be reordered, and the
log-sum-exp over thousands of negatives would lose precision. Every loss entry point that builds a similarity
matrix is wrapped with :func:`fp32_similarities`: bf16/fp16 tensor arguments are cast to fp32 and autocast is
disabled inside, so a bf16-mixed training step gives the loss fp32 would give on the same embeddings.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

import torch
from torch import Tensor, nn

P = ParamSpec("P")
R = TypeVar("R")


def _fp32(value: Any) -> Any:
    # Only half precisions are raised; float64 (reference computations) stays as it is.
    return value.float() if isinstance(value, Tensor) and value.dtype in (torch.bfloat16, torch.float16) else value


def fp32_similarities(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with its bf16/fp16 tensor arguments in fp32 and autocast disabled (gradients flow)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        device = tensors[0].device.type if tensors else "cpu"
        new_args = tuple(_fp32(a) for a in args)
        new_kwargs = {k: _fp32(v) for k, v in kwargs.items()}
        with torch.autocast(device_type=device, enabled=False):
            return cast(Callable[..., R], fn)(*new_args, **new_kwargs)

    return wrapper


class FP32Loss(nn.Module):
    """Wrap a third-party loss module (e.g. lightly's ``NTXentLoss``) so it too runs in fp32 under autocast.

    Args:
        loss: The module to wrap.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, *args: Tensor) -> Tensor:
        """The wrapped loss of ``args`` with bf16/fp16 tensors raised to fp32 and autocast off."""
        out: Tensor = fp32_similarities(self.loss)(*args)
        return out
