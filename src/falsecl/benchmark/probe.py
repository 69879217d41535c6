"""Frozen-encoder linear segmentation probe: a low-noise measure of what a pretrained backbone has learnt.

The backbone is frozen. Its stride-8 (``layer2``, average-pooled to stride 16) and stride-16 (``layer3``) feature
maps are concatenated, computed once per backbone for every training patch and cached on disk (the cache file is
named by a fingerprint of the backbone file's content, the dataset, root, split, patch size and stride, the band
indices, the content of the image and mask files, the target stride and offset and :data:`CACHE_VERSION`, so a new
backbone, another dataset or edited masks never reuse stale features). The features of every test window are cached
the same way (:class:`RecordingTrunk`, :class:`ReplayTrunk`), so once a backbone has been probed, a new cell costs
its head training and a replay of the test windows through the heads. A per-pixel linear classifier, BatchNorm
(with the labelled subset's feature statistics, frozen) followed by a 1x1 convolution, is trained on the cached
features of each label-fraction subset with a fixed schedule (no model selection, so no held-out data is looked
at), its logits upsampled bilinearly to the mask. Evaluation runs the frozen backbone and every fraction's head
together through the one sliding-window routine (:class:`falsecl.inference.SlidingWindowPredictor`) over the whole
test images and scores each head with :func:`falsecl.metrics.metrics_from_confusion`; blending is linear per
channel, so the joint pass gives exactly what one pass per head would.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from falsecl.benchmark.frozen import backbone_fingerprint, load_frozen_backbone
from falsecl.inference import SlidingWindowPredictor
from falsecl.metrics import IGNORE_INDEX, confusion_matrix_metric, metrics_from_confusion

#: Downsampling of the training targets (the loss is taken on logits upsampled to stride 8, for speed).
TARGET_STRIDE = 8
#: Bump when feature extraction or target sampling changes: every cached feature file is then recomputed.
CACHE_VERSION = 2


class FrozenTrunk(nn.Module):
    """ResNet trunk up to ``layer3``: ``(B, C, H, W)`` -> ``(B, C2 + C3, H/16, W/16)`` features, frozen."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenated stride-8 (pooled to stride 16) and stride-16 feature maps."""
        b: Any = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        s8 = b.layer2(b.layer1(x))
        s16 = b.layer3(s8)
        return torch.cat([F.avg_pool2d(s8, 2, ceil_mode=True)[..., : s16.shape[-2], : s16.shape[-1]], s16], dim=1)


