"""Who may have false negatives accepted: the anchor-positive gate, and the option checks every FALSE variant shares.

The paper's gate is fixed: a row's candidates are accepted when its anchor-positive cosine is ``>= threshold``.
Where the positives never reach it (MoCo at a short budget: query-key cosines about 0.58 against the gate 0.9),
FALSE never acts; the quantile gate instead passes the ``ceil(q * R)`` rows of the batch with the largest
anchor-positive cosines, so the comparison with the plain loss is not between two identical methods.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

GateMode = Literal["fixed", "quantile"]


def _passing(rows: int, quantile: float) -> int:
    """How many of ``rows`` pass a quantile gate: ``ceil(quantile * rows)``, at least one, at most all."""
    return min(max(1, math.ceil(quantile * rows)), rows)


def check_candidate_args(temperature: float, alpha: float, threshold: float, top_k: int, negatives: str) -> None:
    """Validate the options shared by every FALSE variant (in-batch and MoCo queue).

    Raises:
        ValueError: For a temperature <= 0, alpha outside [0, 1], threshold outside [-1, 1], top_k < 1 or an
            unknown negatives mode.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine and must be in [-1, 1], got {threshold}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if negatives not in ("keep", "eliminate"):
        raise ValueError(f"negatives must be 'keep' or 'eliminate', got {negatives!r}")


def check_gate_args(gate: str, gate_quantile: float) -> None:
    """Validate the gate options shared by every FALSE variant.

    Raises:
        ValueError: For an unknown gate or a quantile outside (0, 1].
    """
    if gate not in ("fixed", "quantile"):
        raise ValueError(f"gate must be 'fixed' (the paper's rule) or 'quantile', got {gate!r}")
    if not 0.0 < gate_quantile <= 1.0:
        raise ValueError(f"gate_quantile is the share of rows that pass the gate, in (0, 1], got {gate_quantile}")


def quantile_gate(positive_cos: Tensor, quantile: float) -> Tensor:
    """The batch-relative gate value: the ``k``-th largest positive cosine, ``k = ceil(quantile * rows)``.

    Args:
        positive_cos: Anchor-positive cosines ``(R,)``.
        quantile: Share of rows that pass, in ``(0, 1]`` (at least one row passes).

    Returns:
        0-d tensor, the smallest positive cosine that passes.

    Raises:
        ValueError: For a quantile outside (0, 1].
    """
    check_gate_args("quantile", quantile)
    return positive_cos.topk(_passing(positive_cos.shape[0], quantile)).values[-1]


def quantile_passes(positive_cos: Tensor, quantile: float) -> Tensor:
    """Bool ``(R,)``: the ``ceil(quantile * R)`` rows with the largest positive cosines (exactly that many)."""
    passes = torch.zeros_like(positive_cos, dtype=torch.bool)
    return passes.scatter_(0, positive_cos.topk(_passing(positive_cos.shape[0], quantile)).indices, True)
