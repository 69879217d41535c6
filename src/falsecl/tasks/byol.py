"""BYOL pretraining (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, arXiv 2006.07733).

BYOL is the negative-free reference of the comparison: an online network (backbone, projector, predictor)
regresses the projections of a slowly moving target network. **FALSE does not apply to BYOL**: there are no
negatives, hence no false negatives to find; the method takes no FALSE arguments.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor

from falsecl.losses.fp32 import fp32_similarities
from falsecl.tasks.base import PretrainTask


@fp32_similarities
def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL regression loss ``2 - 2 cos(p, z)``, mean over the batch.

    Args:
        p: Online predictions ``(N, D)``.
        z: Target projections ``(N, D)``; detached.

    Returns:
        Scalar loss in ``[0, 4]``.
    """
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


class BYOL(PretrainTask):
    """BYOL: online backbone + projector + predictor against an EMA target; no negatives, no FALSE.

    Args:
        hidden_dim: Hidden width of projector and predictor (paper: 4096).
        output_dim: Projection dimension (paper: 256).
        base_momentum: Target EMA momentum at the start; it follows a cosine schedule to 1 (paper: 0.99).
        kwargs: Backbone and optimiser arguments of :class:`falsecl.tasks.base.PretrainTask`.
    """

    def __init__(
        self, hidden_dim: int = 4096, output_dim: int = 256, base_momentum: float = 0.99, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if hidden_dim < 1 or output_dim < 1:
            raise ValueError(f"hidden_dim and output_dim must be >= 1; got {hidden_dim}, {output_dim}")
        if not 0.0 <= base_momentum <= 1.0:
            raise ValueError(f"base_momentum must be in [0, 1], got {base_momentum}")
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim
        self.base_momentum = base_momentum
        self._build_if_possible()

    def build_heads(self) -> None:
        """Projector, predictor and the target copies of backbone and projector."""
        self.projection_head = BYOLProjectionHead(self.feature_dim, self.hidden_dim, self.output_dim)
        self.prediction_head = BYOLPredictionHead(self.output_dim, self.hidden_dim, self.output_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def pretrain_loss(
        self, v0: Tensor, v1: Tensor, meta: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Symmetrised BYOL loss of the two views; logs the prediction-target cosine as ``positive_cos``."""
        m = (
            cosine_schedule(
                self.global_step,
                max(1, int(self.trainer.estimated_stepping_batches)),
                self.base_momentum,
                1.0,
            )
            if self._trainer is not None
            else self.base_momentum
        )
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)
        p = self.prediction_head(self.projection_head(self.backbone(torch.cat([v0, v1]))))
        with torch.no_grad():
            z = self.projection_head_momentum(self.backbone_momentum(torch.cat([v1, v0])))
        loss = byol_loss(p, z)
        with torch.no_grad():
            cos = F.cosine_similarity(p, z, dim=1).mean()
        return loss, {"positive_cos": cos, "target_momentum": torch.tensor(m)}
