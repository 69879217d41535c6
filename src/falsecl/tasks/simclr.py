"""SimCLR pretraining (Chen, Kornblith, Norouzi, Hinton, ICML 2020, arXiv 2002.05709) with FALSE.

The loss is chosen by name so the YAML stays flat:

* ``false``: :class:`falsecl.losses.false.FALSELoss` (Zhang et al., IEEE GRSL 2022) with every option:
  ``alpha``, ``threshold``, ``selection``, ``top_k``, ``symmetric``, ``negatives``. ``alpha = 0`` is NT-Xent.
* ``ntxent``: plain NT-Xent (lightly's ``NTXentLoss``), the SimCLR baseline.
* ``fnc``: FNC-style false-negative cancellation (Huynh et al., WACV 2022) = FALSE with
  ``negatives="eliminate"``; ``alpha = 0`` is pure elimination, ``alpha = 1`` pure attraction.
* ``debiased``: debiased contrastive loss (Chuang et al., NeurIPS 2020) with class prior ``tau_plus``.
* ``hard_negative``: hard-negative weighting (Robinson et al., ICLR 2021) with concentration ``beta`` (and
  ``tau_plus``).

Negatives (and FALSE candidates) always come from the global batch of all processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import Tensor, nn

from falsecl.losses.debiased import DebiasedContrastiveLoss
from falsecl.losses.diagnostics import false_negative_diagnostics
from falsecl.losses.false import FALSELoss
from falsecl.losses.fp32 import FP32Loss
from falsecl.losses.hard_negative import HardNegativeLoss
from falsecl.tasks.base import PretrainTask, loss_statistics

LossName = Literal["false", "ntxent", "fnc", "debiased", "hard_negative"]


def build_contrastive_loss(
    loss: str,
    temperature: float,
    alpha: float,
    threshold: float,
    selection: Literal["per_anchor", "official"],
    top_k: int,
    symmetric: bool,
    negatives: Literal["keep", "eliminate"],
    tau_plus: float,
    beta: float,
    gate: Literal["fixed", "quantile"] = "fixed",
    gate_quantile: float = 0.1,
) -> nn.Module:
    """Build the in-batch contrastive loss named ``loss`` (global negatives); see the module docstring.

    ``gate`` and ``gate_quantile`` set FALSE's gate (``false`` and ``fnc`` only; see :mod:`falsecl.losses.false`).

    Returns:
        A module mapping projections ``z0, z1`` of shape ``(N, D)`` to a scalar loss.

    Raises:
        ValueError: On an unknown name or illegal hyper-parameters.
    """
    if loss in ("false", "fnc"):
        return FALSELoss(
            temperature=temperature,
            alpha=alpha,
            threshold=threshold,
            selection=selection,
            top_k=top_k,
            symmetric=symmetric,
            negatives="eliminate" if loss == "fnc" else negatives,
            gather_distributed=True,
            gate=gate,
            gate_quantile=gate_quantile,
        )
    if loss == "ntxent":
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        # lightly computes its similarity matrix in the autocast dtype; keep it in fp32 like falsecl's losses.
        ntxent: nn.Module = FP32Loss(NTXentLoss(temperature=temperature, gather_distributed=True))
        return ntxent
    if loss == "debiased":
        return DebiasedContrastiveLoss(temperature=temperature, tau_plus=tau_plus, gather_distributed=True)
    if loss == "hard_negative":
        return HardNegativeLoss(temperature=temperature, beta=beta, tau_plus=tau_plus, gather_distributed=True)
    raise ValueError(f"unknown loss {loss!r}; choose one of false, ntxent, fnc, debiased, hard_negative")


class SimCLR(PretrainTask):
    """SimCLR: backbone + MLP projection head, contrastive loss over two views of the global batch.

    Args:
        loss: ``false``, ``ntxent``, ``fnc``, ``debiased`` or ``hard_negative``.
        temperature: Softmax temperature ``tau`` (the paper: 0.5).
        alpha: FALSE confidence ``alpha`` in ``[0, 1]`` (paper: 1).
        threshold: FALSE cosine gate ``T`` (paper: 0.9), used by the ``fixed`` gate.
        gate: ``fixed`` (``s_ip >= T``, the paper's rule) or ``quantile`` (the top ``gate_quantile`` share of the
            batch's rows by anchor-positive cosine).
        gate_quantile: Share of rows the ``quantile`` gate passes, in ``(0, 1]``.
        selection: FALSE candidate selection, ``per_anchor`` or ``official`` (the authors' released code).
        top_k: FALSE candidates per anchor (``per_anchor``).
        symmetric: Apply accepted FALSE pairs to both rows (``per_anchor``).
        negatives: ``keep`` (FALSE) or ``eliminate`` (FNC-style); ``fnc`` always eliminates.
        tau_plus: Class prior of ``debiased`` and ``hard_negative``.
        beta: Hardness concentration of ``hard_negative``.
        hidden_dim: Hidden width of the projection head (paper: 2048).
        output_dim: Projection dimension (paper: 128).
        num_layers: Linear layers of the projection head (2 = input-hidden-output).
        diagnostics_every: Every this many steps, when the batch carries patch majority classes
            (``meta["majority"]``, from labelled pretraining sources), log FALSE's false-negative diagnostics
            (:mod:`falsecl.losses.diagnostics`) as ``train/diag_*``; 0 turns them off. Labels never reach the loss.
        kwargs: Backbone and optimiser arguments of :class:`falsecl.tasks.base.PretrainTask`.
    """

    def __init__(
        self,
        loss: LossName = "false",
        temperature: float = 0.5,
        alpha: float = 1.0,
        threshold: float = 0.9,
        selection: Literal["per_anchor", "official"] = "per_anchor",
        top_k: int = 1,
        symmetric: bool = False,
        negatives: Literal["keep", "eliminate"] = "keep",
        tau_plus: float = 0.1,
        beta: float = 1.0,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_layers: int = 2,
        diagnostics_every: int = 10,
        gate: Literal["fixed", "quantile"] = "fixed",
        gate_quantile: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if hidden_dim < 1 or output_dim < 1 or num_layers < 2:
            raise ValueError(
                f"need hidden_dim, output_dim >= 1, num_layers >= 2: {(hidden_dim, output_dim, num_layers)}"
            )
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim
        self.num_layers = num_layers
        if diagnostics_every < 0:
            raise ValueError(f"diagnostics_every must be >= 0, got {diagnostics_every}")
        self.diagnostics_every = diagnostics_every
        self.temperature, self.threshold, self.top_k = temperature, threshold, top_k
        self.criterion = build_contrastive_loss(
            loss, temperature, alpha, threshold, selection, top_k, symmetric, negatives, tau_plus, beta, gate,
            gate_quantile,
        )
        self._build_if_possible()

    def build_heads(self) -> None:
        """Projection head ``feature_dim -> hidden_dim -> output_dim`` with batch norm (lightly)."""
        self.projection_head = SimCLRProjectionHead(
            self.feature_dim, self.hidden_dim, self.output_dim, num_layers=self.num_layers
        )

    def project(self, x: Tensor) -> Tensor:
        """Projections ``(B, output_dim)`` of normalised images ``(B, C, H, W)``."""
        out: Tensor = self.projection_head(self.backbone(x))
        return out

    def pretrain_loss(
        self, v0: Tensor, v1: Tensor, meta: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Contrastive loss of the projections of both views; FALSE statistics when available."""
        # One backbone pass over both views: batch norm sees the same statistics for both.
        z = self.project(torch.cat([v0, v1]))
        z0, z1 = z.chunk(2)
        loss: Tensor = self.criterion(z0, z1)
        stats = loss_statistics(self.criterion, z0, z1)
        majority = meta.get("majority") if meta is not None else None
        step = self.global_step if self._trainer is not None else 0
        if (
            majority is not None
            and self.diagnostics_every > 0
            and step % self.diagnostics_every == 0
            and bool((majority >= 0).any())
        ):
            diag = false_negative_diagnostics(
                z0.detach(), z1.detach(), majority, self.temperature, self.threshold, self.top_k, seed=step
            )
            self.log_measured_now({f"train/diag_{k}": v for k, v in diag.items()})
        return loss, stats