class LinearProbe(nn.Module):
    """BatchNorm + 1x1 convolution per label fraction on frozen features, logits upsampled to the input size.

    Args:
        trunk: The frozen feature extractor.
        heads: One ``(norm, conv)`` pair per fraction; their logits are concatenated along channels.
    """

    def __init__(self, trunk: nn.Module, heads: Sequence[nn.Sequential]) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(heads)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, K x heads, H, W)`` logits."""
        feats = self.trunk(x).float()
        logits = torch.cat([head(feats) for head in self.heads], dim=1)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _autocast(device: torch.device) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cpu")


@torch.inference_mode()
def extract_features(
    trunk: nn.Module, dataset: Any, mean: Sequence[float], std: Sequence[float], batch_size: int = 16
) -> tuple[Tensor, Tensor]:
    """Features and stride-``TARGET_STRIDE`` targets of every patch of ``dataset``.

    Returns:
        ``(features, targets)``: ``(N, D, H/16, W/16)`` float16 and ``(N, H/s, W/s)`` uint8 with
        ``s = TARGET_STRIDE`` (the mask pixel at each s x s cell's centre, ``IGNORE_INDEX`` kept).
    """
    m = torch.tensor(list(mean)).view(1, -1, 1, 1)
    s = torch.tensor(list(std)).view(1, -1, 1, 1)
    feats, targets = [], []
    device = next(trunk.parameters()).device
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = (torch.stack([sm["image"].float() for sm in samples]) - m) / s
        with _autocast(device):
            feats.append(trunk(x.to(device)).to(torch.float16).cpu())
        off = TARGET_STRIDE // 2
        targets.append(torch.stack([sm["mask"][off::TARGET_STRIDE, off::TARGET_STRIDE] for sm in samples]))
    return torch.cat(feats), torch.cat(targets).to(torch.uint8)


class RecordingTrunk(nn.Module):
    """Runs ``trunk`` and keeps each output (and a checksum of its input) for :class:`ReplayTrunk`."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.outputs: list[Tensor] = []
        self.sums: list[float] = []

    def forward(self, x: Tensor) -> Tensor:
        """The trunk's features of ``x`` ``(B, C, H, W)``, recorded."""
        out: Tensor = self.trunk(x)
        self.outputs.append(out.detach().cpu())
        self.sums.append(float(x.double().sum()))
        return out


class ReplayTrunk(nn.Module):
    """Returns recorded trunk outputs in order; refuses an input other than the one recorded.

    The sliding-window routine visits the same windows in the same batches for the same images, window and
    overlap, so the replayed features are exactly those the trunk would compute.
    """

    def __init__(self, outputs: Sequence[Tensor], sums: Sequence[float]) -> None:
        super().__init__()
        self.outputs, self.sums, self.position = list(outputs), list(sums), 0

    def forward(self, x: Tensor) -> Tensor:
        """The recorded features of the next window batch ``(B, C, H, W)``."""
        if self.position >= len(self.outputs) or not math.isclose(
            float(x.double().sum()), self.sums[self.position], rel_tol=1e-9, abs_tol=1e-6
        ):
            raise RuntimeError("the cached test-window features do not match the windows being scored; delete "
                               "the benchmark's probe_cache folder and rerun")
        out = self.outputs[self.position]
        self.position += 1
        return out.to(x.device)


def files_fingerprint(dataset: Any) -> str:
    """SHA-256 (16 hex digits) of the image and mask files' content of a dataset (``dataset.files``)."""
    digest = hashlib.sha256()
    for files in getattr(dataset, "files", []):
        for path in (files.image, files.mask):
            if path is not None:
                digest.update(Path(path).name.encode())
                digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def feature_cache_key(backbone: str | None, arch: str, seed: int, data: Any, split: str,
                      window: int | None = None, overlap: float | None = None) -> dict[str, Any]:
    """Everything the cached features of ``split`` depend on (the training patches, or the test windows).

    Args:
        backbone: The backbone file (content-hashed) or ``None`` (random initialisation of ``seed``).
        arch: Backbone architecture.
        seed: Random initialisation seed.
        data: A set-up segmentation datamodule.
        split: ``data.train_split`` (patches) or the whole-image split scored (windows).
        window: Sliding-window side (whole images only).
        overlap: Sliding-window overlap (whole images only).
    """
    dataset = data.train_full if split == data.train_split and window is None else data.whole_image_dataset(split)
    return {
        "backbone": backbone_fingerprint(backbone, arch, seed),
        "dataset": data.dataset_name,
        "root": str(Path(data.root).resolve()),
        "split": split,
        "patch_size": data.patch_size,
        "stride": data.stride,
        "bands": list(getattr(dataset, "band_indices", None) or []) or None,
        "patches": len(dataset),
        "files": files_fingerprint(dataset),
        "mean": [round(v, 6) for v in data.mean],
        "std": [round(v, 6) for v in data.std],
        "features": "layer2-pool+layer3",
        "target_stride": TARGET_STRIDE,
        "target_offset": TARGET_STRIDE // 2,
        "window": window,
        "overlap": overlap,
        "version": CACHE_VERSION,
    }


def cached_features(
    cache_dir: str | Path, key: dict[str, Any], compute: Any
) -> tuple[Tensor, Tensor, bool]:
    """Load features cached under ``key``'s fingerprint, or compute and save them.

    Args:
        cache_dir: Folder of the cache files.
        key: What the features were drawn from (backbone fingerprint, dataset, root, split, patch size ...).
        compute: ``() -> (features, targets)``.

    Returns:
        ``(features, targets, hit)``.
    """
    text = json.dumps(key, sort_keys=True)
    path = Path(cache_dir) / f"features_{hashlib.sha256(text.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("key") == text:
            return payload["features"], payload["targets"], True
    feats, targets = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"key": text, "features": feats, "targets": targets}, tmp)
    tmp.replace(path)
    return feats, targets, False


