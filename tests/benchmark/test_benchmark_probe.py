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


def test_probe_loads_the_file_weights_exactly_and_refuses_another_architecture(tmp_path):
    import pytest

    from falsecl.benchmark.frozen import load_frozen_backbone

    torch.manual_seed(7)
    trained = build_backbone("resnet18")
    with torch.no_grad():
        trained.bn1.running_mean.fill_(0.25)  # statistics are loaded too, not only weights
    path = save_backbone_file(tmp_path / "r18.pt", trained, "resnet18", 3)
    loaded = load_frozen_backbone(str(path), "resnet18", 3, seed=0)
    for k, v in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    r34 = save_backbone_file(tmp_path / "r34.pt", build_backbone("resnet34"), "resnet34", 3)
    with pytest.raises(ValueError, match="resnet34"):
        load_frozen_backbone(str(r34), "resnet18", 3, seed=0)
    bands4 = save_backbone_file(tmp_path / "b4.pt", build_backbone("resnet18", 4), "resnet18", 4)
    with pytest.raises(ValueError, match="4-band"):
        load_frozen_backbone(str(bands4), "resnet18", 3, seed=0)


def _dubai_dm(tmp_path, **kwargs):
    from falsecl.datamodules import SegmentationDataModule
    from tests.data.fake_layouts import make_dubai

    root = make_dubai(tmp_path / "dubai", size=(64, 64))
    dm = SegmentationDataModule("dubai", str(root), patch_size=32, stats_patches=8,
                                stats_path=str(tmp_path / "stats.json"), **kwargs)
    dm.setup()
    return root, dm


def test_real_cache_key_follows_masks_bands_target_sampling_and_version(tmp_path, monkeypatch):
    import falsecl.benchmark.probe as probe
    from falsecl.datamodules import SegmentationDataModule

    root, dm = _dubai_dm(tmp_path)
    key = probe.feature_cache_key(None, "resnet18", 0, dm, dm.train_split)
    assert key == probe.feature_cache_key(None, "resnet18", 0, dm, dm.train_split)
    assert key != probe.feature_cache_key(None, "resnet18", 1, dm, dm.train_split)
    monkeypatch.setattr(probe, "TARGET_STRIDE", 4)
    assert probe.feature_cache_key(None, "resnet18", 0, dm, dm.train_split) != key
    monkeypatch.setattr(probe, "TARGET_STRIDE", 8)
    monkeypatch.setattr(probe, "CACHE_VERSION", probe.CACHE_VERSION + 1)
    assert probe.feature_cache_key(None, "resnet18", 0, dm, dm.train_split) != key
    monkeypatch.undo()
    two = SegmentationDataModule("dubai", str(root), patch_size=32, stats_patches=8, bands=[0, 1, 2],
                                 stats_path=str(tmp_path / "stats2.json"))
    two.setup()
    keyb = probe.feature_cache_key(None, "resnet18", 0, two, two.train_split)
    assert keyb["bands"] == [0, 1, 2] and key["bands"] != keyb["bands"]
    # Edit one training mask: same file names and sizes, another key.
    mask = sorted(root.glob("Tile 1/masks/*.png"))[0]
    import numpy as np
    from PIL import Image

    arr = np.array(Image.open(mask))
    arr[0, 0] = 255 - arr[0, 0]
    Image.fromarray(arr).save(mask)
    assert probe.feature_cache_key(None, "resnet18", 0, dm, dm.train_split)["files"] != key["files"]


def test_test_window_features_are_cached_and_replayed_exactly(tmp_path, monkeypatch):
    import falsecl.benchmark.probe as probe
    from falsecl.datasets.subsets import label_fraction_subset

    _, dm = _dubai_dm(tmp_path)
    patches = dm.train_full.patches
    subsets = {(1.0, s): label_fraction_subset(patches, 1.0, s) for s in (0, 1)}
    calls = []
    forward = probe.FrozenTrunk.forward

    def counting(self, x):
        calls.append(x.shape[0])
        return forward(self, x)

    monkeypatch.setattr(probe.FrozenTrunk, "forward", counting)
    kwargs = {"schedule": probe.ProbeSchedule(steps=3), "window": 32, "overlap": 0.25}
    first, _ = probe.probe_backbone(None, [(1.0, 0)], subsets, dm, tmp_path / "cache", **kwargs)
    n_first = len(calls)
    assert n_first > 0
    again, _ = probe.probe_backbone(None, [(1.0, 0), (1.0, 1)], subsets, dm, tmp_path / "cache", **kwargs)
    assert len(calls) == n_first  # neither training nor test features were recomputed
    assert again[0]["confusion_matrix"] == first[0]["confusion_matrix"]
    assert len(list((tmp_path / "cache").glob("windows_*.pt"))) == 1
    # The replay equals a fresh pass of the real trunk through the same heads.
    _, heads = probe.probe_backbone(None, [(1.0, 1)], subsets, dm, tmp_path / "cache", **kwargs)
    trunk = probe.FrozenTrunk(probe.load_frozen_backbone(None, "resnet18", dm.in_channels, 0))
    images = dm.whole_image_dataset("test")
    with probe._autocast(torch.device("cpu")):
        fresh = probe.evaluate_heads(trunk, heads, images, dm.num_classes, dm.class_names, dm.mean, dm.std, 32,
                                     0.25)
    assert fresh[0]["confusion_matrix"] == again[1]["confusion_matrix"]


def test_batchnorm_recalibration_fits_the_training_images_and_keeps_the_weights(tmp_path):
    from falsecl.benchmark.frozen import load_frozen_backbone, recalibrate_batchnorm, recalibrated_random_backbone

    _, dm = _dubai_dm(tmp_path)
    model = load_frozen_backbone(None, "resnet18", 3, seed=0)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    recalibrate_batchnorm(model, dm.train_full, dm.mean, dm.std, batch_size=3)
    assert not model.training and model.bn1.momentum == 0.1
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k
    # bn1's running mean is the cumulative average of the batch means of conv1's output (momentum=None).
    x = torch.stack([dm.train_full[i]["image"].float() for i in range(len(dm.train_full))])
    x = (x - torch.tensor(dm.mean).view(1, -1, 1, 1)) / torch.tensor(dm.std).view(1, -1, 1, 1)
    with torch.no_grad():
        act = model.conv1(x)
    ref = torch.stack([act[i : i + 3].mean(dim=(0, 2, 3)) for i in range(0, len(act), 3)]).mean(0)
    torch.testing.assert_close(model.bn1.running_mean, ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(model.bn1.running_mean, torch.zeros(64))
    path = recalibrated_random_backbone(tmp_path / "bn" / "backbone.pt", dm, seed=0)
    saved = load_frozen_backbone(str(path), "resnet18", 3, seed=99)
    assert len(act) <= 64  # one batch of the default size: the running mean is the mean over every patch
    torch.testing.assert_close(saved.bn1.running_mean, act.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert torch.equal(saved.conv1.weight, weights["conv1.weight"])  # the seed-0 random weights
