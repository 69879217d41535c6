"""Patch read speed and peak memory for a large 4-band GeoTIFF (the ISPRS Potsdam case, 6000 x 6000 px).

Writes a synthetic tile (image + RGB colour label, tiled and striped variants) to a temporary folder in row
blocks, so writing never holds the whole tile, then reads every 256 x 256 window:

* raw image windows through ``falsecl.datasets.io.read_window`` (tiled and striped GeoTIFF, sequential and
  shuffled order);
* full samples ``{"image", "mask"}`` through ``PotsdamTiles`` (image window + colour-mask decoding).

Each case runs in a fresh process; it prints patches/s and that process's peak resident memory, next to the
size of the whole tile in memory, to show that windowed reading never loads the tile (falsecl caps GDAL's
block cache at 64 MiB per process unless ``GDAL_CACHEMAX`` is set). Usage::

    python benchmarks/read_speed.py [--size 6000] [--patch 256] [--bands 4]
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def write_tile(path: Path, size: int, bands: int, tiled: bool, label: bool = False) -> None:
    """Write a synthetic uint8 GeoTIFF in blocks of 512 rows (memory stays a few MiB)."""
    profile = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "count": 3 if label else bands,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": Affine(0.05, 0.0, 368000.0, 0.0, -0.05, 5808000.0),
    }
    if tiled:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    colours = np.array([(255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)])
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 512):
            h = min(512, size - row)
            if label:
                classes = rng.integers(0, 6, size=(h // 8 + 1, size // 8 + 1))
                idx = np.kron(classes, np.ones((8, 8), dtype=np.int64))[:h, :size]
                block = colours[idx].transpose(2, 0, 1).astype(np.uint8)
            else:
                block = rng.integers(0, 256, size=(bands, h, size), dtype=np.uint8)
            dst.write(block, window=rasterio.windows.Window(0, row, size, h))


CASES = {
    "tiled": "read_window, tiled GeoTIFF (256 x 256 blocks), row order",
    "tiled-shuffled": "read_window, tiled GeoTIFF, shuffled order",
    "striped": "read_window, striped GeoTIFF, row order",
    "striped-shuffled": "read_window, striped GeoTIFF, shuffled order",
    "dataset": "PotsdamTiles[i]: image + colour mask -> class index",
    "dataset-shuffled": "PotsdamTiles[i], shuffled order",
}


def run_case(root: Path, case: str, patch: int) -> None:
    """Read every window once in this (fresh) process and print patches/s and peak memory."""
    from falsecl.datasets import PotsdamTiles
    from falsecl.datasets.io import read_window

    base_rss = peak_rss_mib()
    path = root / (
        "striped.tif" if case.startswith("striped") else "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif"
    )
    ds = PotsdamTiles(root, patch_size=patch, tiles=["2_10"])
    order = list(range(len(ds)))
    if case.endswith("shuffled"):
        random.Random(0).shuffle(order)
    start = time.perf_counter()
    for i in order:
        if case.startswith("dataset"):
            ds[i]
        else:
            p = ds.patches[i]
            read_window(path, p.row, p.col, p.height, p.width)
    elapsed = time.perf_counter() - start
    print(
        f"{CASES[case]:<56} {len(order) / elapsed:8.1f} patches/s  ({len(order)} in {elapsed:.2f} s)  "
        f"peak RSS {peak_rss_mib():6.1f} MiB (after imports {base_rss:6.1f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=6000)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=sorted(CASES), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.root is not None and args.case is not None:
        run_case(args.root, args.case, args.patch)
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "4_Ortho_RGBIR").mkdir()
        (root / "5_Labels_all").mkdir()
        t0 = time.perf_counter()
        write_tile(root / "4_Ortho_RGBIR" / "top_potsdam_2_10_RGBIR.tif", args.size, args.bands, tiled=True)
        write_tile(root / "striped.tif", args.size, args.bands, tiled=False)
        write_tile(
            root / "5_Labels_all" / "top_potsdam_2_10_label.tif", args.size, args.bands, True, label=True
        )
        whole_mib = args.size * args.size * args.bands / 2**20
        print(
            f"synthetic {args.size} x {args.size} x {args.bands}-band uint8 GeoTIFF written in "
            f"{time.perf_counter() - t0:.1f} s; the whole tile would take {whole_mib:.0f} MiB as uint8 and "
            f"{4 * whole_mib:.0f} MiB as float32 in memory"
        )
        # One fresh process per case: a cold GDAL block cache and an honest peak RSS for each.
        for case in CASES:
            cmd = [sys.executable, __file__, "--root", tmp, "--case", case, "--patch", str(args.patch)]
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
