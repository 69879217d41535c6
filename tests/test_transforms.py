import math

import pytest
import torch

from falsecl.transforms import (
    SegmentationAugmentation,
    SSLAugmentation,
    band_brightness_contrast,
    band_grayscale,
    denormalize,
    dtype_ceiling,
    normalize,
    random_flip_rot90,
)


def test_normalize_matches_naive_and_inverts():
    x = torch.rand(2, 4, 5, 6) * 1000
    mean, std = [1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0]
    ref = torch.stack([torch.stack([(x[b, c] - mean[c]) / std[c] for c in range(4)]) for b in range(2)])
    torch.testing.assert_close(normalize(x, mean, std), ref)
    torch.testing.assert_close(normalize(x[0], mean, std), ref[0])
    torch.testing.assert_close(denormalize(normalize(x, mean, std), mean, std), x, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="4 bands but mean/std have 3"):
        normalize(x, mean[:3], std[:3])
    with pytest.raises(ValueError, match="shape"):
        normalize(x[0, 0], mean, std)


def test_flip_rot90_same_geometry_on_image_and_mask():
    mask = torch.randint(0, 6, (8, 16, 16))
    image = torch.stack([mask.float(), -mask.float()], 1)
    img, msk = random_flip_rot90(image, mask)
    assert torch.equal(img[:, 0].long(), msk) and torch.equal(img[:, 1].long(), -msk)
    for i in range(8):  # each output is one of the 8 dihedral transforms of its input
        variants = [torch.rot90(m, k, (0, 1)) for m in (mask[i], mask[i].flip(1)) for k in range(4)]
        assert any(torch.equal(msk[i], v) for v in variants)
    assert not torch.equal(msk, mask)


def test_ssl_views_shapes_3_and_4_bands():
    for c in (3, 4, 6):
        x = torch.rand(4, c, 64, 64) * 255
        v = SSLAugmentation(32)(x)
        assert v.shape == (4, c, 32, 32) and torch.isfinite(v).all()
    with pytest.raises(ValueError, match="rgb_bands"):
        SSLAugmentation(32, rgb_bands=(0, 1, 5))(torch.rand(2, 4, 40, 40))


def test_colour_jitter_touches_rgb_only():
    x = torch.rand(4, 4, 32, 32) * 255
    aug = SSLAugmentation(
        32,
        scale=(1.0, 1.0),
        color_strength=1.0,
        color_p=1.0,
        band_p=0.0,
        grayscale_p=0.0,
        blur_p=0.0,
        flips=False,
        rot90=False,
    )
    v = aug(x)
    torch.testing.assert_close(v[:, 3], x[:, 3], atol=1e-3, rtol=1e-4)  # IR untouched
    assert (v[:, :3] - x[:, :3]).abs().mean() > 1.0


def test_band_ops_reference():
    x = torch.rand(3, 2, 8, 8) * 100
    same = band_brightness_contrast(x, 0.0, 0.0, 255.0, p=1.0)
    torch.testing.assert_close(same, x)
    y = band_brightness_contrast(x, 0.5, 0.5, [255.0, 100.0], p=1.0)
    assert y.min() >= 0 and y.max() <= 255  # clamped to the 8-bit range, not to the sampled 100
    g = band_grayscale(x, [1.0, 3.0], p=1.0)
    torch.testing.assert_close(g[:, 0], 0.25 * x[:, 0] + 0.75 * x[:, 1])
    torch.testing.assert_close(g[:, 1], g[:, 0])
    torch.testing.assert_close(band_grayscale(x, [1.0, 1.0], p=0.0), x)


