"""Sliding-window inference core: tensors in, blended logits out (no file formats here).

One routine, :meth:`SlidingWindowPredictor.sweep`, places windows with the shared tiling grid
(:func:`falsecl.tiling.window_starts`, last window flush with the border), runs them through the
model in batches, blends the overlapping logits with a Gaussian or flat weight and hands finished blocks to a
consumer. It works in vertical panels (``panel_width`` columns, 4096 by default) and, within a panel, band by
band: only the ``window`` rows in flight are held, so peak memory is bounded by ``window x panel_width`` and
does not grow with the image (about 60 MB of logit sums for six classes and a 512 window).
:meth:`SlidingWindowPredictor.predict_tensor` (whole images in memory), :mod:`falsecl.inference.raster`
(``falsecl predict``: :func:`~falsecl.inference.raster.predict_raster`) and :mod:`falsecl.inference.evaluation`
(``falsecl evaluate``, the probe) are thin consumers of it; this module reads and writes no file.

With ``precision="bf16-mixed"`` only the model's forward pass runs under bf16 autocast; its logits are cast to
fp32 before blending, so the blending arithmetic is the same in both precisions. ``precision="auto"`` here is
the fallback rule (bf16 where the device runs it natively); the product's commands measure instead
(:func:`falsecl.inference.checkpoint.make_predictor` times :meth:`SlidingWindowPredictor.calibration_workload`
with :func:`falsecl.calibration.choose_precision` and applies the result with
:meth:`SlidingWindowPredictor.use_precision`), so this core stays free of the calibration cache file.

Blending follows the usual practice of overlapping-tile segmentation (e.g. nnU-Net's Gaussian importance map,
sigma = window / 8): predictions near a window's border see less context, so they get less weight.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from falsecl.precision import PrecisionChoice, Workload, resolve_precision, to_memory_format
from falsecl.tiling import window_starts
from falsecl.transforms import normalize

Blend = Literal["gaussian", "mean"]


def blend_profile(length: int, blend: Blend = "gaussian", sigma_scale: float = 0.125) -> Tensor:
    """1-D blending profile of a window side; the 2-D weight is the outer product of two profiles.

    Args:
        length: Window side in pixels.
        blend: ``"gaussian"`` (sigma = ``sigma_scale`` x side, floored at 1e-3) or ``"mean"`` (ones).
        sigma_scale: Gaussian sigma as a fraction of the side.

    Returns:
        ``(length,)`` float32 profile with maximum 1 and minimum >= 1e-3.
    """
    if blend == "mean":
        return torch.ones(length)
    if blend != "gaussian":
        raise ValueError(f"unknown blend {blend!r}; use 'gaussian' or 'mean'")
    x = torch.arange(length, dtype=torch.float64) - (length - 1) / 2
    g = torch.exp(-0.5 * (x / (sigma_scale * length)) ** 2)
    # The floor keeps border pixels, which only one window may reach, numerically well defined.
    return (g / g.max()).clamp_min(1e-3).float()


def blend_weights(height: int, width: int, blend: Blend = "gaussian", sigma_scale: float = 0.125) -> Tensor:
    """Per-pixel weight of a window's logits when overlapping windows are blended.

    The weight is separable (outer product of :func:`blend_profile`), so the sum of the weights of all
    windows over a pixel factorises into a row term and a column term and never needs accumulating.

    Args:
        height: Window height in pixels.
        width: Window width in pixels.
        blend: ``"gaussian"`` (centre-weighted) or ``"mean"`` (all ones).
        sigma_scale: Gaussian sigma as a fraction of the window side.

    Returns:
        ``(height, width)`` float32 weights, maximum 1, minimum >= 1e-6.
    """
    return torch.outer(blend_profile(height, blend, sigma_scale), blend_profile(width, blend, sigma_scale))


def window_coverage(length: int, starts: list[int], profile: Tensor) -> Tensor:
    """Sum over windows starting at ``starts`` of their 1-D blending ``profile``: ``(length,)``.

    With separable weights, the outer product of the row and column coverages is the sum of all windows'
    weights over each pixel, the normaliser of the blended logits.
    """
    total = torch.zeros(length, dtype=profile.dtype, device=profile.device)
    n = profile.shape[0]
    for s0 in starts:
        total[s0 : s0 + n] += profile
    return total


def argmax_classes(scores: Tensor) -> Tensor:
    """``scores.argmax(0)`` for ``(K, H, W)`` scores, as uint8.

    ``max(dim=0).indices`` gives the same result (the first maximum on ties) several times faster than
    ``argmax(dim=0)`` on the CPU, where reducing over the outermost dimension takes a slow strided path.
    """
    if scores.shape[0] > 256:
        raise ValueError(f"a uint8 class map holds at most 256 classes, got {scores.shape[0]}")
    return scores.max(dim=0).indices.to(torch.uint8)


def first_conv_in_channels(model: nn.Module) -> int | None:
    """Number of input bands of the first convolution of ``model`` (``None`` when it has none)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return None


