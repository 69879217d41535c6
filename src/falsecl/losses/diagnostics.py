"""How often FALSE's accepted false-negative candidates really are false negatives, on labelled data.

FALSE (Zhang et al., IEEE GRSL 2022) accepts, per anchor, the negative closest to the anchor-positive similarity.
Whether that negative shows the same kind of ground cannot be known without labels; with them it can be measured.
For a batch whose patches carry a *majority class* (the most frequent class of the patch's mask; -1 when
unknown), :func:`false_negative_diagnostics` reports for both selections

- ``<selection>_rows``: the share of the ``2N`` rows whose loss the selection changes;
- ``<selection>_precision``: the share of accepted (anchor, candidate) pairs whose two patches have the same
  majority class (pairs with an unknown class are left out);

the same for ``mutual``, the ``per_anchor`` pairs ``(i, j)`` that ``j`` also accepts (``j``'s pick is ``i``),
and two references on the same batch: ``chance_precision`` (one random negative per row) and
``hardest_precision`` (each row's most similar negative). A precision is NaN when no pair counts (nothing fired,
or every class unknown). Labels serve the diagnostics only; they never reach a loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from falsecl.losses.false import negative_mask, positive_index, select_official, select_per_anchor
from falsecl.losses.fp32 import fp32_similarities


def _precision(accepted: Tensor, labels: Tensor) -> float:
    known = (labels >= 0)[:, None] & (labels >= 0)[None, :]
    counted = accepted & known
    total = int(counted.sum())
    if total == 0:
        return math.nan
    same = labels[:, None] == labels[None, :]
    return float((counted & same).sum()) / total


@fp32_similarities
@torch.no_grad()
def false_negative_diagnostics(
    z0: Tensor, z1: Tensor, majority: Tensor, temperature: float, threshold: float, top_k: int = 1, seed: int = 0
) -> dict[str, float]:
    """Rows changed and precision of FALSE's selections, with chance and hardest-negative references.

    Args:
        z0: Projections of view 0, ``(N, D)``.
        z1: Projections of view 1, ``(N, D)``.
        majority: Majority class of each patch, ``(N,)`` int; -1 where unknown.
        temperature: ``tau`` of the loss (the ``official`` gate depends on it).
        threshold: Gate ``T`` of the loss.
        top_k: Candidates per anchor of ``per_anchor``.
        seed: Seed of the random (chance) negative.

    Returns:
        ``per_anchor_rows``, ``per_anchor_precision``, ``official_rows``, ``official_precision``,
        ``mutual_rows``, ``mutual_precision`` (``per_anchor`` pairs accepted from both ends), ``chance_precision``,
        ``hardest_precision``, ``hardest_gated_precision`` (the hardest negative on the rows whose positive cosine
        passes the gate, ``per_anchor``'s like-for-like reference; see the module docstring).

    Raises:
        ValueError: ``majority`` does not hold one value per patch.
    """
    n = z0.shape[0]
    if majority.shape != (n,):
        raise ValueError(f"majority must have shape ({n},), got {tuple(majority.shape)}")
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    sim = z @ z.T
    labels = torch.cat([majority, majority]).to(sim.device)
    negatives = negative_mask(2 * n, sim.device)
    out: dict[str, float] = {}
    per_anchor, _ = select_per_anchor(sim, threshold, top_k)
    # Mutual pick: (i, j) is kept only if j, through its own gate, also accepted i (a candidate for a stricter
    # selection; measured here before it reaches a loss).
    mutual = per_anchor & per_anchor.T
    for name, accepted in (
        ("per_anchor", per_anchor),
        ("official", select_official(sim, temperature, threshold)[0]),
        ("mutual", mutual),
    ):
        accepted = accepted & negatives
        out[f"{name}_rows"] = float(accepted.any(dim=1).float().mean())
        out[f"{name}_precision"] = _precision(accepted, labels)
    rows = torch.arange(2 * n, device=sim.device)
    hardest = sim.masked_fill(~negatives, -math.inf).argmax(dim=1)
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(2 * n, 2 * n, generator=g).to(sim.device).masked_fill(~negatives, -1.0)
    chance = scores.argmax(dim=1)
    for name, cols in (("hardest", hardest), ("chance", chance)):
        pick = torch.zeros_like(negatives)
        pick[rows, cols] = True
        out[f"{name}_precision"] = _precision(pick & negatives, labels)
    # The hardest negative on the rows that pass the gate only: per_anchor's fair reference, since the gate alone
    # keeps the rows whose embedding is most confident.
    gated = sim[rows, positive_index(2 * n, sim.device)] >= threshold
    pick = torch.zeros_like(negatives)
    pick[rows, hardest] = True
    out["hardest_gated_precision"] = _precision(pick & negatives & gated[:, None], labels)
    return out