@dataclass
class ProbeSchedule:
    """Fixed training schedule of the linear head (the same for every backbone and fraction)."""

    steps: int = 300
    batch_size: int = 16
    lr: float = 0.01
    weight_decay: float = 1e-4


def train_head(
    features: Tensor, targets: Tensor, num_classes: int, schedule: ProbeSchedule | None = None, seed: int = 0
) -> nn.Sequential:
    """Train BatchNorm + 1x1 conv on cached features with a fixed AdamW + cosine schedule.

    Args:
        features: ``(N, D, h, w)`` features of the labelled patches.
        targets: ``(N, h * 16 / s, w * 16 / s)`` class indices, ``s = TARGET_STRIDE``.
        num_classes: ``K``.
        schedule: Steps, batch size, learning rate, weight decay.
        seed: Seed of the minibatch draws and the head's initialisation.

    Returns:
        The head in eval mode (BatchNorm holds the subset's feature statistics).
    """
    sch = schedule or ProbeSchedule()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dim = features.shape[1]
    norm = nn.BatchNorm2d(dim)
    with torch.no_grad():  # frozen statistics of the labelled subset (a BN fitted once, in closed form)
        cast(Tensor, norm.running_mean).copy_(features.float().mean(dim=(0, 2, 3)))
        cast(Tensor, norm.running_var).copy_(features.float().var(dim=(0, 2, 3), unbiased=False))
    head = nn.Sequential(norm, nn.Conv2d(dim, num_classes, kernel_size=1)).eval()
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=sch.lr, weight_decay=sch.weight_decay)
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, sch.steps)
    size = targets.shape[-2:]
    feats, labels = features.float(), targets.long()
    for _ in range(sch.steps):
        idx = torch.randint(len(feats), (min(sch.batch_size, len(feats)),), generator=gen)
        logits = F.interpolate(head(feats[idx]), size=size, mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, labels[idx], ignore_index=IGNORE_INDEX)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        lr_sched.step()
    return head.requires_grad_(False)


def evaluate_heads(
    trunk: nn.Module,
    heads: Sequence[nn.Sequential],
    images: Any,
    num_classes: int,
    class_names: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    window: int = 256,
    overlap: float = 0.25,
) -> list[dict[str, Any]]:
    """Score every head on whole images with the sliding-window routine; one metrics dict per head."""
    model = LinearProbe(trunk, heads)
    predictor = SlidingWindowPredictor(model, window=window, overlap=overlap, mean=mean, std=std, batch_size=8,
                                       in_channels=len(mean))
    confusions = [confusion_matrix_metric(num_classes) for _ in heads]
    device = predictor.device
    for i in range(len(images)):
        sample = images[i]
        with _autocast(device):
            logits = predictor.predict_tensor(sample["image"])
        for k, cm in enumerate(confusions):
            labels = logits[k * num_classes : (k + 1) * num_classes].argmax(dim=0)
            cm.update(labels, sample["mask"].long())
    return [metrics_from_confusion(cm.compute(), class_names) for cm in confusions]