def test_segmentation_augmentation_aligned_and_padded():
    mask = torch.randint(0, 5, (4, 32, 32))
    image = mask[:, None].float().repeat(1, 3, 1, 1)
    aug = SegmentationAugmentation(16, scale=(1.0, 1.0), photometric_p=0.0)
    img, msk = aug(image, mask)
    assert img.shape == (4, 3, 16, 16) and msk.shape == (4, 16, 16) and msk.dtype == torch.int64
    assert torch.equal(img[:, 0].long(), msk)
    small = SegmentationAugmentation(32, scale=(0.5, 0.5), photometric_p=0.0, flips=False, rot90=False)
    img, msk = small(image, mask)
    assert (msk[:, 16:, :] == 255).all() and (msk[:, :, 16:] == 255).all() and (img[:, :, 16:, :] == 0).all()
    assert set(msk[:, :16, :16].unique().tolist()) <= set(range(5))  # nearest-neighbour: no blended labels
    big = SegmentationAugmentation(None, scale=(1.7, 1.7))
    assert big(image, mask)[0].shape == (4, 3, 32, 32)


def test_brightness_contrast_leaves_unchanged_samples_bit_identical_16bit():
    torch.manual_seed(3)
    # 16-bit data whose sampled maximum (4000) is below values met later (up to 9000), and one 8-bit batch
    x = torch.rand(16, 2, 8, 8) * 9000
    y = band_brightness_contrast(x, 0.1, 0.2, [4000.0, 4000.0], p=0.5)
    changed = (y != x).flatten(1).any(1)
    assert 0 < changed.sum() < 16  # both kinds of sample present
    assert torch.equal(y[~changed], x[~changed])  # bit-identical, values above 4000 kept
    assert y[changed].max() > 4000 and y.max() <= 65535 and y.min() >= 0  # clamped to the 16-bit range only
    assert torch.equal(band_brightness_contrast(x, 0.5, 0.5, 4000.0, p=0.0), x)
    assert torch.equal(band_brightness_contrast(x, 0.0, 0.0, 4000.0, p=1.0), x)
    z = band_brightness_contrast(torch.full((4, 1, 4, 4), 250.0), 0.5, 0.0, 200.0, p=1.0)
    assert z.max() <= 255 and (z > 200).any()  # uint8 data: clamp to 255, not to the sampled 200
    assert dtype_ceiling([0.8, 200.0, 255.0, 256.0, 4000.0, 70000.0]) == [1.0, 255.0, 255.0, 65535.0, 65535.0, math.inf]


def test_ssl_view_without_photometric_change_keeps_16bit_values():
    x = torch.rand(4, 4, 32, 32) * 9000
    off = {"band_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "flips": False, "rot90": False, "scale": (1.0, 1.0)}
    v = SSLAugmentation(32, value_range=4000.0, color_p=0.0, **off)(x)
    torch.testing.assert_close(v, x)  # nothing clamped to the sampled 4000
    v = SSLAugmentation(32, value_range=4000.0, color_p=0.5, color_strength=1.0, **off)(x)
    same = (v - x).abs().flatten(1).amax(1) < 1e-2
    assert same.any() and (v[same][:, :3] > 4000).any()  # samples left alone by the colour jitter keep their values


@pytest.mark.parametrize("scale", [1.37, 0.63, 2.41])
def test_mask_resize_aligned_with_bilinear_image(scale):
    """Upscale/downscale a coordinate ramp and a checkerboard mask; the mask must follow the image's grid.

    Bilinear resampling of a linear ramp returns the sampled input coordinate ``c`` itself, so the label the
    mask should carry at each output pixel is that of input pixel ``floor(c + 0.5)``, i.e. within half a pixel.
    """
    h = w = 40
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mask = ((rows // 3 + cols // 5) % 3).long()[None]  # irregular blocks, many boundaries
    image = torch.stack([cols, rows]).float()[None]
    aug = SegmentationAugmentation(None, scale=(scale, scale), flips=False, rot90=False, photometric_p=0.0)
    img, msk = aug(image, mask)
    col_in = torch.floor(img[0, 0] + 0.5).long().clamp(0, w - 1)
    row_in = torch.floor(img[0, 1] + 0.5).long().clamp(0, h - 1)
    expected = mask[0][row_in, col_in]
    valid = msk[0] != 255  # padding when downscaled
    assert valid.float().mean() > 0.3
    assert torch.equal(msk[0][valid], expected[valid])
