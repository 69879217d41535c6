"""Writers of tiny fake datasets in the exact on-disk layouts falsecl reads (used by the data-layer tests).

Every function writes into a given folder and returns it; images are small (e.g. 64 x 48) so a test suite can
build many layouts in milliseconds. Masks are drawn from the real class colours/values of each dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

DUBAI_COLOURS = [(60, 16, 152), (132, 41, 246), (110, 193, 228), (254, 221, 58), (226, 169, 41)]
DUBAI_IGNORE = [(155, 155, 155), (0, 0, 0)]
ISPRS_COLOURS = [(255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)]
DEEPGLOBE_COLOURS = [(0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255)]


def class_map(height: int, width: int, num_values: int, seed: int) -> np.ndarray:
    """Blocky random class map (8 x 8 blocks) with values in 0..num_values-1."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, num_values, size=(-(-height // 8), -(-width // 8)))
    return np.kron(small, np.ones((8, 8), dtype=np.int64))[:height, :width]


def colour_mask(index: np.ndarray, colours: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Index map (H, W) -> RGB (H, W, 3) uint8."""
    return np.asarray(colours, dtype=np.uint8)[index]


def rgb_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_geotiff(path: Path, array: np.ndarray, crs: str | None = "EPSG:32633", tiled: bool = False) -> Path:
    """Write (C, H, W) as a GeoTIFF (with a CRS and a 5 cm transform unless ``crs`` is None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c, h, w = array.shape
    profile = {"driver": "GTiff", "height": h, "width": w, "count": c, "dtype": array.dtype.name}
    if crs is not None:
        profile.update(crs=crs, transform=Affine(0.05, 0.0, 368000.0, 0.0, -0.05, 5808000.0))
    if tiled:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_jpg(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)
    return path


def make_dubai(
    root: Path, tiles: Sequence[int] = range(1, 9), per_tile: int = 1, size: tuple[int, int] = (48, 64)
) -> Path:
    """``Tile N/images/image_part_00K.jpg`` + ``Tile N/masks/image_part_00K.png`` (H x W = ``size``)."""
    h, w = size
    for t in tiles:
        for k in range(1, per_tile + 1):
            seed = 100 * t + k
            write_jpg(root / f"Tile {t}" / "images" / f"image_part_00{k}.jpg", rgb_image(h, w, seed))
            idx = class_map(h, w, 7, seed)
            write_png(
                root / f"Tile {t}" / "masks" / f"image_part_00{k}.png",
                colour_mask(idx, DUBAI_COLOURS + DUBAI_IGNORE),
            )
    return root


def make_potsdam_tiles(
    root: Path, tiles: Sequence[str] = ("2_10", "2_13"), size: int = 64, bands: int = 4
) -> Path:
    """``4_Ortho_RGBIR/top_potsdam_<t>_RGBIR.tif`` (4-band uint8 GeoTIFF with CRS) + ``5_Labels_all``
    labels."""
    for i, t in enumerate(tiles):
        rng = np.random.default_rng(i)
        image = rng.integers(0, 256, size=(bands, size, size), dtype=np.uint8)
        write_geotiff(root / "4_Ortho_RGBIR" / f"top_potsdam_{t}_RGBIR.tif", image)
        label = colour_mask(class_map(size, size, 6, i), ISPRS_COLOURS).transpose(2, 0, 1).copy()
        write_geotiff(root / "5_Labels_all" / f"top_potsdam_{t}_label.tif", label)
    return root


def make_isprs_patches(
    root: Path,
    split: str = "train",
    names: Sequence[str] = ("top_potsdam_2_10_0_0", "top_potsdam_2_10_0_1", "top_potsdam_3_11_0_0"),
    size: int = 32,
    bands: int = 4,
) -> Path:
    """``<split>_RGBIR/<name>.tif`` (uint8, plain TIFF without CRS) + ``<split>_lbl/<name>.tif`` colour
    labels."""
    for i, name in enumerate(names):
        image = np.random.default_rng(i).integers(0, 256, size=(bands, size, size), dtype=np.uint8)
        write_geotiff(root / f"{split}_RGBIR" / f"{name}.tif", image, crs=None)
        label = colour_mask(class_map(size, size, 6, i), ISPRS_COLOURS).transpose(2, 0, 1).copy()
        write_geotiff(root / f"{split}_lbl" / f"{name}.tif", label, crs=None)
    return root


def make_mmseg(root: Path, splits: Sequence[str] | None = ("train", "val"), size: int = 64) -> Path:
    """``img_dir[/<split>]/<tile>_<x>_<y>_<x2>_<y2>.png`` + ``ann_dir`` index masks 0..6 (0 = ignore)."""
    for j, split in enumerate(splits if splits is not None else [""]):
        for i, tile in enumerate(("2_10", "3_11")):
            name = f"{tile}_0_0_{size}_{size}.png"
            write_png(root / "img_dir" / split / name, rgb_image(size, size, 10 * j + i))
            write_png(root / "ann_dir" / split / name, class_map(size, size, 7, 10 * j + i).astype(np.uint8))
    return root


def make_deepglobe(
    root: Path, split: str = "train", ids: Sequence[str] = ("100", "200"), size: int = 64
) -> Path:
    """``<split>/<id>_sat.jpg`` + ``<id>_mask.png``; masks carry compression-like noise (250 for 255, 3 for
    0)."""
    for i, ident in enumerate(ids):
        write_jpg(root / split / f"{ident}_sat.jpg", rgb_image(size, size, i))
        rgb = colour_mask(class_map(size, size, 7, i), DEEPGLOBE_COLOURS + [(0, 0, 0)])
        noisy = np.where(rgb == 255, 250, 3).astype(np.uint8)
        write_png(root / split / f"{ident}_mask.png", noisy)
    return root


def make_loveda(root: Path, splits: Sequence[str] = ("Train", "Val"), size: int = 64) -> Path:
    """``<Split>/{Urban,Rural}/{images_png,masks_png}/<n>.png``; masks 0 (no-data) .. 7."""
    n = 0
    for split in splits:
        for scene in ("Urban", "Rural"):
            n += 1
            write_png(root / split / scene / "images_png" / f"{n}.png", rgb_image(size, size, n))
            write_png(
                root / split / scene / "masks_png" / f"{n}.png", class_map(size, size, 8, n).astype(np.uint8)
            )
    return root


def make_folder(root: Path, size: int = 40) -> Path:
    """``images/*.png`` + ``masks/*.png`` + ``palette.yaml`` with a hex colour, an RGB list and an ignore
    colour."""
    (root).mkdir(parents=True, exist_ok=True)
    (root / "palette.yaml").write_text('field: "#00ff00"\nroad: [128, 128, 128]\nignore: [[0, 0, 0]]\n')
    for i in range(2):
        write_png(root / "images" / f"img{i}.png", rgb_image(size, size, i))
        write_png(
            root / "masks" / f"img{i}.png",
            colour_mask(class_map(size, size, 3, i), [(0, 255, 0), (128, 128, 128), (0, 0, 0)]),
        )
    return root
