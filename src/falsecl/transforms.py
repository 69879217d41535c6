"""Band-aware batch transforms on tensors: normalisation, SSL views, segmentation augmentation.

Everything works for 3 and 4+ bands and runs on whatever device the batch is on (GPU when present): it is
applied in the datamodules' ``on_after_batch_transfer`` to whole batches, with kornia where kornia fits.

Inputs are RAW digital numbers (uint8 data as 0..255 floats, 16-bit as raw values); augmentation works on that
scale (``value_range`` gives each band's maximum) and :func:`normalize` runs last.

The SSL view pipeline follows SimCLR (Chen et al., ICML 2020) as used by FALSE (Zhang et al., GRSL 2022),
adapted to overhead imagery: flips and 90 degree rotations (no "up"), per-band brightness/contrast for every
band, colour jitter on the RGB bands only (kornia's colour jitter rejects 4-band input and hue has no meaning
for IR), a band-weighted grayscale and Gaussian blur. Colour strength defaults are moderate: strong
jitter/grayscale makes features blind to the colour that separates water, vegetation and bare land.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor, nn

LUMA = (0.299, 0.587, 0.114)


def normalize(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Per-band standardisation ``(x - mean) / std``, THE normalisation routine of falsecl.

    Args:
        x: Image (C, H, W) or batch (B, C, H, W) of raw digital numbers.
        mean: C per-band means (from training data, see :mod:`falsecl.datasets.stats`).
        std: C per-band standard deviations.

    Returns:
        Float tensor of the same shape.

    Raises:
        ValueError: ``x`` is not 3-D/4-D, or ``mean``/``std`` do not have one value per band.
    """
    if x.ndim not in (3, 4):
        raise ValueError(f"normalize expects (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
    c = x.shape[-3]
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device)
    if m.numel() != c or s.numel() != c:
        raise ValueError(f"normalize: image has {c} bands but mean/std have {m.numel()}/{s.numel()} values")
    shape = (c, 1, 1)
    return (x.float() - m.view(shape)) / s.view(shape)


