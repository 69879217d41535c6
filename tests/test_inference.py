from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin
from torch import nn

from falsecl.inference import SlidingWindowPredictor, blend_weights
from falsecl.inference.raster import predict_raster

MEAN = [10.0, 20.0, 30.0]
STD = [2.0, 4.0, 5.0]


def identity_model(bands: int = 3) -> nn.Module:
    """1x1 conv whose logits are the normalised bands themselves: prediction is known exactly."""
    conv = nn.Conv2d(bands, bands, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(bands).view(bands, bands, 1, 1))
    return conv


def normalised(image: torch.Tensor) -> torch.Tensor:
    return (image - torch.tensor(MEAN).view(-1, 1, 1)) / torch.tensor(STD).view(-1, 1, 1)


@pytest.mark.parametrize("blend", ["gaussian", "mean"])
@pytest.mark.parametrize("tta", [False, True])
def test_identity_model_exact_on_non_divisible_image(blend: str, tta: bool) -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 37, 53) * 100
    pred = SlidingWindowPredictor(
        identity_model(), window=16, overlap=0.25, blend=blend, tta_flip=tta, batch_size=5, mean=MEAN, std=STD
    )
    out = pred.predict_tensor(image)
    assert out.shape == (3, 37, 53)
    torch.testing.assert_close(out, normalised(image), rtol=1e-5, atol=1e-5)
    probs = pred.predict_tensor(image, probabilities=True)
    torch.testing.assert_close(probs.sum(0), torch.ones(37, 53))


@pytest.mark.parametrize("blend", ["gaussian", "mean"])
def test_blending_weights_normalise(blend: str) -> None:
    # A model whose logits are constant per class: any correct blend (weights divided by their sum)
    # returns exactly that constant everywhere, including pixels covered by 1, 2 or 4 windows.
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.bias.copy_(torch.tensor([1.5, -2.0]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    out = SlidingWindowPredictor(Constant(), window=12, overlap=0.5, blend=blend).predict_tensor(torch.rand(3, 29, 31))
    torch.testing.assert_close(out[0], torch.full((29, 31), 1.5))
    torch.testing.assert_close(out[1], torch.full((29, 31), -2.0))


def test_blend_weight_shapes() -> None:
    g = blend_weights(16, 10, "gaussian")
    assert g.shape == (16, 10) and float(g.max()) == pytest.approx(1.0) and float(g.min()) > 0
    torch.testing.assert_close(g, g.flip(0))
    torch.testing.assert_close(g, g.flip(1))
    assert g[8, 5] > g[0, 0]
    assert torch.equal(blend_weights(4, 4, "mean"), torch.ones(4, 4))
    with pytest.raises(ValueError, match="blend"):
        blend_weights(4, 4, "median")  # type: ignore[arg-type]


def conv_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))


def test_equals_whole_image_inference_for_fully_convolutional_model() -> None:
    net = conv_net().eval()
    image = torch.rand(3, 40, 44)
    with torch.no_grad():
        whole = net(image[None])[0]
    # window larger than the image: one (padded) window, identical to whole-image inference
    single = SlidingWindowPredictor(net, window=64, pad_multiple=1).predict_tensor(image)
    torch.testing.assert_close(single, whole, rtol=1e-5, atol=1e-5)
    # overlapping windows: only the 2-pixel receptive-field margin at inner window borders differs,
    # and the Gaussian blend down-weights it
    tiled = SlidingWindowPredictor(net, window=16, overlap=0.5, blend="gaussian").predict_tensor(image)
    err = float((tiled - whole).abs().mean())
    assert err < 0.03 * float(whole.abs().mean())
    mean_blend = SlidingWindowPredictor(net, window=16, overlap=0.5, blend="mean").predict_tensor(image)
    assert err < 0.5 * float((mean_blend - whole).abs().mean())
    # windows at columns 0 and 4 (the last one flush with the border): pixels 2 px or more inside both
    # windows agree exactly; the mean blend of two exact values is exact
    flat = SlidingWindowPredictor(net, window=40, overlap=0.0, blend="mean", pad_multiple=1)
    out = flat.predict_tensor(image)
    torch.testing.assert_close(out[:, 2:-2, 6:38], whole[:, 2:-2, 6:38], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[:, 2:-2, 4], whole[:, 2:-2, 4], atol=1e-3)  # the inner border is visible


