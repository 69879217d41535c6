"""Backbones for any band count and the backbone weight file."""

from __future__ import annotations

import pytest
import torch

from falsecl.models import BACKBONE_DIMS, build_backbone, load_backbone_file, save_backbone_file


@pytest.mark.parametrize("arch,bands", [("resnet18", 3), ("resnet18", 4), ("resnet18", 1), ("resnet50", 4)])
def test_feature_shape_for_any_band_count(arch, bands):
    model = build_backbone(arch, bands).eval()
    with torch.no_grad():
        out = model(torch.randn(2, bands, 64, 64))
    assert out.shape == (2, BACKBONE_DIMS[arch])
    assert model.conv1.weight.shape[1] == bands


def test_illegal_arguments():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="in_channels"):
        build_backbone("resnet18", 0)


def test_roundtrip_is_exact_and_atomic(tmp_path):
    model = build_backbone("resnet18", 4)
    path = save_backbone_file(tmp_path / "run" / "backbone.pt", model, "resnet18", 4)
    assert not list(tmp_path.rglob("*.tmp"))
    loaded = load_backbone_file(path)
    assert loaded["arch"] == "resnet18" and loaded["in_channels"] == 4
    assert not any(k.startswith("fc.") for k in loaded["state_dict"])
    fresh = build_backbone("resnet18", 4)
    fresh.load_state_dict(loaded["state_dict"], strict=False)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_lightning_checkpoint_takes_the_backbone_not_the_momentum_copy(tmp_path):
    online, momentum = build_backbone("resnet18", 3), build_backbone("resnet18", 3)
    state = {f"backbone.{k}": v for k, v in online.state_dict().items()}
    state.update({f"backbone_momentum.{k}": v for k, v in momentum.state_dict().items()})
    state["projection_head.layers.0.weight"] = torch.zeros(2, 2)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "last.ckpt")
    loaded = load_backbone_file(tmp_path / "last.ckpt")
    assert set(loaded["state_dict"]) == {k for k in online.state_dict() if not k.startswith("fc.")}
    assert torch.equal(loaded["state_dict"]["conv1.weight"], online.conv1.weight)


def test_bare_state_dict_infers_arch_and_bands(tmp_path):
    model = build_backbone("resnet50", 5)
    torch.save(model.state_dict(), tmp_path / "r50.pt")
    loaded = load_backbone_file(tmp_path / "r50.pt")
    assert loaded["arch"] == "resnet50" and loaded["in_channels"] == 5


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="backbone.pt"):
        load_backbone_file(tmp_path / "missing.pt")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a ResNet"):
        load_backbone_file(tmp_path / "other.pt")
