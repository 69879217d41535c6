"""Peak memory (RSS) of polygonising a large class map, as ``falsecl predict --vector`` does.

Writes a synthetic ``size x size`` uint8 class map (5 classes in smooth wavy regions, 0.2 % speckle, a nodata
band; tiled GeoTIFF, UTM 40N, 0.5 m pixels) and a confidence raster, written strip by strip, then runs
:func:`falsecl.inference.vector.polygonize_class_map` in a fresh process and prints its peak RSS next to that of
the same process after its imports (falsecl.inference imports torch), and the size of the map held as one uint8 array.

    PYTHONPATH=src python benchmarks/vector_memory.py --size 10000 --min_area 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, resource, sys, time
import numpy, scipy.ndimage, scipy.sparse.csgraph, shapely, pyogrio, rasterio, rasterio.features
from falsecl.inference.vector import polygonize_class_map  # imports torch with falsecl.inference
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[1] == "run":
    t = time.perf_counter()
    r = polygonize_class_map(sys.argv[2], sys.argv[3], ["water", "land", "road", "building", "vegetation"],
                             confidence=sys.argv[4], min_area=float(sys.argv[5]), simplify=float(sys.argv[6]),
                             overwrite=True)
    out = {"features": r.features, "removed": r.removed_regions, "strips": r.strips, "seconds": time.perf_counter() - t}
else:
    out = {}
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["import_rss_mb"] = base / 1024
print(json.dumps(out))
"""


def write_maps(folder: Path, size: int, seed: int = 0) -> tuple[Path, Path]:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    profile = dict(
        driver="GTiff",
        height=size,
        width=size,
        count=1,
        dtype="uint8",
        crs="EPSG:32640",
        transform=from_origin(300_000, 2_780_000, 0.5, 0.5),
        nodata=255,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
    )
    paths = folder / "classes.tif", folder / "confidence.tif"
    with rasterio.open(paths[0], "w", **profile) as cls, rasterio.open(paths[1], "w", **profile) as conf:
        step = 512
        x = np.arange(size, dtype=np.float32)
        for r0 in range(0, size, step):
            y = np.arange(r0, min(r0 + step, size), dtype=np.float32)[:, None]
            v = np.sin(x / 300 + np.sin(y / 200)) + np.cos(y / 250 + 0.5 * np.sin(x / 150))
            k = np.digitize(v, [-1.2, -0.4, 0.4, 1.2]).astype(np.uint8)
            speck = rng.random(k.shape) < 0.002
            k[speck] = rng.integers(0, 5, size=int(speck.sum()))
            c = (50 + 50 * np.abs(np.tanh(v))).astype(np.uint8)
            if r0 < step:  # a nodata border at the top
                k[:64], c[:64] = 255, 255
            window = Window(0, r0, size, k.shape[0])
            cls.write(k, 1, window=window)
            conf.write(c, 1, window=window)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--min_area", type=float, default=2.0, help="square metres (0.25 m2 pixels)")
    parser.add_argument("--simplify", type=float, default=0.0)
    parser.add_argument("--out", type=str, default=None, help="keep the polygons here (default: temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        classes, confidence = write_maps(Path(tmp), args.size)
        print(f"synthetic {args.size} x {args.size} maps written in {time.perf_counter() - start:.1f} s")
        out = args.out or str(Path(tmp) / "polygons.gpkg")
        run = json.loads(
            subprocess.check_output(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    "run",
                    str(classes),
                    out,
                    str(confidence),
                    str(args.min_area),
                    str(args.simplify),
                ]
            )
        )
        whole = args.size * args.size / 2**20
        print(
            f"features {run['features']}, regions sieved away {run['removed']}, strips {run['strips']}, "
            f"{run['seconds']:.1f} s"
        )
        added = run["peak_rss_mb"] - run["import_rss_mb"]
        print(
            f"peak RSS {run['peak_rss_mb']:.0f} MB, of which {added:.0f} MB above the process after its imports "
            f"({run['import_rss_mb']:.0f} MB); the map as one uint8 array: {whole:.0f} MB, as int64 labels: "
            f"{8 * whole:.0f} MB"
        )


if __name__ == "__main__":
    main()