class SlidingWindowPredictor:
    """Blend a segmentation model's logits over overlapping windows of an arbitrarily large image.

    Args:
        model: Maps a normalised batch ``(B, C, h, w)`` to logits ``(B, K, h, w)``; put in eval mode here.
        window: Window side in pixels (clipped to the image for images smaller than it).
        overlap: Fraction of the window shared by neighbours, in ``[0, 1)``; stride = window x (1 - overlap).
        blend: ``"gaussian"`` or ``"mean"`` weighting of overlapping logits.
        tta_flip: Average the logits of the window, its horizontal and its vertical flip (3x the compute).
        batch_size: Windows per forward pass.
        num_classes: ``K``; inferred from the first forward pass when ``None``.
        mean: Per-band mean of the training data; with ``std``, raw inputs are normalised with
            :func:`falsecl.transforms.normalize`. ``None`` means inputs are already normalised.
        std: Per-band standard deviation of the training data.
        device: Where the model runs; its current device when ``None``.
        pad_multiple: Windows are zero-padded (in normalised space) at the bottom/right to a multiple of this
            before the forward pass and the logits cropped back, for encoders that need divisible sizes.
        in_channels: Bands the model expects; read from its first convolution when ``None``.
        panel_width: Images wider than this are processed in vertical panels of this many columns, so that
            memory is bounded in the width as well as in the height.
        precision: ``"32-true"``, ``"bf16-mixed"`` (bf16 autocast on the forward pass only) or ``"auto"``
            (:func:`falsecl.precision.resolve_precision`: bf16 where the device runs it natively; see
            :meth:`use_precision` for a measured choice).
    """

    def __init__(
        self,
        model: nn.Module,
        window: int = 512,
        overlap: float = 0.25,
        blend: Blend = "gaussian",
        tta_flip: bool = False,
        batch_size: int = 8,
        num_classes: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device | None = None,
        pad_multiple: int = 32,
        in_channels: int | None = None,
        panel_width: int = 4096,
        precision: str = "32-true",
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be a positive number of pixels, got {window}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap is a fraction of the window in [0, 1), got {overlap}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (per-band training statistics) or neither")
        blend_weights(2, 2, blend)  # validates the name early
        self.model = model.eval()
        if device is None:
            param = next(iter(model.parameters()), None)
            device = param.device if param is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.model.to(self.device)
        self.window = int(window)
        self.overlap = float(overlap)
        self.stride = max(1, self.window - int(round(self.window * self.overlap)))
        self.blend: Blend = blend
        self.tta_flip = tta_flip
        self.batch_size = batch_size
        self.num_classes = num_classes
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]
        self.pad_multiple = max(1, int(pad_multiple))
        self.in_channels = in_channels if in_channels is not None else first_conv_in_channels(model)
        self.panel_width = max(int(panel_width), 1)
        self.precision = resolve_precision(precision, self.device)
        self.channels_last = False
        if self.precision not in ("32-true", "bf16-mixed"):
            raise ValueError(f"precision must be '32-true', 'bf16-mixed' or 'auto', got {precision!r}")
        if self.mean is not None and self.in_channels is not None and len(self.mean) != self.in_channels:
            raise ValueError(
                f"mean/std have {len(self.mean)} bands but the model takes {self.in_channels}; use the "
                "statistics stored with the checkpoint the model came from"
            )

    # ------------------------------------------------------------------ model
    def calibration_workload(self) -> Workload:
        """A forward pass of a copy of the model on one batch of random windows (what ``auto`` times)."""
        hp = getattr(self.model, "hparams", {})
        stride = f"os{hp['output_stride']}" if "output_stride" in hp else None
        parts = [type(self.model).__name__, hp.get("arch"), stride]
        millions = sum(p.numel() for p in self.model.parameters()) / 1e6
        side = self.window + (-self.window) % self.pad_multiple
        windows = torch.randn(self.batch_size, self.in_channels or 3, side, side, device=self.device)

        def step(module: nn.Module, x: Tensor) -> Tensor:
            out: Tensor = module(x)
            return out

        name = f"{' '.join(str(p) for p in parts if p)} ({millions:.1f} M parameters)"
        return Workload(name, copy.deepcopy(self.model), (windows,), step)

    def use_precision(self, choice: PrecisionChoice) -> None:
        """Run in a measured precision and memory format (:func:`falsecl.calibration.choose_precision`)."""
        if choice.precision not in ("32-true", "bf16-mixed"):
            raise ValueError(f"precision must be '32-true' or 'bf16-mixed', got {choice.precision!r}")
        self.precision, self.channels_last = choice.precision, choice.channels_last
        self.model.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    @torch.inference_mode()
    def _forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K, h, w)`` of a normalised batch ``(B, C, h, w)``; pads, averages flips if asked."""
        h, w = x.shape[-2:]
        m = self.pad_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        if self.channels_last:
            x = to_memory_format(x, True)

        bf16 = self.precision == "bf16-mixed"

        def run(inp: Tensor) -> Tensor:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                out: Tensor = self.model(inp)
            if out.shape[-2:] != inp.shape[-2:]:
                raise ValueError(
                    f"the model returned logits of size {tuple(out.shape[-2:])} for input "
                    f"{tuple(inp.shape[-2:])}; sliding-window inference needs full-resolution logits"
                )
            return out.float()

        logits = run(x)
        if self.tta_flip:
            logits = logits + run(x.flip(-1)).flip(-1) + run(x.flip(-2)).flip(-2)
            logits = logits / 3
        return logits[..., :h, :w]

    def check_bands(self, bands: int, source: str) -> None:
        """Refuse an input whose band count differs from the model's (``source`` names it in the message)."""
        if self.in_channels is not None and bands != self.in_channels:
            raise ValueError(
                f"{source} has {bands} band(s) but the model was trained on {self.in_channels}; give an "
                "image with the same bands in the same order as the training data"
            )

    # ------------------------------------------------------------------ core
    def _panels(self, width: int) -> list[tuple[int, int, list[int]]]:
        """Split the columns into vertical panels processed one after the other.

        Returns:
            ``(a, b, starts)`` per panel: it owns columns ``[a, b)`` and runs every window (by column start)
            that covers one of them, so its owned columns get exactly the whole-image blend. Windows across a
            panel border run in both panels (about ``window / panel_width`` extra compute).
        """
        w = min(self.window, width)
        cols = window_starts(width, self.window, self.stride)
        panels = []
        for a in range(0, width, self.panel_width):
            b = min(a + self.panel_width, width)
            panels.append((a, b, [c for c in cols if c < b and c + w > a]))
        return panels

    def num_steps(self, height: int, width: int) -> int:
        """Number of bands (row steps x panels) :meth:`sweep` runs over an image, for progress bars."""
        return len(window_starts(height, self.window, self.stride)) * len(self._panels(width))

    @torch.inference_mode()
    def sweep(
        self,
        height: int,
        width: int,
        read: Callable[[int, int, int, int], Tensor],
        emit: Callable[[int, int, Tensor, Tensor], None],
        on_band: Callable[[], None] | None = None,
    ) -> None:
        """Run the sliding window panel by panel, band by band.

        Args:
            height: Image height ``H``.
            width: Image width ``W``.
            read: ``(r0, r1, c0, c1) -> (C, r1 - r0, c1 - c0)`` raw pixels of rows ``[r0, r1)`` and columns
                ``[c0, c1)``.
            emit: Called as ``emit(r0, c0, sums, norm)`` once the block of rows ``[r0, r0 + n)`` and columns
                ``[c0, c0 + m)`` is final (no later window touches it): ``sums`` ``(K, n, m)`` are the weighted
                logit sums and ``norm`` ``(n, m)`` the sums of weights, so the blended logits are
                ``sums / norm`` (the class map is simply ``argmax(sums)``). Every pixel is emitted once;
                within a panel rows arrive top to bottom.
            on_band: Called after each band of each panel (progress reporting).
        """
        h, w = min(self.window, height), min(self.window, width)
        rows = window_starts(height, self.window, self.stride)
        profile_h = blend_profile(h, self.blend).to(self.device)
        profile_w = blend_profile(w, self.blend).to(self.device)
        weight = torch.outer(profile_h, profile_w)
        # Separable weights: the sum of all windows' weights over a pixel is row term x column term.
        row_norm = window_coverage(height, rows, profile_h)
        col_norm = window_coverage(width, window_starts(width, self.window, self.stride), profile_w)
        for a, b, cols in self._panels(width):
            c_lo, c_hi = cols[0], cols[-1] + w
            acc: Tensor | None = None  # (K, h, c_hi - c_lo) weighted logit sums of rows [r, r + h)
            strip: Tensor | None = None  # normalised pixels of rows [prev, prev + h)
            prev = 0
            for i, r in enumerate(rows):
                if strip is not None and r < prev + h:
                    # Reuse the rows shared with the previous band; read only the new ones.
                    new = self._read_normalised(read, prev + h, r + h, c_lo, c_hi)
                    strip = torch.cat([strip[:, r - prev :], new], dim=1)
                else:
                    strip = self._read_normalised(read, r, r + h, c_lo, c_hi)
                prev = r
                for j in range(0, len(cols), self.batch_size):
                    batch_cols = [c - c_lo for c in cols[j : j + self.batch_size]]
                    x = torch.stack([strip[:, :, c : c + w] for c in batch_cols])
                    logits = self._forward(x).mul_(weight)
                    if acc is None:
                        acc = torch.zeros(self._check_classes(logits.shape[1]), h, c_hi - c_lo, device=self.device)
                    for k, c in enumerate(batch_cols):
                        acc[:, :, c : c + w] += logits[k]
                if acc is None:  # cannot happen: every band has at least one window
                    raise RuntimeError("no window was predicted")
                done = (rows[i + 1] if i + 1 < len(rows) else r + h) - r
                emit(r, a, acc[:, :done, a - c_lo : b - c_lo], torch.outer(row_norm[r : r + done], col_norm[a:b]))
                # Slide the band: rows after `done` carry over to the next band's accumulator.
                carry = acc[:, done:]
                acc = torch.zeros_like(acc)
                acc[:, : h - done] = carry
                if on_band is not None:
                    on_band()

    def _read_normalised(
        self, read: Callable[[int, int, int, int], Tensor], r0: int, r1: int, c0: int, c1: int
    ) -> Tensor:
        x = read(r0, r1, c0, c1).to(self.device, torch.float32)
        if self.mean is not None and self.std is not None:
            x = normalize(x, self.mean, self.std)
        return x

    def _check_classes(self, k: int) -> int:
        if self.num_classes is not None and k != self.num_classes:
            raise ValueError(f"the model outputs {k} classes, expected num_classes={self.num_classes}")
        self.num_classes = k
        return k

    # ------------------------------------------------------------------ tensors
    def predict_tensor(self, image: Tensor, probabilities: bool = False) -> Tensor:
        """Blended prediction for one whole image held in memory (evaluation on held-out images).

        Args:
            image: ``(C, H, W)`` raw image (digital numbers, normalised here when ``mean``/``std`` are set).
            probabilities: Return softmax probabilities instead of logits.

        Returns:
            ``(K, H, W)`` float32 logits (or probabilities) on the CPU.
        """
        if image.ndim != 3:
            raise ValueError(f"expected one image (C, H, W), got shape {tuple(image.shape)}")
        self.check_bands(int(image.shape[0]), "the image")
        _, height, width = image.shape
        image = image.float()
        out: Tensor | None = None

        def read(r0: int, r1: int, c0: int, c1: int) -> Tensor:
            return image[:, r0:r1, c0:c1]

        def emit(r0: int, c0: int, sums: Tensor, norm: Tensor) -> None:
            nonlocal out
            if out is None:
                out = torch.empty(sums.shape[0], height, width)
            out[:, r0 : r0 + sums.shape[1], c0 : c0 + sums.shape[2]] = (sums / norm).cpu()

        self.sweep(height, width, read, emit)
        if out is None:
            raise RuntimeError("no window was predicted")
        return out.softmax(dim=0) if probabilities else out

    def probe_num_classes(self, bands: int) -> int:
        """Number of classes from one forward pass on a blank window (when not given)."""
        if self.num_classes is None:
            side = min(self.window, 64)
            x = torch.zeros(1, bands, side, side, device=self.device)
            self.num_classes = int(self._forward(x).shape[1])
        return self.num_classes
