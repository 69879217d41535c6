"""Sparse polygon labels from the bundled Dubai training masks, as a GIS user would digitise them.

The Dubai images carry no georeferencing, so this script gives each one a *synthetic* placement: UTM zone 40N
(EPSG:32640, the zone of Dubai), 0.5 m pixels, each image at its own origin 2 km from the next. It writes

* ``<out>/scenes/``: every image of the training tiles as a tiled GeoTIFF (the imagery to pretrain on and to
  fine-tune from),
* ``<out>/test_scenes/``: the test tiles' images as GeoTIFFs (for ``predict --vector``),
* ``<out>/labels.gpkg``: polygons with a ``class`` attribute, in WGS 84 (EPSG:4326, another CRS than the
  scenes), cut from the masks of a few training images only: random squares of ``--square`` pixels, each
  polygonised by class, until the polygons cover ``--share`` of the training tiles' pixels.

    python docs/examples/make_sparse_polygons.py --out runs/vector_example --share 0.02
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely
from affine import Affine
from PIL import Image
from rasterio import features
from rasterio.warp import transform_geom

from falsecl.datasets import DubaiAerial

SCENE_CRS = "EPSG:32640"
PIXEL = 0.5


def placement(index: int) -> Affine:
    """Synthetic transform of image ``index``: 0.5 m pixels, origins 2 km apart along a row."""
    return Affine(PIXEL, 0.0, 300_000.0 + 2_000.0 * index, 0.0, -PIXEL, 2_780_000.0)


def write_scene(image: Path, path: Path, transform: Affine) -> tuple[int, int]:
    """Write a Dubai JPEG as a georeferenced RGB GeoTIFF; returns its (height, width)."""
    rgb = np.asarray(Image.open(image).convert("RGB")).transpose(2, 0, 1)
    profile = dict(driver="GTiff", height=rgb.shape[1], width=rgb.shape[2], count=3, dtype="uint8",
                   crs=SCENE_CRS, transform=transform, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", photometric="RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rgb)
    return rgb.shape[1], rgb.shape[2]


def scene_name(image: Path) -> str:
    """File name of the scene written for a Dubai image (``Tile5_image_part_003.tif``)."""
    return f"{image.parent.parent.name.replace(' ', '')}_{image.stem}.tif"


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Write the scenes and the sparse polygons; returns what was written (counts, labelled share)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/dubai_aerial")
    parser.add_argument("--out", default="runs/vector_example")
    parser.add_argument("--share", type=float, default=0.02, help="labelled share of the training tiles' pixels")
    parser.add_argument("--square", type=int, default=64, help="side of each digitised square (pixels)")
    parser.add_argument("--masks_per_tile", type=int, default=2, help="training images per tile that get polygons")
    parser.add_argument("--scenes_per_tile", type=int, default=None, help="images per tile written (default all)")
    parser.add_argument("--test_tiles", type=int, nargs="*", default=[3, 8])
    parser.add_argument("--train_tiles", type=int, nargs="*", default=list(DubaiAerial.split_tiles["train"]))
    parser.add_argument("--label_crs", default="EPSG:4326")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out, rng = Path(args.out), np.random.default_rng(args.seed)
    train = DubaiAerial(args.root, split="train", patch_size=None)  # the dataset's own mask decoding
    by_tile: dict[str, list[int]] = {}
    for i, f in enumerate(train.files):
        if int(f.tile.removeprefix("tile")) in args.train_tiles:
            by_tile.setdefault(f.tile, []).append(i)
    chosen: list[int] = []
    for tile, indices in sorted(by_tile.items()):
        keep = indices[: args.scenes_per_tile] if args.scenes_per_tile else indices
        by_tile[tile] = keep
        chosen += [int(i) for i in rng.choice(keep, size=min(args.masks_per_tile, len(keep)), replace=False)]
    transforms, total = {}, 0
    for n, i in enumerate(i for keep in by_tile.values() for i in keep):
        transforms[i] = placement(n)
        h, w = write_scene(train.files[i].image, out / "scenes" / scene_name(train.files[i].image), transforms[i])
        total += h * w
    # Squares until the share is reached, spread over the chosen images in turn.
    budget, labelled, geoms, values = args.share * total, 0, [], []
    masks = {i: train.read_mask(i) for i in chosen}  # whole images: patch i is image i
    taken = {i: np.zeros(masks[i].shape, bool) for i in chosen}
    for attempt in range(100_000):
        if labelled >= budget:
            break
        i = chosen[attempt % len(chosen)]
        mask, s = masks[i], args.square
        r, c = int(rng.integers(0, mask.shape[0] - s)), int(rng.integers(0, mask.shape[1] - s))
        if taken[i][r : r + s, c : c + s].any():
            continue
        window = mask[r : r + s, c : c + s]
        valid = window != 255
        if not valid.any():
            continue
        taken[i][r : r + s, c : c + s] = True
        t = transforms[i] * Affine.translation(c, r)
        for geom, value in features.shapes(window.astype(np.uint8), mask=valid, transform=t):
            geoms.append(shapely.geometry.shape(transform_geom(SCENE_CRS, args.label_crs, geom)))
            values.append(train.classes[int(value)])
        labelled += int(valid.sum())
    out.mkdir(parents=True, exist_ok=True)
    labels = out / "labels.gpkg"
    labels.unlink(missing_ok=True)
    pyogrio.raw.write(labels, np.array([shapely.to_wkb(g) for g in geoms], dtype=object),
                      [np.array(values, dtype=object)], ["class"], layer="labels", geometry_type="Polygon",
                      crs=args.label_crs, driver="GPKG",
                      dataset_options={"VERSION": "1.2"})  # GDAL 3.6 (QGIS 3.22) reads 1.2 without a warning
    for tile in args.test_tiles:
        images = sorted((Path(args.root) / f"Tile {tile}" / "images").glob("*.jpg"))
        for k, image in enumerate(images[: args.scenes_per_tile] if args.scenes_per_tile else images):
            write_scene(image, out / "test_scenes" / scene_name(image), placement(1000 + 100 * tile + k))
    summary = {"scenes": sum(len(v) for v in by_tile.values()), "polygons": len(geoms),
               "labelled_pixels": labelled, "scene_pixels": total, "labelled_share": labelled / max(total, 1),
               "images_with_polygons": [scene_name(train.files[i].image) for i in chosen],
               "labels": str(labels), "classes": list(train.classes)}
    (out / "sparse_polygons.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
