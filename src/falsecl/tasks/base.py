"""Shared machinery of the self-supervised pretraining tasks (SimCLR, MoCo v2, BYOL).

:class:`PretrainTask` owns what every method has in common: the backbone (any number of input bands,
built by :func:`falsecl.models.build_backbone`), the optimiser (SGD, LARS as in SimCLR, or AdamW; no
weight decay and no LARS adaptation on batch-norm and bias parameters), the per-step schedule (linear
warm-up, then cosine decay), logging (loss, learning rate, method statistics, images/s), the
non-finite-loss guard and the ``backbone.pt`` file that segmentation fine-tuning loads. Subclasses build
their heads in :meth:`build_heads` and compute the loss of two views in :meth:`pretrain_loss`.

Batches are ``{"views": [v0, v1]}`` with two normalised views ``(B, C, h, w)``, as produced by
``falsecl.datamodules.SSLDataModule``.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from lightly.models.utils import get_weight_decay_parameters
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler
from lightning.pytorch import LightningModule
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn

from falsecl.models.backbones import BACKBONE_DIMS, build_backbone, save_backbone_file
from falsecl.precision import Workload, data_in_channels, to_memory_format

Optimizer = Literal["lars", "sgd", "adamw"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint writer that never leaves a truncated file behind.

    Lightning writes local checkpoints through an fsspec transaction whose temporary file lives in the
    system temp directory and is *moved* into place, which is a copy (not atomic) when ``/tmp`` is another
    filesystem. Here the bytes go to a temporary file next to the target, are fsynced, and ``os.replace``
    swaps it in, so a run killed at any moment (even by SIGKILL) keeps either the previous or the new
    checkpoint. Remote URLs (``s3://...``) fall back to Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically."""
        if "://" in str(path) or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite; the last saved checkpoint is left intact."""


def loss_statistics(criterion: nn.Module, z0: Tensor, z1: Tensor) -> dict[str, Tensor]:
    """Statistics to log after a contrastive loss call, under stable names.

    FALSE's ``fire_rate`` and ``candidate_cos`` become ``false/fire_rate`` and ``false/candidate_cos``;
    ``positive_cos`` (mean anchor-positive cosine) is computed from ``z0, z1`` ``(N, D)`` when the loss does not
    report it, so every method logs it.
    """
    stats: dict[str, Tensor] = dict(getattr(criterion, "last_stats", {}))
    stats.pop("num_fired", None)
    out = {(f"false/{k}" if k in ("fire_rate", "candidate_cos") else k): v for k, v in stats.items()}
    if "positive_cos" not in out:
        out["positive_cos"] = torch.nn.functional.cosine_similarity(z0.detach(), z1.detach(), dim=1).mean()
    return out


class PretrainTask(LightningModule):
    """Base LightningModule of the pretraining methods.

    Args:
        arch: Backbone architecture: ``resnet18``, ``resnet34`` or ``resnet50``.
        in_channels: Number of input bands; ``None`` takes ``in_channels`` from the datamodule at fit time.
        optimizer: ``lars`` (SGD with LARS adaptation, You et al. 2017, as in SimCLR), ``sgd`` or ``adamw``.
        lr: Peak learning rate, reached at the end of warm-up. SimCLR uses ``0.3 * batch / 256`` with LARS.
        momentum: SGD/LARS momentum (AdamW: ``beta1``).
        weight_decay: Weight decay of weights; batch-norm and bias parameters get none.
        warmup_fraction: Fraction of the total steps of linear warm-up, in ``[0, 1)``.
        min_lr_fraction: Learning rate at the end of the cosine decay, as a fraction of ``lr``.
        backbone_file: Where to write the backbone weights; default
            ``<trainer.default_root_dir>/backbone.pt``.

    Raises:
        ValueError: On illegal arguments.
    """

    backbone: nn.Module

    def __init__(
        self,
        arch: str = "resnet18",
        in_channels: int | None = None,
        optimizer: Optimizer = "lars",
        lr: float = 0.3,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        warmup_fraction: float = 0.1,
        min_lr_fraction: float = 0.0,
        backbone_file: str | None = None,
    ) -> None:
        super().__init__()
        if arch not in BACKBONE_DIMS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(BACKBONE_DIMS)}")
        if in_channels is not None and in_channels < 1:
            raise ValueError(f"in_channels must be >= 1 (or None to take it from the data), got {in_channels}")
        if optimizer not in ("lars", "sgd", "adamw"):
            raise ValueError(f"optimizer must be 'lars', 'sgd' or 'adamw', got {optimizer!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0 or momentum < 0:
            raise ValueError(f"weight_decay and momentum must be >= 0, got {weight_decay}, {momentum}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
        if not 0.0 <= min_lr_fraction <= 1.0:
            raise ValueError(f"min_lr_fraction must be in [0, 1], got {min_lr_fraction}")
        # Called here, Lightning also collects the arguments of the subclass __init__ frames, so the
        # checkpoint records every argument of the method, defaults included.
        self.save_hyperparameters()
        self.arch = arch
        self.in_channels = in_channels
        self.optimizer_name: Optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.min_lr_fraction = min_lr_fraction
        self.backbone_file = backbone_file
        self._built = False
        self._batch_start: float | None = None
        #: Train in channels-last memory (set by ``--precision auto`` where it measured faster; not a
        #: hyper-parameter: it depends on the machine, not on the model).
        self.channels_last = False

    # ------------------------------------------------------------------------------------------ building
    @property
    def feature_dim(self) -> int:
        """Output dimension of the backbone (after global average pooling)."""
        return BACKBONE_DIMS[self.arch]

    def build_heads(self) -> None:
        """Create the method's heads (and momentum copies); called once, right after the backbone exists."""
        raise NotImplementedError

    def configure_model(self) -> None:
        """Build backbone and heads once ``in_channels`` is known (given, or from the datamodule).

        Lightning calls this after ``datamodule.setup`` and before restoring a checkpoint, so the number of
        bands may come from the data while ``--ckpt_path`` still restores every weight.

        Raises:
            ValueError: If ``in_channels`` was not given and no datamodule provides it.
        """
        if self._built:
            return
        if self.in_channels is None:
            datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
            channels = getattr(datamodule, "in_channels", None)
            if channels is None:
                raise ValueError(
                    "in_channels is not set and the datamodule has no 'in_channels' attribute; "
                    "pass --model.init_args.in_channels N"
                )
            self.in_channels = int(channels)
            self.hparams["in_channels"] = self.in_channels  # so load_from_checkpoint rebuilds the same shapes
        self.backbone = build_backbone(self.arch, self.in_channels)
        self.build_heads()
        self._built = True

    def _build_if_possible(self) -> None:
        if self.in_channels is not None:
            self.configure_model()

    def calibration_workload(self, data: Any) -> Workload:
        """One pretraining step of a copy of this model on random views of the run's batch and crop size.

        Args:
            data: The datamodule (``batch_size``, ``crop_size``, bands); 64 x 96 px x 3 bands when it lacks them.

        Returns:
            The :class:`falsecl.precision.Workload` that ``--precision auto`` times (two views ``(B, C, h, w)``).
        """
        probe = copy.deepcopy(self)
        if probe.in_channels is None:
            probe.in_channels = data_in_channels(data)
        probe.configure_model()
        batch, size = int(getattr(data, "batch_size", 64)), int(getattr(data, "crop_size", 96))
        views = tuple(torch.randn(batch, probe.in_channels, size, size) for _ in range(2))

        def step(module: PretrainTask, v0: Tensor, v1: Tensor) -> Tensor:
            return module.pretrain_loss(v0, v1)[0]

        heads = [f"{k} {v}" for k, v in self.hparams.items() if k in ("loss", "hidden_dim", "output_dim")]
        return Workload(f"{type(self).__name__} {self.arch} ({', '.join(heads)})", probe, views, step)

    # ------------------------------------------------------------------------------------------ training
    def on_fit_start(self) -> None:
        """Move weights (and momentum copies) to channels-last memory when :attr:`channels_last` is set."""
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """Backbone features ``(B, feature_dim)`` of normalised images ``(B, C, H, W)``."""
        out: Tensor = self.backbone(x)
        return out

    def pretrain_loss(
        self, v0: Tensor, v1: Tensor, meta: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of two views ``(B, C, h, w)`` and detached statistics to log; implemented by each method.

        Args:
            v0: First view of each patch.
            v1: Second view of each patch.
            meta: The batch's other per-patch tensors, when the datamodule provides them: ``"index"`` (B,)
                int64, the patch's index in the pretraining dataset (MoCo keeps it with queued keys), and
                ``"majority"`` (B,) int64, the majority class of the patch's mask or -1 (diagnostics only,
                never used by the loss).
        """
        raise NotImplementedError

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One optimisation step on ``batch = {"views": [v0, v1]}``.

        Raises:
            ValueError: If the batch does not hold two views of equal shape.
            NonFiniteLossError: If the loss is NaN or infinite on any rank.
        """
        views = batch.get("views") if isinstance(batch, dict) else None
        if not isinstance(views, list | tuple) or len(views) < 2 or views[0].shape != views[1].shape:
            raise ValueError(
                "pretraining batches must be {'views': [v0, v1]} with two views of equal shape (B, C, h, w); "
                "use falsecl.datamodules.SSLDataModule"
            )
        meta = {k: v for k, v in batch.items() if k != "views" and isinstance(v, Tensor)}
        v0, v1 = (to_memory_format(v, self.channels_last) for v in views[:2])
        loss, stats = self.pretrain_loss(v0, v1, meta)
        self._check_finite(loss)
        batch_size = views[0].shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size)
        for name, value in stats.items():
            self.log(f"train/{name}", value.float(), on_step=True, on_epoch=False, batch_size=batch_size)
        if self._trainer is not None and self.trainer.optimizers:
            lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
            self.log("train/lr", lr, on_step=True, on_epoch=False, batch_size=batch_size)
        return loss

    def log_measured_now(self, metrics: dict[str, float]) -> None:
        """Write values measured at this step only (e.g. every k-th step) straight to the loggers.

        ``self.log(..., on_step=True)`` of a value logged on some steps only repeats its last value at the later
        steps of the epoch, as if it had been measured there.
        """
        if self._trainer is None:
            return
        for logger in self.trainer.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def _check_finite(self, loss: Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).item())
        if self._trainer is not None:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        where = "the last checkpoint saved before this step"
        if self._trainer is not None and self.trainer.checkpoint_callback is not None:
            dirpath = getattr(self.trainer.checkpoint_callback, "dirpath", None)
            if dirpath:
                where = f"{Path(dirpath) / 'last.ckpt'} (written before this step)"
        raise NonFiniteLossError(
            f"training loss is {loss.detach().item()} at global step {self.global_step} (epoch "
            f"{self.current_epoch}); the run was stopped before the update, and the last good checkpoint is "
            f"{where}. Lower the learning rate or lengthen the warm-up, check the data for NaN/inf pixels, "
            "then resume with --ckpt_path last."
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Start the images/s clock."""
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Log the throughput of the whole (global) batch in images per second."""
        if self._batch_start is None or not isinstance(batch, dict) or "views" not in batch:
            return
        elapsed = time.perf_counter() - self._batch_start
        images = batch["views"][0].shape[0] * self.trainer.world_size
        if elapsed > 0:
            self.log("train/images_per_s", images / elapsed, on_step=True, on_epoch=False, batch_size=images)

    # ------------------------------------------------------------------------------------------ optimiser
    def trainable_modules(self) -> list[nn.Module]:
        """Modules whose parameters the optimiser updates (momentum copies excluded)."""
        return [m for m in self.children() if any(p.requires_grad for p in m.parameters())]

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser alone: decayed weights, and batch-norm/bias parameters without weight decay."""
        decay, no_decay = get_weight_decay_parameters(self.trainable_modules())
        groups = [
            {"params": [p for p in decay if p.requires_grad], "weight_decay": self.weight_decay},
            {"params": [p for p in no_decay if p.requires_grad], "weight_decay": 0.0},
        ]
        if self.optimizer_name == "lars":
            lars: torch.optim.Optimizer = LARS(groups, lr=self.lr, momentum=self.momentum)
            return lars
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum)
        return torch.optim.AdamW(groups, lr=self.lr, betas=(self.momentum, 0.999))

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """Optimiser and per-step schedule.

        Two parameter groups: decayed weights, and batch-norm/bias parameters without weight decay (LARS also
        skips its adaptation for them). Linear warm-up, then cosine decay over
        ``trainer.estimated_stepping_batches``.
        """
        optimizer = self.build_optimizer()
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.warmup_fraction * total)
        scheduler = CosineWarmupScheduler(
            optimizer, warmup_epochs=warmup, max_epochs=total, end_value=self.min_lr_fraction
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def momentum_progress(self) -> float:
        """Fraction of training done, in ``[0, 1]``, for momentum schedules."""
        if self._trainer is None:
            return 0.0
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return min(1.0, self.global_step / total)

    # ------------------------------------------------------------------------------------------ outputs
    def backbone_path(self) -> Path:
        """Path of the backbone weight file written during training."""
        if self.backbone_file is not None:
            return Path(self.backbone_file)
        return Path(self.trainer.default_root_dir) / "backbone.pt"

    def save_backbone(self) -> Path | None:
        """Write the bare backbone weights (atomically) on global rank 0; returns the path on that rank."""
        if self._trainer is not None and not self.trainer.is_global_zero:
            return None
        if self.in_channels is None:
            raise ValueError("the backbone has not been built yet; nothing to save")
        return save_backbone_file(self.backbone_path(), self.backbone, self.arch, self.in_channels)

    def on_train_epoch_end(self) -> None:
        """Refresh ``backbone.pt`` after every epoch, so an interrupted run still leaves usable weights."""
        self.save_backbone()

    def on_train_end(self) -> None:
        """Write the final ``backbone.pt``."""
        self.save_backbone()
