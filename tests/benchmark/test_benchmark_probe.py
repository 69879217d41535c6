"""The linear probe: learns a linearly separable task, scores it through the sliding window, caches features."""

from __future__ import annotations

import torch
from torch import nn

from falsecl.benchmark.probe import (
    backbone_fingerprint,
    cached_features,
    evaluate_heads,
    train_head,
)
from falsecl.models.backbones import build_backbone, save_backbone_file


class BlockTrunk(nn.Module):
    """Stride-16 'features': the mean of each 16 x 16 block of the image (a frozen, linear feature map)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, 16)


def _separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """128 px images of 64 px regions; class c in 0..2 has colour one-hot(c) plus noise (linearly separable).

    Regions span several stride-16 cells, as land-cover parcels do: only the few pixels next to a region border,
    where the upsampled logits blend two cells, can be wrong.
    """
    g = torch.Generator().manual_seed(seed)
    regions = torch.randint(0, 3, (n, 2, 2), generator=g)
    blocks = regions.repeat_interleave(4, -1).repeat_interleave(4, -2)
    colour = nn.functional.one_hot(blocks, 3).permute(0, 3, 1, 2).float() + 0.1 * torch.randn(n, 3, 8, 8,
                                                                                            generator=g)
    images = colour.repeat_interleave(16, -1).repeat_interleave(16, -2)
    masks = blocks.repeat_interleave(16, -1).repeat_interleave(16, -2)
    return images, masks


def test_probe_learns_a_linearly_separable_task_to_about_100_percent():
    images, masks = _separable(16, 0)
    trunk = BlockTrunk()
    feats = trunk(images)
    targets = masks[:, 4::8, 4::8].to(torch.uint8)  # stride-8 targets, as extract_features stores them
    head = train_head(feats, targets, num_classes=3, seed=0)
    test_images, test_masks = _separable(2, 1)
    samples = [{"image": test_images[i], "mask": test_masks[i]} for i in range(2)]
    (metrics,) = evaluate_heads(trunk, [head], samples, 3, ["a", "b", "c"], mean=[0, 0, 0], std=[1, 1, 1],
                                window=64, overlap=0.5)
    assert metrics["OA"] > 0.97 and metrics["mIoU"] > 0.95


def test_joint_evaluation_equals_one_pass_per_head():
    images, masks = _separable(8, 2)
    trunk = BlockTrunk()
    feats, targets = trunk(images), masks[:, 4::8, 4::8].to(torch.uint8)
    heads = [train_head(feats, targets, 3, seed=s) for s in (0, 1)]
    samples = [{"image": images[i], "mask": masks[i]} for i in range(2)]
    kwargs = {"mean": [0, 0, 0], "std": [1, 1, 1], "window": 64, "overlap": 0.5}
    joint = evaluate_heads(trunk, heads, samples, 3, ["a", "b", "c"], **kwargs)
    alone = [evaluate_heads(trunk, [h], samples, 3, ["a", "b", "c"], **kwargs)[0] for h in heads]
    assert [m["confusion_matrix"] for m in joint] == [m["confusion_matrix"] for m in alone]


def test_feature_cache_is_reused_and_invalidated_when_the_backbone_changes(tmp_path):
    path = save_backbone_file(tmp_path / "backbone.pt", build_backbone("resnet18"), "resnet18", 3)
    calls = []

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        return torch.randn(2, 4, 1, 1), torch.zeros(2, 2, 2, dtype=torch.uint8)

    key = {"backbone": backbone_fingerprint(str(path), "resnet18", 0), "dataset": "dubai", "patch_size": 32}
    first = cached_features(tmp_path / "cache", key, compute)
    second = cached_features(tmp_path / "cache", key, compute)
    assert len(calls) == 1 and not first[2] and second[2] and torch.equal(first[0], second[0])
    torch.manual_seed(1)
    save_backbone_file(path, build_backbone("resnet18"), "resnet18", 3)  # new weights, same file name
    key2 = {**key, "backbone": backbone_fingerprint(str(path), "resnet18", 0)}
    assert key2 != key
    third = cached_features(tmp_path / "cache", key2, compute)
    assert len(calls) == 2 and not third[2]
    assert backbone_fingerprint(None, "resnet18", 0) != backbone_fingerprint(None, "resnet18", 1)
    # Another split or patch size is another key too.
    cached_features(tmp_path / "cache", {**key, "patch_size": 64}, compute)
    assert len(calls) == 3
