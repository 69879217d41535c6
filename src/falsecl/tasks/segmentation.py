"""Label-efficient fine-tuning of DeepLabv3+ on top of a pretrained ResNet encoder.

The downstream protocol of the FALSE paper (Zhang et al., IEEE GRSL 2022): DeepLabv3+ with output stride 8,
encoder initialised from self-supervised pretraining, trained on 1-100 % of the labels with SGD (lr 0.01,
momentum 0.9, weight decay 5e-4) and a poly(0.9) schedule down to 1e-4, cross-entropy ignoring unlabelled
pixels. The authors froze the whole encoder (``freeze_backbone=True``); full fine-tuning with a smaller
encoder learning rate (``backbone_lr_factor``) is the other option.

The checkpoint stores everything inference needs in its hyper-parameters: ``in_channels``,
``num_classes``, ``class_names``, ``class_colours``, the per-band ``mean``/``std`` of the training data, and
what the data was (``data_name``, ``data_root``, ``data_root_as_given``, ``data_bands``, ``data_palette``,
``data_label_fraction``, ``data_seed``, ``data_val_split``, ``data_val_description``, ``data_held_out_override``,
``data_dtype`` and ``data_value_range``, the training pixels' data type and per-band 1st/99th percentiles:
prefixed, as Lightning refuses a module and a datamodule logging the same hyper-parameter name with different
values), so ``falsecl evaluate``/``predict`` normalise raw images themselves and score or map them with the right
classes. Values not given are pulled from the datamodule at ``setup``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix

from falsecl.metrics import IGNORE_INDEX, confusion_matrix_metric, metrics_from_confusion
from falsecl.models.segmentation import build_deeplabv3plus, load_encoder_weights
from falsecl.precision import Workload, data_in_channels, to_memory_format

#: Hyper-parameter -> datamodule attribute copied into it at ``setup`` when not given explicitly. Attributes a
#: datamodule lacks are skipped (``getattr`` fallback), so older datamodules still work.
_FROM_DATA: dict[str, str] = {
    "in_channels": "in_channels",
    "num_classes": "num_classes",
    "mean": "mean",
    "std": "std",
    "class_names": "class_names",
    "class_colours": "class_colours",
    "data_name": "dataset_name",
    "data_root": "root",
    "data_root_as_given": "root_as_given",
    "data_bands": "bands",
    "data_palette": "palette",
    "data_label_fraction": "label_fraction",
    "data_seed": "seed",
    "data_val_split": "val_split",
    "data_val_description": "val_description",
    "data_held_out_override": "held_out_override",
    "data_dtype": "input_dtype",
    "data_value_range": "input_range",
}


def poly_factor(step: int, total_steps: int, power: float = 0.9, min_ratio: float = 0.0) -> float:
    """Poly learning-rate factor ``(1 - step / total) ** power`` rescaled to end at ``min_ratio``.

    With base rate ``lr`` and ``min_ratio = min_lr / lr`` the rate is
    ``(lr - min_lr) * (1 - step / total) ** power + min_lr`` (mmsegmentation's ``PolyLR`` with ``eta_min``).

    Args:
        step: Optimisation step (0-based).
        total_steps: Total number of steps; the factor stays at ``min_ratio`` after it.
        power: Poly exponent.
        min_ratio: Final rate as a fraction of the base rate.

    Returns:
        The multiplicative factor on the base learning rate.
    """
    progress = min(step, total_steps) / max(1, total_steps)
    return float((1.0 - min_ratio) * (1.0 - progress) ** power + min_ratio)


class SegmentationTask(LightningModule):
    """DeepLabv3+ fine-tuning with a (pre)trained ResNet encoder.

    Args:
        arch: Encoder architecture (``resnet18``, ``resnet34``, ``resnet50``); must match the backbone file.
        backbone_weights: ``runs/<pretrain>/backbone.pt`` or any ResNet state dict file; ``None`` trains from
            random initialisation (the "no pretraining" baseline). Loaded at the start of fitting only, so a
            checkpoint can be reloaded without it.
        in_channels: Input bands; from the datamodule when ``None``.
        num_classes: Classes; from the datamodule when ``None``.
        output_stride: DeepLabv3+ output stride, 8 (paper) or 16.
        freeze_backbone: Freeze the whole encoder, batch-norm statistics included (the authors' protocol).
        lr: SGD learning rate of the decoder and head.
        backbone_lr_factor: Encoder learning rate = ``lr x backbone_lr_factor`` (full fine-tuning only).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        poly_power: Exponent of the poly schedule (per step).
        min_lr: Learning rate reached at the last step.
        ignore_index: Mask value excluded from the loss and the metrics.
        mean: Per-band mean of the training data (raw digital numbers); from the datamodule when ``None``.
        std: Per-band standard deviation; from the datamodule when ``None``.
        class_names: Names of the classes; from the datamodule when ``None``.
        class_colours: RGB colour per class (class maps, legends); from the datamodule when ``None``.
        data_name: Name of the training dataset (``dubai``, ``potsdam``, ``folder`` ...); from the datamodule.
        data_root: Root folder of the training dataset (absolute); from the datamodule.
        data_root_as_given: The root as typed (perhaps relative to where fine-tuning ran), tried when
            ``data_root`` is gone (a project moved to another disk); from the datamodule.
        data_bands: Band choice of the training data; from the datamodule.
        data_palette: Palette file of a ``folder`` dataset; from the datamodule.
        data_label_fraction: Fraction of labelled training patches used; from the datamodule.
        data_seed: Seed of the label subset; from the datamodule.
        data_val_split: Split the best checkpoint was chosen on; from the datamodule.
        data_val_description: How that validation split was made (e.g. ``tile 2 (official val)``); from the
            datamodule.
        data_held_out_override: What held-out data ``--data.allow_held_out`` let the run touch (None:
            nothing); from the datamodule.
        data_dtype: Data type of the raw training pixels (``uint8``, ``uint16`` ...); from the datamodule.
        data_value_range: Per-band ``[1st, 99th]`` percentile of the raw training pixels; from the datamodule.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        backbone_weights: str | None = None,
        in_channels: int | None = None,
        num_classes: int | None = None,
        output_stride: int = 8,
        freeze_backbone: bool = False,
        lr: float = 0.01,
        backbone_lr_factor: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        poly_power: float = 0.9,
        min_lr: float = 1e-4,
        ignore_index: int = IGNORE_INDEX,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        class_names: list[str] | None = None,
        class_colours: list[list[int]] | None = None,
        data_name: str | None = None,
        data_root: str | None = None,
        data_root_as_given: str | None = None,
        data_bands: str | list[int] | None = None,
        data_palette: str | None = None,
        data_label_fraction: float | None = None,
        data_seed: int | None = None,
        data_val_split: str | None = None,
        data_val_description: str | None = None,
        data_held_out_override: str | None = None,
        data_dtype: str | None = None,
        data_value_range: list[list[float]] | None = None,
    ) -> None:
        super().__init__()
        if lr <= 0 or min_lr < 0 or min_lr > lr:
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={lr}, min_lr={min_lr}")
        if backbone_lr_factor < 0:
            raise ValueError(f"backbone_lr_factor must be >= 0, got {backbone_lr_factor}")
        self.save_hyperparameters()
        self.model: nn.Module | None = None
        self.val_confusion: MulticlassConfusionMatrix | None = None
        self._backbone_loaded = False
        #: Train in channels-last memory (set by ``--precision auto`` where it measured faster; machine-dependent,
        #: so not a hyper-parameter).
        self.channels_last = False
        if in_channels is not None and num_classes is not None:
            self._build()

    # ------------------------------------------------------------------ construction
    @property
    def hp(self) -> Any:
        """The hyper-parameters (attribute access, untyped: they mirror ``__init__``'s arguments)."""
        return self.hparams

    def _build(self) -> None:
        hp = self.hp
        self.model = build_deeplabv3plus(hp.arch, int(hp.in_channels), int(hp.num_classes), hp.output_stride)
        self.val_confusion = confusion_matrix_metric(int(hp.num_classes), hp.ignore_index)
        if hp.class_names is not None and len(hp.class_names) != hp.num_classes:
            raise ValueError(f"{len(hp.class_names)} class names for {hp.num_classes} classes")
        if hp.mean is not None and len(hp.mean) != hp.in_channels:
            raise ValueError(f"mean has {len(hp.mean)} values for {hp.in_channels} bands")
        self._apply_freeze()

    def _apply_freeze(self) -> None:
        if self.model is not None and self.hp.freeze_backbone:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            self.encoder.eval()

    @property
    def encoder(self) -> nn.Module:
        """The ResNet encoder of the DeepLabv3+ model."""
        if self.model is None:
            raise RuntimeError("the model is not built yet: in_channels/num_classes are unknown before setup()")
        return cast(nn.Module, self.model.encoder)

    def setup(self, stage: str) -> None:
        """Fill unknown sizes and statistics from the datamodule, build the model, load the backbone."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        for name, attr in _FROM_DATA.items():
            value = getattr(dm, attr, None) if dm is not None else None
            if value is None or (isinstance(value, list | tuple) and not value):
                continue  # unknown to the datamodule ([] before its setup)
            if name in ("in_channels", "num_classes") and not value:
                continue  # 0 before the datamodule's setup
            if name == "data_bands" and not isinstance(value, str | list | tuple):
                continue  # a datamodule of another kind may keep a band *count* there; it is not a band choice
            if isinstance(value, list | tuple):  # colours are nested tuples: plain lists for YAML/JSON
                value = [list(v) if isinstance(v, list | tuple) else v for v in value]
            elif not isinstance(value, str | int | float | bool):
                value = str(value)  # e.g. a Path root
            value = cast(Any, value)
            current = self.hp.get(name)
            if current is None:
                self.hparams[name] = value
            elif name in ("in_channels", "num_classes") and int(current) != int(value):
                raise ValueError(
                    f"model.{name}={current} but the data has {value}; remove model.{name} from the config "
                    "to take it from the data"
                )
        missing = [n for n in ("in_channels", "num_classes") if self.hp.get(n) is None]
        if missing:
            raise ValueError(f"{missing} unknown: set them on the model or use a datamodule that provides them")
        if self.model is None:
            self._build()
        if stage == "fit" and self.hp.backbone_weights and not self._backbone_loaded:
            load_encoder_weights(self.encoder, self.hp.backbone_weights, self.hp.arch, int(self.hp.in_channels))
            self._backbone_loaded = True
            self._apply_freeze()

    def train(self, mode: bool = True) -> SegmentationTask:
        """Switch modes, keeping a frozen encoder in eval mode (its batch-norm statistics stay fixed)."""
        super().train(mode)
        if mode and self.model is not None and self.hp.freeze_backbone:
            self.encoder.eval()
        return self

    def calibration_workload(self, data: Any) -> Workload:
        """One training step of a copy of this DeepLabv3+ on random crops of the run's batch and crop size.

        Args:
            data: The datamodule (``batch_size``, ``crop_size`` or ``patch_size``, bands, ``num_classes``).

        Returns:
            The :class:`falsecl.precision.Workload` that ``--precision auto`` times: images ``(B, C, h, w)``
            and masks ``(B, h, w)``, ``h`` rounded up to a multiple of 16.
        """
        hp = self.hp
        channels = int(hp.in_channels or data_in_channels(data))
        classes = int(hp.num_classes or getattr(data, "num_classes", 0) or 2)
        model = copy.deepcopy(self.model) if self.model is not None else None
        if model is None:
            model = build_deeplabv3plus(hp.arch, channels, classes, hp.output_stride)
        batch = int(getattr(data, "batch_size", 8))
        crop: Any = getattr(data, "crop_size", None) or getattr(data, "patch_size", 256)
        size = int(crop)
        size += (-size) % 16
        image = torch.randn(batch, channels, size, size)
        mask = torch.randint(0, classes, (batch, size, size))

        def step(module: nn.Module, x: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(module(x), y)

        return Workload(f"DeepLabv3+ {hp.arch} os{hp.output_stride}", model, (image, mask), step)

    # ------------------------------------------------------------------ forward / steps
    def on_fit_start(self) -> None:
        """Move the weights to channels-last memory when :attr:`channels_last` is set."""
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K, H, W)`` of a normalised batch ``(B, C, H, W)`` (padded to a multiple of 16)."""
        if self.model is None:
            raise RuntimeError("the model is not built yet: in_channels/num_classes are unknown before setup()")
        h, w = x.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        logits: Tensor = self.model(to_memory_format(x, self.channels_last) if self.channels_last else x)
        return logits[..., :h, :w]

    def _loss(self, logits: Tensor, mask: Tensor) -> Tensor:
        if not bool((mask != self.hp.ignore_index).any()):
            return logits.sum() * 0.0  # an all-unlabelled batch: zero loss instead of NaN
        return F.cross_entropy(logits, mask.long(), ignore_index=self.hp.ignore_index)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy on a normalised batch ``{"image": (B, C, H, W), "mask": (B, H, W)}``."""
        logits = self(batch["image"])
        loss = self._loss(logits, batch["mask"])
        self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate the validation confusion matrix."""
        logits = self(batch["image"])
        self.log("val/loss", self._loss(logits, batch["mask"]), batch_size=logits.shape[0], sync_dist=True)
        if self.val_confusion is not None:
            self.val_confusion.update(logits.argmax(dim=1), batch["mask"])

    def on_validation_epoch_end(self) -> None:
        """Log ``val/mIoU`` (macro over real classes), ``val/OA``, ``val/kappa`` and per-class IoU."""
        if self.val_confusion is None:
            return
        cm = self.val_confusion.compute()
        self.val_confusion.reset()
        names = self.hp.class_names or [f"class_{i}" for i in range(int(self.hp.num_classes))]
        m = metrics_from_confusion(cm, names)

        def finite(x: float) -> float:
            return x if math.isfinite(x) else 0.0

        self.log("val/mIoU", finite(m["mIoU"]), prog_bar=True)
        self.log("val/OA", finite(m["OA"]))
        self.log("val/kappa", finite(m["kappa"]))
        for name, values in m["per_class"].items():
            if math.isfinite(values["IoU"]):
                self.log(f"val/IoU/{name}", values["IoU"])

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        """SGD with a smaller encoder rate (or a frozen encoder) and a per-step poly schedule."""
        if self.model is None:
            raise RuntimeError("configure_optimizers() before setup(): the model is not built")
        hp = self.hp
        encoder_ids = {id(p) for p in self.encoder.parameters()}
        head = [p for p in self.model.parameters() if id(p) not in encoder_ids and p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": head, "lr": hp.lr}]
        if not hp.freeze_backbone and hp.backbone_lr_factor > 0:
            groups.append({"params": list(self.encoder.parameters()), "lr": hp.lr * hp.backbone_lr_factor})
        optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        total = int(self.trainer.max_steps) if self.trainer.max_steps and self.trainer.max_steps > 0 else 0
        if total <= 0:
            total = int(self.trainer.estimated_stepping_batches)
        min_ratio = hp.min_lr / hp.lr

        def schedule(step: int) -> float:
            return poly_factor(step, total, hp.poly_power, min_ratio)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