def denormalize(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Inverse of :func:`normalize` (for display)."""
    c = x.shape[-3]
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(c, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(c, 1, 1)
    return x.float() * s + m


def _range_tensor(value_range: float | Sequence[float], c: int, ref: Tensor) -> Tensor:
    r = torch.as_tensor(value_range, dtype=ref.dtype, device=ref.device).flatten()
    if r.numel() == 1:
        r = r.expand(c)
    if r.numel() != c:
        raise ValueError(f"value_range has {r.numel()} values for {c} bands")
    return r.view(1, c, 1, 1)


def random_flip_rot90(
    *tensors: Tensor, hflip: bool = True, vflip: bool = True, rot90: bool = True
) -> list[Tensor]:
    """Apply the same random flips and 90 degree rotations, drawn per sample, to several aligned tensors.

    Exact pixel permutations (no interpolation), so masks stay valid labels.

    Args:
        *tensors: Tensors (B, ..., H, W) with the same batch size and spatial size, e.g. image (B, C, H, W)
            and mask (B, H, W).
        hflip: Random horizontal flips (p = 0.5).
        vflip: Random vertical flips (p = 0.5).
        rot90: Random rotation by k * 90 degrees, k uniform in 0..3 (0 or 180 only when H != W).

    Returns:
        The transformed tensors, in order.
    """
    b, device = tensors[0].shape[0], tensors[0].device
    out = list(tensors)
    h, w = out[0].shape[-2:]
    for flag, dim in ((hflip, -1), (vflip, -2)):
        if flag:
            sel = torch.rand(b, device=device) < 0.5
            out = [torch.where(sel.view(-1, *[1] * (t.ndim - 1)), t.flip(dim), t) for t in out]
    if rot90:
        k = (
            torch.randint(0, 4, (b,), device=device)
            if h == w
            else 2 * torch.randint(0, 2, (b,), device=device)
        )
        for times in (1, 2, 3):
            sel = k == times
            if bool(sel.any()):
                for t in out:
                    t[sel] = torch.rot90(t[sel], times, dims=(-2, -1))
    return out


def dtype_ceiling(value_range: float | Sequence[float]) -> list[float]:
    """Upper end of the data type each band's sampled maximum belongs to, the clamp of photometric changes.

    The band statistics only see a sample of patches, so their maximum is not a hard limit: another patch may
    be brighter, and inference sees it unclamped. Augmentation therefore clamps changed values to the range of
    the type the data are stored in, inferred from the sampled maximum: ``1`` for reflectances scaled to
    ``[0, 1]``, ``255`` for 8-bit, ``65535`` for 16-bit data, and no upper bound (``inf``) above that (float
    radiances, 32-bit integers).

    Args:
        value_range: Per-band sampled maximum (one value or one per band).

    Returns:
        One ceiling per given value.
    """
    values = [float(v) for v in (value_range if isinstance(value_range, Sequence) else [value_range])]
    return [next((c for c in (1.0, 255.0, 65535.0) if v <= c), math.inf) for v in values]


def band_brightness_contrast(
    x: Tensor,
    brightness: float,
    contrast: float,
    value_range: float | Sequence[float] = 255.0,
    p: float = 0.8,
) -> Tensor:
    """Independent brightness and contrast change per sample and per band, for any number of bands.

    ``x_c <- (x_c - mean_c) * u + mean_c + v * range_c`` with ``u ~ U(1 - contrast, 1 + contrast)`` and
    ``v ~ U(-brightness, brightness)``; ``mean_c`` is the band mean of the sample. Only the changed samples are
    clamped, to ``[0, ceiling_c]`` with the data type's ceiling of :func:`dtype_ceiling` (not to ``range_c``):
    unchanged samples stay bit-identical, so training sees the same values as inference.

    Args:
        x: Batch (B, C, H, W) of raw values.
        brightness: Additive shift as a fraction of the band's range.
        contrast: Multiplicative contrast spread.
        value_range: Per-band maximum (one value or C values), the scale of the brightness shift.
        p: Probability per sample.

    Returns:
        Tensor (B, C, H, W).
    """
    b, c = x.shape[:2]
    rng = _range_tensor(value_range, c, x)
    ceiling = _range_tensor(dtype_ceiling(rng.flatten().tolist()), c, x)
    apply = torch.rand(b, 1, 1, 1, device=x.device) < p
    u = 1 + contrast * (2 * torch.rand(b, c, 1, 1, device=x.device, dtype=x.dtype) - 1)
    v = brightness * (2 * torch.rand(b, c, 1, 1, device=x.device, dtype=x.dtype) - 1)
    changed = apply & ((u != 1) | (v != 0))
    mean = x.mean(dim=(-2, -1), keepdim=True)
    out = torch.minimum(((x - mean) * u + mean + v * rng).clamp_min(0), ceiling)
    return torch.where(changed, out, x)


def grayscale_weights(channels: int, rgb_bands: Sequence[int] | None) -> list[float]:
    """Default band weights of :func:`band_grayscale`: luma on the RGB bands, 1/3 on each other band."""
    weights = [1.0 / 3.0] * channels
    if rgb_bands is not None:
        for band, w in zip(rgb_bands, LUMA, strict=True):
            weights[band] = w
    return weights


def band_grayscale(x: Tensor, weights: Sequence[float], p: float = 0.2) -> Tensor:
    """Replace every band by the weighted band average, per sample with probability ``p``.

    Args:
        x: Batch (B, C, H, W).
        weights: C non-negative band weights (normalised to sum 1).
        p: Probability per sample.

    Returns:
        Tensor (B, C, H, W).
    """
    w = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    if w.numel() != x.shape[1]:
        raise ValueError(f"grayscale weights have {w.numel()} values for {x.shape[1]} bands")
    gray = (x * (w / w.sum()).view(1, -1, 1, 1)).sum(1, keepdim=True).expand_as(x)
    sel = (torch.rand(x.shape[0], device=x.device) < p).view(-1, 1, 1, 1)
    return torch.where(sel, gray, x)


class SSLAugmentation(nn.Module):
    """Random view of a batch for contrastive pretraining (SimCLR-style, band-aware).

    Args:
        crop_size: Output view size (square).
        scale: Area range of the random resized crop.
        rgb_bands: 0-based indices of the R, G, B bands, or ``None`` (no true-colour bands: no colour jitter).
        value_range: Per-band maximum of the raw data (255 for uint8; from the band statistics for 16-bit).
        color_strength: SimCLR-style strength ``s`` of the RGB colour jitter: brightness/contrast/saturation
            ``0.8 s``, hue ``0.1 s`` (half of SimCLR's, to keep hue-defined classes apart). 0 disables it.
        color_p: Probability of the RGB colour jitter.
        band_brightness: Per-band brightness shift (fraction of the range), applied to every band.
        band_contrast: Per-band contrast spread, applied to every band.
        band_p: Probability of the per-band brightness/contrast.
        grayscale_p: Probability of the band-weighted grayscale.
        blur_p: Probability of Gaussian blur.
        blur_sigma: Sigma range of the blur, in pixels.
        flips: Random horizontal and vertical flips.
        rot90: Random 90 degree rotations.
    """

    def __init__(
        self,
        crop_size: int = 96,
        scale: tuple[float, float] = (0.2, 1.0),
        rgb_bands: Sequence[int] | None = (0, 1, 2),
        value_range: float | Sequence[float] = 255.0,
        color_strength: float = 0.5,
        color_p: float = 0.8,
        band_brightness: float = 0.1,
        band_contrast: float = 0.2,
        band_p: float = 0.8,
        grayscale_p: float = 0.1,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        flips: bool = True,
        rot90: bool = True,
    ) -> None:
        super().__init__()
        if rgb_bands is not None and len(rgb_bands) != 3:
            raise ValueError(f"rgb_bands must name 3 bands (R, G, B) or be None, got {rgb_bands}")
        self.crop_size = crop_size
        self.rgb_bands = list(rgb_bands) if rgb_bands is not None else None
        self.value_range = value_range
        self.crop = K.RandomResizedCrop((crop_size, crop_size), scale=scale, p=1.0)
        s = color_strength
        # p=1 on the samples drawn here: the others must keep their exact values (no [0, 1] clamp).
        self.jitter = K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.1 * s, p=1.0) if s > 0 else None
        self.color_p = color_p
        self.band_brightness, self.band_contrast, self.band_p = band_brightness, band_contrast, band_p
        self.grayscale_p = grayscale_p
        kernel = max(3, int(0.1 * crop_size) // 2 * 2 + 1)
        self.blur = K.RandomGaussianBlur((kernel, kernel), blur_sigma, p=blur_p) if blur_p > 0 else None
        self.flips, self.rot90 = flips, rot90

    def forward(self, x: Tensor) -> Tensor:
        """Augment a batch.

        Args:
            x: Raw batch (B, C, H, W).

        Returns:
            One view (B, C, crop_size, crop_size), still on the raw scale (normalise afterwards).
        """
        b, c = x.shape[:2]
        if self.rgb_bands is not None and max(self.rgb_bands) >= c:
            raise ValueError(f"rgb_bands {self.rgb_bands} do not exist in a {c}-band batch")
        v = self.crop(x.float())
        v = random_flip_rot90(v, hflip=self.flips, vflip=self.flips, rot90=self.rot90)[0]
        rng = _range_tensor(self.value_range, c, v)
        if self.band_p > 0 and (self.band_brightness > 0 or self.band_contrast > 0):
            v = band_brightness_contrast(
                v, self.band_brightness, self.band_contrast, rng.flatten().tolist(), self.band_p
            )
        if self.jitter is not None and self.rgb_bands is not None:
            sel = torch.rand(b, device=v.device) < self.color_p
            if bool(sel.any()):
                idx = self.rgb_bands
                scale = rng[:, idx]
                rgb = self.jitter((v[sel][:, idx] / scale).clamp(0, 1)) * scale
                v = v.clone()
                v[sel.nonzero()[:, 0, None], torch.tensor(idx, device=v.device)] = rgb
        if self.grayscale_p > 0:
            v = band_grayscale(v, grayscale_weights(c, self.rgb_bands), self.grayscale_p)
        if self.blur is not None:
            v = self.blur(v)
        out: Tensor = v
        return out


class SegmentationAugmentation(nn.Module):
    """Segmentation augmentation: same scaled crop, flips, rot90 on image and mask; photometric on image.

    The image is resized bilinearly and the mask with nearest neighbour on the same pixel grid
    (``nearest-exact``: each output pixel takes the label of the input pixel its centre falls in, where legacy
    ``nearest`` is shifted by up to half an input pixel); areas padded when the scaled image is smaller than
    the crop get 0 in the image and the ignore index in the mask.

    Args:
        crop_size: Output size; ``None`` keeps the input size.
        scale: Range of the random scale factor.
        flips: Random horizontal and vertical flips.
        rot90: Random 90 degree rotations.
        band_brightness: Per-band brightness shift (fraction of the range).
        band_contrast: Per-band contrast spread.
        photometric_p: Probability of the per-band brightness/contrast change.
        value_range: Per-band maximum of the raw data.
        ignore_index: Mask value for padded pixels.
    """

    def __init__(
        self,
        crop_size: int | None = None,
        scale: tuple[float, float] = (0.75, 1.5),
        flips: bool = True,
        rot90: bool = True,
        band_brightness: float = 0.1,
        band_contrast: float = 0.1,
        photometric_p: float = 0.5,
        value_range: float | Sequence[float] = 255.0,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale range must satisfy 0 < low <= high, got {scale}")
        self.crop_size, self.scale = crop_size, scale
        self.flips, self.rot90 = flips, rot90
        self.band_brightness, self.band_contrast, self.photometric_p = (
            band_brightness,
            band_contrast,
            photometric_p,
        )
        self.value_range, self.ignore_index = value_range, ignore_index

    def forward(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Augment a batch.

        Args:
            image: Raw batch (B, C, H, W).
            mask: Class indices (B, H, W).

        Returns:
            ``(image (B, C, S, S), mask (B, S, S))`` with ``S = crop_size`` (or (H, W) when
            ``crop_size=None``).
        """
        b, c, h, w = image.shape
        out_h, out_w = (h, w) if self.crop_size is None else (self.crop_size, self.crop_size)
        images, masks = [], []
        for i in range(b):
            s = float(torch.empty(1).uniform_(*self.scale))
            sh, sw = max(1, round(h * s)), max(1, round(w * s))
            img = F.interpolate(image[i : i + 1].float(), size=(sh, sw), mode="bilinear", align_corners=False)
            msk = F.interpolate(mask[i : i + 1, None].float(), size=(sh, sw), mode="nearest-exact").long()
            ph, pw = max(0, out_h - sh), max(0, out_w - sw)
            if ph or pw:
                img = F.pad(img, (0, pw, 0, ph), value=0.0)
                msk = F.pad(msk, (0, pw, 0, ph), value=self.ignore_index)
            top = int(torch.randint(0, img.shape[-2] - out_h + 1, (1,)))
            left = int(torch.randint(0, img.shape[-1] - out_w + 1, (1,)))
            images.append(img[..., top : top + out_h, left : left + out_w])
            masks.append(msk[:, 0, top : top + out_h, left : left + out_w])
        img_b, msk_b = torch.cat(images), torch.cat(masks)
        img_b, msk_b = random_flip_rot90(img_b, msk_b, hflip=self.flips, vflip=self.flips, rot90=self.rot90)
        if self.photometric_p > 0:
            img_b = band_brightness_contrast(
                img_b, self.band_brightness, self.band_contrast, self.value_range, self.photometric_p
            )
        return img_b, msk_b.to(mask.dtype)
