"""Sliding-window inference over whole images and GeoTIFFs of any size.

One routine, :meth:`SlidingWindowPredictor._sweep`, places windows with the shared tiling grid
(:func:`falsecl.datasets.tiling.window_starts`, last window flush with the border), runs them through the
model in batches, blends the overlapping logits with a Gaussian or flat weight and hands finished blocks to a
consumer. It works in vertical panels (``panel_width`` columns, 4096 by default) and, within a panel, band by
band: only the ``window`` rows in flight are held, so peak memory is bounded by ``window x panel_width`` and
does not grow with the image (about 60 MB of logit sums for six classes and a 512 window).
:meth:`SlidingWindowPredictor.predict_tensor` (evaluation on whole held-out images) and
:meth:`SlidingWindowPredictor.predict_raster` (``falsecl predict``) are thin consumers of it.

Blending follows the usual practice of overlapping-tile segmentation (e.g. nnU-Net's Gaussian importance map,
sigma = window / 8): predictions near a window's border see less context, so they get less weight.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from falsecl.datasets.tiling import window_starts
from falsecl.transforms import normalize

Blend = Literal["gaussian", "mean"]

#: Default class colours (RGB) for previews; the first six are the Dubai aerial classes' own colours.
DEFAULT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (60, 16, 152),
    (132, 41, 246),
    (110, 193, 228),
    (254, 221, 58),
    (226, 169, 41),
    (155, 155, 155),
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


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


def _coverage(length: int, starts: list[int], profile: Tensor) -> Tensor:
    """Sum over windows starting at ``starts`` of their 1-D ``profile``: ``(length,)``."""
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
        if self.mean is not None and self.in_channels is not None and len(self.mean) != self.in_channels:
            raise ValueError(
                f"mean/std have {len(self.mean)} bands but the model takes {self.in_channels}; use the "
                "statistics stored with the checkpoint the model came from"
            )

    # ------------------------------------------------------------------ model
    @torch.inference_mode()
    def _forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K, h, w)`` of a normalised batch ``(B, C, h, w)``; pads, averages flips if asked."""
        h, w = x.shape[-2:]
        m = self.pad_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))

        def run(inp: Tensor) -> Tensor:
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

    def _check_bands(self, bands: int, source: str) -> None:
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

    @torch.inference_mode()
    def _sweep(
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
        row_norm = _coverage(height, rows, profile_h)
        col_norm = _coverage(width, window_starts(width, self.window, self.stride), profile_w)
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
        self._check_bands(int(image.shape[0]), "the image")
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

        self._sweep(height, width, read, emit)
        if out is None:
            raise RuntimeError("no window was predicted")
        return out.softmax(dim=0) if probabilities else out

    # ------------------------------------------------------------------ rasters
    def predict_raster(
        self,
        src_path: str | Path,
        dst_path: str | Path,
        probabilities_path: str | Path | None = None,
        preview_path: str | Path | None = None,
        probability_dtype: Literal["uint8", "float32"] = "uint8",
        palette: Sequence[Sequence[int]] | None = None,
        preview_max_size: int = 2048,
        overwrite: bool = False,
        compress: Literal["deflate", "lzw"] = "deflate",
        progress: bool = True,
        cache_mb: int = 64,
    ) -> dict[str, Any]:
        """Write a georeferenced class map for a GeoTIFF (or JPEG/PNG) of any size, band by band.

        The class map is a single-band uint8 GeoTIFF with the input's CRS and transform, tiled (256 x 256)
        and compressed, with a colour table. Every output is written under a temporary name in the
        destination folder and renamed only when complete; on any error the temporary files are removed, so
        a file under the final name is always whole.

        Args:
            src_path: Input raster; its band count must match the model.
            dst_path: Output class-map GeoTIFF.
            probabilities_path: Optional ``K``-band GeoTIFF of softmax probabilities (uint8 = round(255 p), or
                float32).
            preview_path: Optional colour PNG of the class map, subsampled so its longer side is at most
                ``preview_max_size``.
            probability_dtype: ``"uint8"`` (4x smaller) or ``"float32"``.
            palette: RGB colour per class for the preview and colour table (:data:`DEFAULT_PALETTE` when
                ``None``).
            preview_max_size: Longest side of the preview in pixels.
            overwrite: Replace existing outputs; refused otherwise.
            compress: GeoTIFF compression.
            progress: Show a progress bar on stderr.
            cache_mb: GDAL block cache; small so memory stays flat in the image size.

        Returns:
            Summary dict: ``height``, ``width``, ``bands``, ``num_classes``, ``class_counts`` (pixels per
            class) and the written ``outputs``.

        Raises:
            FileNotFoundError: Missing input, or missing output folder.
            ValueError: Non-raster input, band-count mismatch, or output == input.
            PermissionError: Output folder not writable.
            FileExistsError: Output exists and ``overwrite`` is false.
        """
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        src_path = Path(src_path)
        if not src_path.is_file():
            raise FileNotFoundError(f"input raster {src_path} not found")
        outputs = {"classes": Path(dst_path)}
        if probabilities_path is not None:
            outputs["probabilities"] = Path(probabilities_path)
        if preview_path is not None:
            outputs["preview"] = Path(preview_path)
        for kind, path in outputs.items():
            _check_writable(path, kind, overwrite)
            if path.resolve() == src_path.resolve():
                raise ValueError(f"output {path} is the input raster; choose another file name")
        temps = {kind: path.with_name(f".{path.name}.partial") for kind, path in outputs.items()}

        with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=cache_mb):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                src = rasterio.open(src_path)
            except RasterioIOError as err:
                raise ValueError(
                    f"{src_path} is not a raster GDAL can read ({err}); give a GeoTIFF, JPEG or PNG"
                ) from err
            with src:
                try:
                    return self._predict_open_raster(
                        src, outputs, temps, probability_dtype, palette, preview_max_size, compress, progress
                    )
                except BaseException:
                    _remove(temps.values())
                    raise

    def _predict_open_raster(
        self,
        src: Any,
        outputs: dict[str, Path],
        temps: dict[str, Path],
        probability_dtype: str,
        palette: Sequence[Sequence[int]] | None,
        preview_max_size: int,
        compress: str,
        progress: bool,
    ) -> dict[str, Any]:
        import rasterio
        from rasterio.windows import Window

        self._check_bands(int(src.count), f"{src.name}")
        height, width = int(src.height), int(src.width)
        k = self.num_classes or _probe_num_classes(self, int(src.count))
        self.num_classes = k
        colours = [tuple(int(v) for v in c[:3]) for c in (palette or DEFAULT_PALETTE)]
        if len(colours) < k:
            colours += [DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)] for i in range(len(colours), k)]
        base = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "crs": src.crs,
            "transform": src.transform,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": compress,
            "BIGTIFF": "IF_SAFER",
        }
        step = max(1, math.ceil(max(height, width) / preview_max_size))
        preview = np.zeros((math.ceil(height / step), math.ceil(width / step)), dtype=np.uint8)
        counts = np.zeros(k, dtype=np.int64)
        bands = len(window_starts(height, self.window, self.stride)) * len(self._panels(width))
        bar = _progress_bar(progress, bands, src.name)
        with rasterio.open(temps["classes"], "w", **base, count=1, dtype="uint8") as dst:
            dst.write_colormap(1, {i: (*colours[i], 255) for i in range(min(k, 256))})
            prob_dst = None
            if "probabilities" in temps:
                prob_dst = rasterio.open(
                    temps["probabilities"],
                    "w",
                    **base,
                    count=k,
                    dtype=probability_dtype,
                    interleave="pixel" if k <= 4 else "band",
                )
            try:

                def read(r0: int, r1: int, c0: int, c1: int) -> Tensor:
                    arr = src.read(window=Window(c0, r0, c1 - c0, r1 - r0), out_dtype="float32")
                    return torch.from_numpy(arr)

                def emit(r0: int, c0: int, sums: Tensor, norm: Tensor) -> None:
                    n, m = sums.shape[1:]
                    labels = argmax_classes(sums).cpu().numpy()
                    dst.write(labels, 1, window=Window(c0, r0, m, n))
                    counts[:] += np.bincount(labels.ravel(), minlength=k)[:k]
                    if prob_dst is not None:
                        probs = (sums / norm).softmax(dim=0)
                        if probability_dtype == "uint8":
                            probs = (probs * 255).round().to(torch.uint8)
                        prob_dst.write(probs.cpu().numpy(), window=Window(c0, r0, m, n))
                    # Preview: the pixels whose global row and column are multiples of `step`.
                    fr, fc = (-r0) % step, (-c0) % step
                    if fr < n and fc < m:
                        sub = labels[fr::step, fc::step]
                        pr, pc = (r0 + fr) // step, (c0 + fc) // step
                        preview[pr : pr + sub.shape[0], pc : pc + sub.shape[1]] = sub

                self._sweep(height, width, read, emit, on_band=bar.advance if bar else None)
            finally:
                if prob_dst is not None:
                    prob_dst.close()
                if bar is not None:
                    bar.close()
        if "preview" in temps:
            from PIL import Image

            lut = np.zeros((256, 3), dtype=np.uint8)
            lut[:k] = np.asarray(colours[:k], dtype=np.uint8)
            Image.fromarray(lut[preview]).save(temps["preview"], format="PNG")
        for kind, tmp in temps.items():
            os.replace(tmp, outputs[kind])
        return {
            "height": height,
            "width": width,
            "bands": int(src.count),
            "num_classes": k,
            "class_counts": counts.tolist(),
            "outputs": {kind: str(p) for kind, p in outputs.items()},
        }


def _probe_num_classes(predictor: SlidingWindowPredictor, bands: int) -> int:
    """Number of classes from one forward pass on a blank window (when not given)."""
    side = min(predictor.window, 64)
    x = torch.zeros(1, bands, side, side, device=predictor.device)
    return int(predictor._forward(x).shape[1])


def _check_writable(path: Path, kind: str, overwrite: bool) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write the {kind} output {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write the {kind} output {path}: folder {parent} is not writable")
    if path.is_dir():
        raise ValueError(f"the {kind} output {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")


def _remove(paths: Any) -> None:
    for p in paths:
        Path(p).unlink(missing_ok=True)


class _Bar:
    """Minimal wrapper over a rich progress bar (advance/close)."""

    def __init__(self, total: int, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]predict[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._progress.add_task(Path(label).name, total=total)
        self._progress.start()

    def advance(self) -> None:
        self._progress.advance(self._task)

    def close(self) -> None:
        self._progress.stop()


def _progress_bar(enabled: bool, total: int, label: str) -> _Bar | None:
    return _Bar(total, label) if enabled else None