def test_batch_size_and_small_image() -> None:
    net = conv_net()
    image = torch.rand(3, 21, 35)
    a = SlidingWindowPredictor(net, window=8, overlap=0.25, batch_size=1).predict_tensor(image)
    b = SlidingWindowPredictor(net, window=8, overlap=0.25, batch_size=64).predict_tensor(image)
    torch.testing.assert_close(a, b)
    # image smaller than the window on one side: windows are clipped, padded to pad_multiple, cropped back
    small = SlidingWindowPredictor(net, window=32, overlap=0.25).predict_tensor(image)
    assert small.shape == (4, 21, 35)


def test_invalid_arguments() -> None:
    net = identity_model()
    with pytest.raises(ValueError, match="overlap"):
        SlidingWindowPredictor(net, overlap=1.0)
    with pytest.raises(ValueError, match="mean and std"):
        SlidingWindowPredictor(net, mean=MEAN)
    with pytest.raises(ValueError, match="bands"):
        SlidingWindowPredictor(net, mean=[0.0] * 4, std=[1.0] * 4)
    with pytest.raises(ValueError, match="band"):
        SlidingWindowPredictor(net).predict_tensor(torch.rand(4, 8, 8))


# ---------------------------------------------------------------------------- rasters
CRS_UTM = CRS.from_epsg(32640)
TRANSFORM = from_origin(300000.0, 2800000.0, 0.5, 0.5)


def write_geotiff(path: Path, bands: int = 3, height: int = 70, width: int = 90, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 60, size=(bands, height, width), dtype=np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=height,
        width=width,
        count=bands,
        dtype="uint8",
        crs=CRS_UTM,
        transform=TRANSFORM,
    ) as dst:
        dst.write(data)
    return data


def expected_classes(data: np.ndarray) -> np.ndarray:
    return normalised(torch.from_numpy(data).float()).argmax(0).numpy().astype(np.uint8)


def test_predict_raster_georeferenced_tiled_compressed(tmp_path: Path) -> None:
    src = tmp_path / "scene.tif"
    data = write_geotiff(src)
    pred = SlidingWindowPredictor(identity_model(), window=16, overlap=0.25, batch_size=4, mean=MEAN, std=STD)
    summary = predict_raster(
        pred,
        src,
        tmp_path / "classes.tif",
        probabilities_path=tmp_path / "probs.tif",
        preview_path=tmp_path / "preview.png",
        preview_max_size=32,
        progress=False,
    )
    with rasterio.open(tmp_path / "classes.tif") as out:
        assert out.crs == CRS_UTM
        assert out.transform == TRANSFORM
        assert (out.count, out.dtypes[0], out.height, out.width) == (1, "uint8", 70, 90)
        assert out.profile["tiled"] and out.block_shapes[0] == (256, 256)
        assert out.compression is not None and out.compression.value.lower() == "deflate"
        labels = out.read(1)
        assert out.colormap(1)[0][:3] == (60, 16, 152)
    np.testing.assert_array_equal(labels, expected_classes(data))
    assert summary["class_counts"] == np.bincount(labels.ravel(), minlength=3).tolist()
    with rasterio.open(tmp_path / "probs.tif") as prob:
        assert prob.count == 3 and prob.dtypes[0] == "uint8" and prob.crs == CRS_UTM
        assert prob.scales == (0.01,) * 3 and prob.nodata == 255  # percent
        probs = prob.read().astype(np.float32) * 0.01
    ref = normalised(torch.from_numpy(data).float()).softmax(0).numpy()
    np.testing.assert_allclose(probs, ref, atol=0.005 + 1e-6)
    preview = np.asarray(Image.open(tmp_path / "preview.png"))
    assert preview.ndim == 3 and preview.shape[1] > 2 * preview.shape[0]  # image | class map | legend
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "classes.qml",
        "classes.tif",
        "classes.tif.aux.xml",
        "preview.png",
        "probs.tif",
        "scene.tif",
    ]