def probe_backbone(
    backbone: str | None,
    cells: Sequence[tuple[float, int]],
    subsets: dict[tuple[float, int], list[int]],
    data: Any,
    cache_dir: str | Path,
    backbone_seed: int = 0,
    arch: str = "resnet18",
    split: str = "test",
    schedule: ProbeSchedule | None = None,
    window: int = 256,
    overlap: float = 0.25,
) -> tuple[list[dict[str, Any]], list[nn.Sequential]]:
    """Linear-probe one backbone at every (label fraction, seed) cell.

    Args:
        backbone: ``backbone.pt`` of a pretraining, or ``None`` for a random initialisation seeded by
            ``backbone_seed``.
        cells: ``(label_fraction, seed)`` pairs; the seed draws the head's initialisation and minibatches.
        subsets: Training patch indices of each cell (the same files fine-tuning uses).
        data: A set-up :class:`falsecl.datamodules.SegmentationDataModule` (training patches, statistics).
        cache_dir: Feature cache folder.
        backbone_seed: Seed of the random initialisation (ignored with a file).
        arch: Backbone architecture.
        split: Whole-image split scored.
        schedule: Head training schedule.
        window: Sliding-window side.
        overlap: Sliding-window overlap.

    Returns:
        One :func:`falsecl.metrics.metrics_from_confusion` dict per cell, in order, and the trained heads.
    """
    trunk = FrozenTrunk(load_frozen_backbone(backbone, arch, data.in_channels, backbone_seed))
    train = data.train_full
    key = feature_cache_key(backbone, arch, backbone_seed, data, data.train_split)
    feats, targets, _ = cached_features(cache_dir, key, lambda: extract_features(trunk, train, data.mean, data.std))
    heads = []
    for fraction, seed in cells:
        idx = torch.tensor(subsets[(fraction, seed)])
        heads.append(train_head(feats[idx], targets[idx], data.num_classes, schedule, seed))
    images = data.whole_image_dataset(split)
    test_key = feature_cache_key(backbone, arch, backbone_seed, data, split, window, overlap)
    text = json.dumps(test_key, sort_keys=True)
    path = Path(cache_dir) / f"windows_{hashlib.sha256(text.encode()).hexdigest()[:16]}.pt"
    replay: ReplayTrunk | None = None
    if path.is_file():
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("key") == text:
            replay = ReplayTrunk(payload["outputs"], payload["sums"])
    results: list[dict[str, Any]] = []
    for start in range(0, max(len(heads), 1), 4):  # at most 4 heads a pass bounds the whole-image logits
        if replay is None:  # the first pass runs the trunk and records every window's features
            recorder = RecordingTrunk(trunk)
            results += evaluate_heads(recorder, heads[start : start + 4], images, data.num_classes,
                                      data.class_names, data.mean, data.std, window, overlap)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            torch.save({"key": text, "outputs": recorder.outputs, "sums": recorder.sums}, tmp)
            tmp.replace(path)
            replay = ReplayTrunk(recorder.outputs, recorder.sums)
        else:
            replay.position = 0
            results += evaluate_heads(replay, heads[start : start + 4], images, data.num_classes,
                                      data.class_names, data.mean, data.std, window, overlap)
    return results, heads


def probe_predictions(
    backbone: str | None, head_path: str | Path, data: Any, indices: Sequence[int], backbone_seed: int = 0,
    arch: str = "resnet18", split: str = "test", window: int = 256,
) -> list[Tensor]:
    """Class maps ``(H, W)`` of a saved probe head on whole images ``indices`` of ``split`` (report panels)."""
    trunk = FrozenTrunk(load_frozen_backbone(backbone, arch, data.in_channels, backbone_seed))
    state = torch.load(head_path, map_location="cpu", weights_only=True)
    dim = int(state["0.running_mean"].shape[0])
    head = nn.Sequential(nn.BatchNorm2d(dim), nn.Conv2d(dim, data.num_classes, kernel_size=1))
    head.load_state_dict(state)
    predictor = SlidingWindowPredictor(LinearProbe(trunk, [head.eval()]), window=window, mean=data.mean,
                                       std=data.std)
    images = data.whole_image_dataset(split)
    with _autocast(predictor.device):
        return [predictor.predict_tensor(images[i]["image"]).argmax(dim=0) for i in indices]
