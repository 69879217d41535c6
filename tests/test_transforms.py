import pytest
import torch

from falsecl.transforms import (
    SegmentationAugmentation,
    SSLAugmentation,
    band_brightness_contrast,
    band_grayscale,
    denormalize,
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
    assert y.min() >= 0 and y[:, 1].max() <= 100
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
