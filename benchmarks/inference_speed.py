"""Speed and memory of ``falsecl predict`` and ``falsecl evaluate`` with the real model, on synthetic GeoTIFFs.

Every measurement runs in a fresh subprocess, so its peak RSS belongs to that run only.

1. **Real model speed.** DeepLabv3+ with ResNet-18 and ResNet-50 encoders, output stride 8 and 16, in fp32 and
   bf16 (autocast on the forward pass). Weights are random (``encoder_weights=None``): speed does not depend on
   the values of the weights. For each: MP/s of :func:`falsecl.inference.raster.predict_raster` (read, normalise,
   forward, blend, write a tiled GeoTIFF), and the ratio of that time to pure batched forward passes over the same
   windows (same batch size, same precision, in the same process). A ratio near 1 means reading, blending and
   writing hide behind the model's arithmetic.
2. **Peak RSS of predict** at 2k, 5k and 10k (it must stay flat: nothing grows with the image). The sweep of every
   size runs with the *tiny stand-in network* (a test of the I/O path only; its speed says nothing about the
   real model), and the smallest size also with the real model (its activations are a constant on top).
3. **Peak RSS of evaluate** on a synthetic 6000 x 6000 4-band tile with an index mask: the confusion matrix is
   accumulated block by block (tiny stand-in network, plus the real model with ``--eval-real``).

Usage::

    python benchmarks/inference_speed.py                 # everything (tens of minutes on 2 CPU cores)
    python benchmarks/inference_speed.py --quick         # small images, ResNet-18 only, a few minutes
    python benchmarks/inference_speed.py --only speed --archs resnet18 --strides 16 --speed-size 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window
from torch import nn

from falsecl.inference import SlidingWindowPredictor
from falsecl.inference.raster import predict_raster
from falsecl.tiling import window_starts

BANDS, CLASSES = 4, 6
MEAN, STD = [100.0, 110.0, 120.0, 90.0], [40.0, 40.0, 40.0, 30.0]
WINDOW, OVERLAP = 512, 0.25


def tiny_model() -> nn.Module:
    """I/O-path stand-in: a stride-2 stem, one 3x3 conv, bilinear upsampling (not a segmentation model)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(BANDS, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, CLASSES, 3, padding=1),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
    ).eval()


def real_model(arch: str, output_stride: int) -> nn.Module:
    """DeepLabv3+ as fine-tuned by falsecl, with random weights (no download)."""
    from falsecl.models.segmentation import build_deeplabv3plus

    torch.manual_seed(0)
    return build_deeplabv3plus(arch, BANDS, CLASSES, output_stride).eval()


