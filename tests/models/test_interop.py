"""backbone.pt loads into torchvision, timm and segmentation-models-pytorch with equal activations."""

from __future__ import annotations

from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torchvision
from torch import Tensor, nn

from falsecl.models import build_backbone, load_backbone_file, load_into, save_backbone_file

FC = ["fc.weight", "fc.bias"]


def _trained_like(arch: str, bands: int) -> nn.Module:
    """A backbone with random weights *and* random batch-norm statistics, so every buffer must travel."""
    torch.manual_seed(0)
    model = build_backbone(arch, bands)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def _stages(model: nn.Module, x: Tensor, names: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")) -> list:
    """Outputs of the named sub-modules during one forward pass, with the pass's own output last."""
    outputs: list[Tensor] = []
    hooks = [getattr(model, n).register_forward_hook(lambda _m, _i, o: outputs.append(o)) for n in names]
    with torch.no_grad():
        out = model(x)
    for hook in hooks:
        hook.remove()
    return [*outputs, out]


@pytest.fixture(params=[("resnet18", 3), ("resnet18", 4)], ids=lambda p: f"{p[0]}-{p[1]}band")
def saved(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[nn.Module, Path, int]:
    arch, bands = request.param
    model = _trained_like(arch, bands)
    return model, save_backbone_file(tmp_path / "backbone.pt", model, arch, bands), bands


def _assert_same(ours: list[Tensor], theirs: list[Tensor]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_file_is_a_bare_state_dict_without_classifier(saved: tuple[nn.Module, Path, int]) -> None:
    _, path, bands = saved
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, Tensor) for v in state.values())
    assert state["conv1.weight"].shape[1] == bands and not any(k.startswith("fc.") for k in state)


def test_torchvision_one_liner(saved: tuple[nn.Module, Path, int]) -> None:
    ours, path, bands = saved
    tv = torchvision.models.resnet18(weights=None)
    if bands != 3:
        tv.conv1 = nn.Conv2d(bands, 64, kernel_size=7, stride=2, padding=3, bias=False)
    result = tv.load_state_dict(torch.load(path), strict=False)
    assert sorted(result.missing_keys) == sorted(FC) and not result.unexpected_keys
    tv.fc = nn.Identity()  # pooled features, as falsecl's backbone returns
    x = torch.randn(2, bands, 64, 64)
    _assert_same(_stages(ours, x), _stages(tv.eval(), x))


def test_torchvision_and_timm_resnet50(tmp_path: Path) -> None:
    ours = _trained_like("resnet50", 3)
    path = save_backbone_file(tmp_path / "backbone.pt", ours, "resnet50", 3)
    tv = torchvision.models.resnet50(weights=None)
    result = tv.load_state_dict(torch.load(path), strict=False)
    assert sorted(result.missing_keys) == sorted(FC) and not result.unexpected_keys
    tv.fc = nn.Identity()
    x = torch.randn(1, 3, 64, 64)
    _assert_same(_stages(ours, x), _stages(tv.eval(), x))
    tm = timm.create_model("resnet50", pretrained=False)
    result = tm.load_state_dict(torch.load(path), strict=False)
    assert sorted(result.missing_keys) == sorted(FC) and not result.unexpected_keys
    tm.reset_classifier(0)
    _assert_same(_stages(ours, x), _stages(tm.eval(), x))


def test_timm_one_liner(saved: tuple[nn.Module, Path, int]) -> None:
    ours, path, bands = saved
    model = timm.create_model("resnet18", pretrained=False, in_chans=bands)
    result = model.load_state_dict(torch.load(path), strict=False)
    assert sorted(result.missing_keys) == sorted(FC) and not result.unexpected_keys
    model.reset_classifier(0)  # timm's way to return the pooled features
    x = torch.randn(2, bands, 64, 64)
    _assert_same(_stages(ours, x), _stages(model.eval(), x))


def test_smp_encoder_one_liner(saved: tuple[nn.Module, Path, int]) -> None:
    ours, path, bands = saved
    # a plain (undilated) smp ResNet encoder: every stage equals falsecl's
    encoder = smp.encoders.get_encoder("resnet18", in_channels=bands, depth=5, weights=None)
    encoder.load_state_dict(torch.load(path))  # strict: smp encoders have no classifier
    x = torch.randn(2, bands, 64, 64)
    with torch.no_grad():
        feats = encoder.eval()(x)
    _assert_same(_stages(ours, x)[:4], feats[2:6])


def test_smp_deeplabv3plus_encoder(saved: tuple[nn.Module, Path, int]) -> None:
    ours, path, bands = saved
    model = smp.DeepLabV3Plus(encoder_name="resnet18", encoder_weights=None, in_channels=bands, classes=2)
    model.encoder.load_state_dict(torch.load(path))
    x = torch.randn(2, bands, 64, 64)
    with torch.no_grad():
        feats = model.eval().encoder(x)
    # DeepLabv3+ dilates layer4 (output stride 16), so its activations differ by design; layers 1-3 are equal
    _assert_same(_stages(ours, x)[:3], feats[2:5])
    for key, value in load_backbone_file(path)["state_dict"].items():
        assert torch.equal(model.encoder.state_dict()[key], value), key


def test_load_into_every_route_and_the_old_wrapped_format(saved: tuple[nn.Module, Path, int], tmp_path: Path) -> None:
    ours, path, bands = saved
    wrapped = tmp_path / "old.pt"
    state = torch.load(path)
    torch.save({"format": "falsecl-backbone", "version": 1, "arch": "resnet18", "in_channels": bands,
                "state_dict": state}, wrapped)  # fmt: skip
    tv = torchvision.models.resnet18(weights=None)
    tv.conv1 = nn.Conv2d(bands, 64, kernel_size=7, stride=2, padding=3, bias=False)
    models = [
        tv,
        timm.create_model("resnet18", pretrained=False, in_chans=bands),
        smp.DeepLabV3Plus(encoder_name="resnet18", encoder_weights=None, in_channels=bands),
    ]
    for model in models:
        missing = load_into(model, wrapped)
        assert sorted(missing) == (sorted(FC) if hasattr(model, "fc") else [])
    x = torch.randn(1, bands, 64, 64)
    _assert_same(_stages(ours, x)[3:4], _stages(models[1].eval(), x)[3:4])


def test_load_into_refuses_mismatches(tmp_path: Path) -> None:
    path = save_backbone_file(tmp_path / "b.pt", build_backbone("resnet18", 4), "resnet18", 4)
    with pytest.raises(ValueError, match="in_chans=4"):
        load_into(timm.create_model("resnet18", pretrained=False), path)
    r50 = timm.create_model("resnet50", pretrained=False, in_chans=4)
    before = r50.conv1.weight.clone()
    with pytest.raises(ValueError, match="build the model as resnet18"):
        load_into(r50, path)
    assert torch.equal(r50.conv1.weight, before)  # left untouched
    with pytest.raises(ValueError, match="not a ResNet"):
        load_into(nn.Linear(2, 2), path)


def test_save_refuses_a_wrong_description(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="4-band"):
        save_backbone_file(tmp_path / "b.pt", build_backbone("resnet18", 3), "resnet18", 4)
    with pytest.raises(ValueError, match="resnet50"):
        save_backbone_file(tmp_path / "b.pt", build_backbone("resnet18", 3), "resnet50", 3)