def test_predict_png_without_georeference(tmp_path: Path) -> None:
    rgb = np.random.default_rng(3).integers(0, 60, size=(33, 41, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    pred = SlidingWindowPredictor(identity_model(), window=16, mean=MEAN, std=STD)
    predict_raster(pred, tmp_path / "photo.png", tmp_path / "out.tif", progress=False)
    with rasterio.open(tmp_path / "out.tif") as out:
        np.testing.assert_array_equal(out.read(1), expected_classes(rgb.transpose(2, 0, 1)))


def test_no_partial_file_on_error_and_existing_output_kept(tmp_path: Path) -> None:
    src = tmp_path / "scene.tif"
    write_geotiff(src)
    dst = tmp_path / "classes.tif"
    dst.write_bytes(b"previous result")

    class Exploding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = identity_model()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls > 3:
                raise RuntimeError("boom")
            return self.conv(x)

    pred = SlidingWindowPredictor(Exploding(), window=16, batch_size=2, num_classes=3, mean=MEAN, std=STD)
    with pytest.raises(RuntimeError, match="boom"):
        predict_raster(pred, src, dst, probabilities_path=tmp_path / "p.tif", overwrite=True, progress=False)
    assert dst.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "scene.tif"]


def test_refusals(tmp_path: Path) -> None:
    src = tmp_path / "scene4.tif"
    write_geotiff(src, bands=4, height=20, width=20)
    pred = SlidingWindowPredictor(identity_model(3), window=16, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="4 band.*trained on 3"):
        predict_raster(pred, src, tmp_path / "o.tif", progress=False)
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="not a raster"):
        predict_raster(pred, text, tmp_path / "o.tif", progress=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        predict_raster(pred, tmp_path / "missing.tif", tmp_path / "o.tif", progress=False)
    good = tmp_path / "scene3.tif"
    write_geotiff(good, height=20, width=20)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict_raster(pred, good, tmp_path / "no_dir" / "o.tif", progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict_raster(pred, good, text / "o.tif", progress=False)  # parent is a file
    with pytest.raises(FileExistsError, match="overwrite"):
        predict_raster(pred, good, text, progress=False)
    with pytest.raises(ValueError, match="is the input"):
        predict_raster(pred, good, good, overwrite=True, progress=False)
    assert not list(tmp_path.glob(".*partial"))
    assert not (tmp_path / "o.tif").exists()


def test_argmax_classes_matches_torch_with_ties() -> None:
    from falsecl.inference import argmax_classes

    scores = torch.randint(0, 3, (5, 13, 17)).float()  # many ties
    assert torch.equal(argmax_classes(scores), scores.argmax(0).to(torch.uint8))


@pytest.mark.parametrize("blend", ["gaussian", "mean"])
def test_separable_weight_sum_equals_accumulated_weights(blend: str) -> None:
    from falsecl.inference import blend_profile, window_coverage
    from falsecl.tiling import grid_windows

    height, width, window, stride = 45, 70, 16, 12
    weight = blend_weights(window, window, blend)
    brute = torch.zeros(height, width)
    for r, c, h, w in grid_windows(height, width, window, stride):
        brute[r : r + h, c : c + w] += weight
    rows = sorted({r for r, _, _, _ in grid_windows(height, width, window, stride)})
    cols = sorted({c for _, c, _, _ in grid_windows(height, width, window, stride)})
    p = blend_profile(window, blend)
    torch.testing.assert_close(torch.outer(window_coverage(height, rows, p), window_coverage(width, cols, p)), brute)
    assert float(brute.min()) > 0


def test_vertical_panels_give_the_whole_image_result(tmp_path: Path) -> None:
    # Panels narrower than the image (and not aligned with the windows) must not change any pixel.
    net = conv_net()
    image = torch.rand(3, 41, 75) * 60
    kwargs = {"window": 16, "overlap": 0.25, "mean": MEAN, "std": STD}
    whole = SlidingWindowPredictor(net, **kwargs).predict_tensor(image)
    for panel_width in (10, 23, 40):
        panelled = SlidingWindowPredictor(net, panel_width=panel_width, **kwargs)
        assert len(panelled._panels(75)) == -(-75 // panel_width)
        torch.testing.assert_close(panelled.predict_tensor(image), whole, rtol=1e-5, atol=1e-5)
    src = tmp_path / "scene.tif"
    write_geotiff(src, height=41, width=75)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    predict_raster(SlidingWindowPredictor(net, **kwargs), src, a, progress=False)
    panels = SlidingWindowPredictor(net, panel_width=23, **kwargs)
    predict_raster(panels, src, b, preview_path=tmp_path / "b.png", preview_max_size=30, progress=False)
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        np.testing.assert_array_equal(ra.read(1), rb.read(1))
        labels = ra.read(1)
    assert labels.max() < 4
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