def make_geotiff(path: Path, size: int, mask: Path | None = None) -> None:
    """Write a ``size x size`` 4-band uint8 GeoTIFF (tiled, DEFLATE) strip by strip; optionally an index mask."""
    profile = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "dtype": "uint8",
        "crs": CRS.from_epsg(32640),
        "transform": from_origin(300000, 2800000, 0.3, 0.3),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    rng = np.random.default_rng(0)
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile, count=BANDS) as dst:
        msk = rasterio.open(mask, "w", **profile, count=1) if mask is not None else None
        for r in range(0, size, 1024):
            h = min(1024, size - r)
            y = np.arange(r, r + h, dtype=np.float32)[:, None]
            base = 120 + 60 * np.sin(x[None, :] / 97.0) * np.cos(y / 131.0)
            strip = np.stack([base + 20 * b for b in range(BANDS)])
            strip += rng.normal(0, 8, size=strip.shape).astype(np.float32)
            dst.write(np.clip(strip, 0, 255).astype(np.uint8), window=Window(0, r, size, h))
            if msk is not None:
                msk.write(((base // 25) % CLASSES).astype(np.uint8)[None], window=Window(0, r, size, h))
        if msk is not None:
            msk.close()


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _predictor(model: nn.Module, precision: str, batch_size: int) -> SlidingWindowPredictor:
    return SlidingWindowPredictor(
        model, window=WINDOW, overlap=OVERLAP, batch_size=batch_size, mean=MEAN, std=STD, precision=precision
    )


def child_speed(args: argparse.Namespace) -> dict[str, Any]:
    """predict_raster time, then pure batched forward passes over the same windows, same process."""
    model = real_model(args.arch, args.os) if args.arch != "tiny" else tiny_model()
    pred = _predictor(model, args.precision, args.batch_size)
    src, dst = Path(args.src), Path(args.dst)
    with rasterio.open(src) as ds:
        size = ds.height
    w = min(WINDOW, size)
    starts = window_starts(size, WINDOW, pred.stride)
    x = torch.randn(args.batch_size, BANDS, w, w)
    # Warm-up with the batch shapes both runs use: oneDNN builds its kernels on the first call of a shape.
    for j in range(0, len(starts), args.batch_size):
        pred._forward(x[: min(args.batch_size, len(starts) - j)])
    start = time.perf_counter()
    predict_raster(pred, src, dst, overwrite=True, progress=False)
    predict_s = time.perf_counter() - start
    rss = _rss_mib()
    start = time.perf_counter()
    for _ in starts:  # one band of windows per row start, batched as predict batches them
        for j in range(0, len(starts), args.batch_size):
            pred._forward(x[: min(args.batch_size, len(starts) - j)])
    forward_s = time.perf_counter() - start
    return {"predict_s": predict_s, "forward_s": forward_s, "windows": len(starts) ** 2, "peak_rss_mib": rss}


def child_rss(args: argparse.Namespace) -> dict[str, Any]:
    model = real_model(args.arch, args.os) if args.arch != "tiny" else tiny_model()
    start = time.perf_counter()
    predict_raster(
        _predictor(model, args.precision, args.batch_size), args.src, args.dst, overwrite=True, progress=False
    )
    return {"seconds": time.perf_counter() - start, "peak_rss_mib": _rss_mib()}


def child_eval(args: argparse.Namespace) -> dict[str, Any]:
    from falsecl.datasets.io import read_window
    from falsecl.inference.evaluation import EvalSample, confusion_of_samples

    model = real_model(args.arch, args.os) if args.arch != "tiny" else tiny_model()
    pred = _predictor(model, args.precision, args.batch_size)
    img, msk = Path(args.src), Path(args.dst)
    with rasterio.open(img) as ds:
        h, w = ds.height, ds.width

    def read_image(r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        return torch.from_numpy(read_window(img, r0, c0, r1 - r0, c1 - c0).astype(np.float32))

    def read_mask(r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        return torch.from_numpy(read_window(msk, r0, c0, r1 - r0, c1 - c0)[0].astype(np.int64))

    start = time.perf_counter()
    cm = confusion_of_samples(pred, [EvalSample("synthetic", h, w, BANDS, read_image, read_mask)], CLASSES)
    return {"seconds": time.perf_counter() - start, "pixels": int(cm.sum()), "peak_rss_mib": _rss_mib()}


def run_child(kind: str, **kw: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind]
    for key, value in kw.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="512 px speed image, ResNet-18 only, RSS at 1k/2k, eval 2k")
    p.add_argument("--only", choices=["speed", "rss", "eval"], nargs="+", default=["speed", "rss", "eval"])
    p.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--strides", type=int, nargs="+", default=[8, 16])
    p.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    p.add_argument("--speed-size", type=int, default=1024, help="side of the speed image")
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000], help="sides for predict RSS")
    p.add_argument("--real-rss-size", type=int, default=2000, help="side for the real-model RSS run (0: skip)")
    p.add_argument("--eval-size", type=int, default=6000)
    p.add_argument("--eval-real", action="store_true", help="also evaluate with DeepLabv3+ R18 OS16 bf16 (slow)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--child", choices=["speed", "rss", "eval"], help=argparse.SUPPRESS)
    for name in ("src", "dst", "arch", "precision"):
        p.add_argument(f"--{name}", help=argparse.SUPPRESS)
    p.add_argument("--os", type=int, default=8, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        torch.set_num_threads(args.threads)
        print(json.dumps({"speed": child_speed, "rss": child_rss, "eval": child_eval}[args.child](args)))
        return
    if args.quick:
        args.archs, args.speed_size, args.sizes, args.eval_size = ["resnet18"], 512, [1000, 2000], 2000
        args.real_rss_size = 1000
    common = {"threads": args.threads, "batch_size": args.batch_size}
    results: dict[str, Any] = {"window": WINDOW, "overlap": OVERLAP, **common}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        if "speed" in args.only:
            src = tmpdir / "speed.tif"
            make_geotiff(src, args.speed_size)
            mp = args.speed_size**2 / 1e6
            rows = []
            print(f"\n## predict speed, {args.speed_size} x {args.speed_size} x {BANDS} bands, window {WINDOW}, "
                  f"overlap {OVERLAP}, batch {args.batch_size}, {args.threads} threads, random weights")  # fmt: skip
            print("| model | output stride | precision | predict MP/s | predict / forward | peak RSS MiB |")
            print("|---|---|---|---|---|---|", flush=True)
            for arch in args.archs:
                for stride in args.strides:
                    for prec in args.precisions:
                        m = run_child("speed", src=src, dst=tmpdir / "o.tif", arch=arch, os=stride, precision=prec,
                                      **common)  # fmt: skip
                        row = {"arch": arch, "os": stride, "precision": prec, "mp_s": mp / m["predict_s"],
                               "ratio": m["predict_s"] / m["forward_s"], **m}  # fmt: skip
                        rows.append(row)
                        print(f"| DeepLabv3+ {arch} | {stride} | {prec} | {row['mp_s']:.3f} | {row['ratio']:.2f} "
                              f"| {m['peak_rss_mib']:.0f} |", flush=True)  # fmt: skip
            results["speed"] = rows
        if "rss" in args.only:
            rows = []
            print("\n## predict peak RSS (tiny network = I/O-path test only; real = DeepLabv3+ R18 OS16 bf16)")
            print("| network | size | peak RSS MiB | MP/s |")
            print("|---|---|---|---|", flush=True)
            runs = [("tiny", s) for s in args.sizes]
            if args.real_rss_size:
                runs.append(("resnet18", args.real_rss_size))
            for arch, size in runs:
                src = tmpdir / f"rss_{size}.tif"
                if not src.exists():
                    make_geotiff(src, size)
                m = run_child("rss", src=src, dst=tmpdir / "r.tif", arch=arch, os=16, precision="bf16-mixed", **common)
                rows.append({"arch": arch, "size": size, **m})
                label = "tiny (I/O path)" if arch == "tiny" else "DeepLabv3+ R18 OS16 bf16"
                print(
                    f"| {label} | {size} | {m['peak_rss_mib']:.0f} | {size**2 / 1e6 / m['seconds']:.2f} |", flush=True
                )
            for size in {s for _, s in runs}:
                (tmpdir / f"rss_{size}.tif").unlink(missing_ok=True)
            results["rss"] = rows
        if "eval" in args.only:
            img, msk = tmpdir / "eval.tif", tmpdir / "eval_mask.tif"
            make_geotiff(img, args.eval_size, mask=msk)
            rows = []
            print(f"\n## evaluate peak RSS, one {args.eval_size} x {args.eval_size} x {BANDS} tile (streamed)")
            print("| network | peak RSS MiB | seconds | pixels counted |")
            print("|---|---|---|---|", flush=True)
            for arch in ["tiny", "resnet18"] if args.eval_real else ["tiny"]:
                m = run_child("eval", src=img, dst=msk, arch=arch, os=16, precision="bf16-mixed", **common)
                rows.append({"arch": arch, **m})
                label = "tiny (I/O path)" if arch == "tiny" else "DeepLabv3+ R18 OS16 bf16"
                print(f"| {label} | {m['peak_rss_mib']:.0f} | {m['seconds']:.1f} | {m['pixels']} |", flush=True)
            results["eval"] = rows
    print("\n" + json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
