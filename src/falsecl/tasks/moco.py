"""MoCo v2 pretraining (Chen, Fan, Girshick, He, arXiv 2003.04297) with FALSE extended to the queue.

A query encoder (backbone + MLP head) is trained against keys from a momentum (EMA) copy of it; negatives are
the keys of earlier batches held in a FIFO queue. The loss is chosen by name:

* ``false``: :class:`falsecl.losses.moco_false.MoCoFALSELoss`: false-negative candidates are searched among
  the queue keys (Zhang et al., IEEE GRSL 2022, extended); ``alpha = 0`` is exactly MoCo v2's InfoNCE.
* ``ntxent``: MoCo v2's InfoNCE against the queue (``MoCoFALSELoss`` with ``alpha = 0``).
* ``fnc``: FNC-style elimination/attraction among queue keys (``negatives="eliminate"``; Huynh et al.,
  WACV 2022).
* ``debiased`` (Chuang et al., NeurIPS 2020) and ``hard_negative`` (Robinson et al., ICLR 2021) on the queue.

In a multi-process run every rank enqueues the keys of all ranks (gathered in rank order), so all ranks hold
the same queue, and the queue is a persistent buffer restored exactly by ``--ckpt_path``.

Every queued key keeps the id of its patch (the batch's ``"index"``). Once the queue spans a good part of an
epoch, earlier views of a query's own patch sit in it: with a queue of ``K`` keys over ``N`` patches,
``K**2 / (2 N**2)`` of the queries meet one when ``K <= N``, and a query meets about ``K / N - 1/2`` of them in
a long queue (:func:`expected_self_keys`). They are not negatives, and FALSE's "closest to the positive" rule
would tend to pick them, so they are masked from the negatives and the candidates of every loss
(``mask_self_keys``), and a queue holding more than half an epoch is warned about.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import Tensor, nn

from falsecl.losses.debiased import DebiasedContrastiveLoss
from falsecl.losses.hard_negative import HardNegativeLoss
from falsecl.losses.moco_false import MoCoFALSELoss
from falsecl.losses.queue import KeyQueue
from falsecl.tasks.base import PretrainTask, loss_statistics

log = logging.getLogger(__name__)

LossName = Literal["false", "ntxent", "fnc", "debiased", "hard_negative"]


def build_queue_loss(
    loss: str,
    temperature: float,
    alpha: float,
    threshold: float,
    top_k: int,
    negatives: Literal["keep", "eliminate"],
    tau_plus: float,
    beta: float,
    gate: Literal["fixed", "quantile"] = "fixed",
    gate_quantile: float = 0.1,
) -> nn.Module:
    """Build the queue loss named ``loss``; see the module docstring.

    ``gate`` and ``gate_quantile`` set FALSE's gate (see :mod:`falsecl.losses.moco_false`).

    Returns:
        A module mapping queries ``(N, D)``, keys ``(N, D)`` and a queue ``(K, D)`` to a scalar loss.

    Raises:
        ValueError: On an unknown name or illegal hyper-parameters.
    """
    if loss in ("false", "fnc", "ntxent"):
        return MoCoFALSELoss(
            temperature=temperature,
            alpha=0.0 if loss == "ntxent" else alpha,
            threshold=threshold,
            top_k=top_k,
            negatives="eliminate" if loss == "fnc" else negatives,
            gate=gate,
            gate_quantile=gate_quantile,
        )
    if loss == "debiased":
        return DebiasedContrastiveLoss(temperature=temperature, tau_plus=tau_plus)
    if loss == "hard_negative":
        return HardNegativeLoss(temperature=temperature, beta=beta, tau_plus=tau_plus)
    raise ValueError(f"unknown loss {loss!r}; choose one of false, ntxent, fnc, debiased, hard_negative")


class MoCo(PretrainTask):
    """MoCo v2: query encoder, momentum key encoder and a queue of keys.

    Args:
        loss: ``false``, ``ntxent`` (InfoNCE), ``fnc``, ``debiased`` or ``hard_negative``.
        temperature: Softmax temperature (MoCo v2: 0.2).
        alpha: FALSE confidence in ``[0, 1]``.
        threshold: FALSE cosine gate ``T`` on the query-key similarity (``fixed`` gate).
        gate: ``fixed`` (``s_i+ >= T``, the paper's rule) or ``quantile`` (the top ``gate_quantile`` share of the
            batch's queries by query-key cosine: FALSE acts even when every cosine stays below ``T``).
        gate_quantile: Share of queries the ``quantile`` gate passes, in ``(0, 1]``.
        top_k: FALSE candidates per query, searched in the queue.
        negatives: ``keep`` (FALSE) or ``eliminate`` (FNC-style); ``fnc`` always eliminates.
        tau_plus: Class prior of ``debiased`` and ``hard_negative``.
        beta: Hardness concentration of ``hard_negative``.
        queue_size: Number of keys in the queue (MoCo: 65536).
        key_momentum: EMA momentum of the key encoder (MoCo: 0.999).
        hidden_dim: Hidden width of the projection head.
        output_dim: Key/query dimension.
        mask_self_keys: Keep keys of a query's own patch out of its negatives and FALSE candidates (needs the
            batch's ``"index"``); ``False`` only to measure their effect.
        kwargs: Backbone and optimiser arguments of :class:`falsecl.tasks.base.PretrainTask`.
    """

    queue: KeyQueue

    def __init__(
        self,
        loss: LossName = "false",
        temperature: float = 0.2,
        alpha: float = 1.0,
        threshold: float = 0.9,
        top_k: int = 1,
        negatives: Literal["keep", "eliminate"] = "keep",
        tau_plus: float = 0.1,
        beta: float = 1.0,
        queue_size: int = 65536,
        key_momentum: float = 0.999,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        mask_self_keys: bool = True,
        gate: Literal["fixed", "quantile"] = "fixed",
        gate_quantile: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if queue_size < 1 or hidden_dim < 1 or output_dim < 1:
            raise ValueError(
                f"queue_size, hidden_dim, output_dim must be >= 1, got {(queue_size, hidden_dim, output_dim)}"
            )
        if not 0.0 <= key_momentum <= 1.0:
            raise ValueError(f"key_momentum must be in [0, 1], got {key_momentum}")
        self.queue_size = queue_size
        self.key_momentum = key_momentum
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim
        self.mask_self_keys = mask_self_keys
        self._warned_no_index = False
        self.criterion = build_queue_loss(
            loss, temperature, alpha, threshold, top_k, negatives, tau_plus, beta, gate, gate_quantile
        )
        self._build_if_possible()

    def build_heads(self) -> None:
        """Query head, momentum copies of backbone and head, and the queue."""
        self.projection_head = MoCoProjectionHead(self.feature_dim, self.hidden_dim, self.output_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.queue = KeyQueue(self.queue_size, self.output_dim)

    def on_train_start(self) -> None:
        """Warn when the queue holds more than half an epoch of keys (self-keys are then common)."""
        dataset = getattr(getattr(self.trainer, "datamodule", None), "dataset", None)
        try:
            patches = len(dataset) if dataset is not None else 0
        except TypeError:
            patches = 0
        message = queue_size_warning(self.queue_size, patches)
        if message is not None:
            warnings.warn(message, UserWarning, stacklevel=2)

    def _patch_ids(self, meta: Mapping[str, Tensor] | None, batch_size: int) -> Tensor | None:
        ids = meta.get("index") if meta is not None else None
        if ids is not None and ids.shape == (batch_size,) and not ids.is_floating_point():
            return ids.long()
        if not self._warned_no_index:
            self._warned_no_index = True
            log.warning(
                "pretraining batches carry no per-patch 'index' of shape (%d,); MoCo cannot mask keys of a "
                "query's own patch in the queue. Use falsecl.datamodules.SSLDataModule, or add the patch "
                "index to each batch as 'index'.",
                batch_size,
            )
        return None

    def pretrain_loss(
        self, v0: Tensor, v1: Tensor, meta: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Queries from view 0, keys from view 1; the keys (and their patch ids) join the queue after the loss."""
        update_momentum(self.backbone, self.backbone_momentum, self.key_momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, self.key_momentum)
        q = self.projection_head(self.backbone(v0))
        with torch.no_grad():
            k = F.normalize(self.projection_head_momentum(self.backbone_momentum(v1)), dim=1)
        ids = self._patch_ids(meta, q.shape[0])
        # The loss sees the queue before this batch is enqueued.
        queue, queue_ids = self.queue.keys.clone(), self.queue.ids.clone()
        if ids is not None and self.mask_self_keys:
            loss: Tensor = self.criterion(q, k, queue, query_ids=ids, queue_ids=queue_ids)
        else:
            loss = self.criterion(q, k, queue)
        stats = loss_statistics(self.criterion, q, k)
        if ids is not None and "self_key_rate" not in stats:  # measured, though not masked
            own = (ids.to(queue_ids.device)[:, None] == queue_ids[None, :]) & (queue_ids >= 0)[None, :]
            stats["self_key_rate"] = own.any(dim=1).float().mean()
        self.queue.enqueue(k, ids)
        return loss, stats


def expected_self_keys(queue_size: int, patches: int) -> tuple[float, float]:
    """Share of queries meeting an earlier view of their own patch in the queue, and the mean number of such views.

    With the ``N`` patches shuffled anew each epoch (one key per patch per epoch, one process), the distance in
    keys between a query and its view ``j`` epochs earlier is ``j N + d`` with ``d`` the difference of two uniform
    positions, triangular on ``(-N, N)``; a view is in a queue of ``K`` keys when that distance is at most ``K``.
    From the second epoch on, the share is ``F(K - N)`` (``K**2 / (2 N**2)`` for ``K <= N``) and the mean is
    ``sum_j F(K - j N)``, about ``K / N`` for long queues, with ``F`` the distribution function of ``d``.

    Args:
        queue_size: ``K``.
        patches: ``N`` (>= 1).

    Returns:
        ``(share, mean)``.
    """
    n = float(patches)

    def cdf(x: float) -> float:
        if x <= -n:
            return 0.0
        if x <= 0:
            return (x + n) ** 2 / (2 * n * n)
        return 1.0 - (n - x) ** 2 / (2 * n * n) if x < n else 1.0

    mean, j = 0.0, 1
    while queue_size - j * n > -n:
        mean += cdf(queue_size - j * n)
        j += 1
    return cdf(queue_size - n), mean


def queue_size_warning(queue_size: int, patches: int) -> str | None:
    """Warning text when a queue of ``queue_size`` keys exceeds half of ``patches`` (``None`` otherwise).

    The figures are those of :func:`expected_self_keys`.
    """
    if patches < 1 or 2 * queue_size <= patches:
        return None
    share, mean = expected_self_keys(queue_size, patches)
    return (
        f"the MoCo queue ({queue_size} keys) holds more than half of the {patches} pretraining patches: "
        f"after the first epoch about {100 * share:.0f} % of queries meet an earlier view of their own patch in "
        f"it ({mean:.2f} such keys per query on average). They are masked when batches carry 'index', so they "
        f"are wasted slots rather than new negatives; use --model.init_args.queue_size {max(1, patches // 2)} or "
        "less, or pretrain on more patches."
    )
