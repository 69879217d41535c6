"""A generic folder of images and masks with a small palette file: no code needed for new or private data.

Layout (``<root>/<split>/`` sub-folders are optional; without them the whole folder is the split ``"all"``)::

    root/
      palette.yaml            # or palette.json, or pass palette=...
      [<split>/]images/*.{jpg,png,tif}
      [<split>/]masks/<same stem>.{png,tif}

Palette file: class name -> colour, in class order. A colour is ``[r, g, b]``, ``"#rrggbb"`` or a list of
those (several colours for one class); an integer value means index masks (the pixel value of that class). The
name ``ignore`` maps its colours/values to the ignore index 255::

    building: [60, 16, 152]
    road: "#6ec1e4"
    ignore: [[155, 155, 155], [0, 0, 0]]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from falsecl.datasets.base import SampleFiles, SegmentationDataset
from falsecl.datasets.display import Colour
from falsecl.datasets.errors import DatasetError, DatasetNotFoundError
from falsecl.datasets.io import IGNORE_INDEX, IMAGE_SUFFIXES

MASK_SUFFIXES = (".png", ".tif", ".tiff")


def _colour(value: Any, path: Path, name: str) -> Colour:
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
    if (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(v, int) and 0 <= v <= 255 for v in value)
    ):
        return (int(value[0]), int(value[1]), int(value[2]))
    raise DatasetError(
        f"palette {path}: class {name!r} has colour {value!r}; write [r, g, b] with 0..255 integers or "
        "'#rrggbb'."
    )


def load_palette(path: str | Path) -> tuple[list[str], dict[Colour, int] | dict[int, int], list[Colour]]:
    """Read a palette file (YAML or JSON).

    Args:
        path: The palette file.

    Returns:
        ``(class names, table, display colours)`` where ``table`` maps RGB colours (colour masks) or integer
        values (index masks) to class indices (255 for ``ignore``).

    Raises:
        DatasetNotFoundError: The file does not exist.
        DatasetError: Malformed file or mixed colour/index entries.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(
            f"palette file {path} not found. Fix: write a YAML/JSON file 'class name: [r, g, b]' "
            "(docs/data.md)."
        )
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text())
        else:
            import yaml

            raw = yaml.safe_load(path.read_text())
    except Exception as err:  # noqa: BLE001 - any parser error is reported with the file name
        raise DatasetError(f"palette {path} cannot be parsed: {err}") from err
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f"palette {path} must be a non-empty mapping 'class name: colour'.")
    names = [str(k) for k in raw if str(k).lower() != "ignore"]
    # Index masks iff classes are given as bare integers; colours are [r, g, b] lists or '#rrggbb' strings.
    index_mode = any(isinstance(v, int) for k, v in raw.items() if str(k).lower() != "ignore")
    table: dict[Any, int] = {}
    display: list[Colour] = []
    for key, value in raw.items():
        cls = IGNORE_INDEX if str(key).lower() == "ignore" else names.index(str(key))
        if index_mode:
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, int) and 0 <= v <= 255 for v in values):
                raise DatasetError(f"palette {path}: class {key!r} value {value!r} is not an integer 0..255.")
            table.update({int(v): cls for v in values})
            if cls != IGNORE_INDEX:
                display.append(_default_colour(cls))
            continue
        many = isinstance(value, list) and value and isinstance(value[0], list | tuple | str)
        colours = [_colour(v, path, str(key)) for v in value] if many else [_colour(value, path, str(key))]
        for c in colours:
            if c in table:
                raise DatasetError(
                    f"palette {path}: colour {c} is listed twice; each colour needs one class."
                )
            table[c] = cls
        if cls != IGNORE_INDEX:
            display.append(colours[0])
    if not names:
        raise DatasetError(f"palette {path} lists no class besides 'ignore'.")
    return names, table, display


def _default_colour(i: int) -> Colour:
    import matplotlib

    r, g, b = matplotlib.colormaps["tab20"](i % 20)[:3]
    return (int(r * 255), int(g * 255), int(b * 255))


class FolderDataset(SegmentationDataset):
    """Images + masks + palette file; see the module docstring for the layout.

    Args:
        root: Dataset folder.
        split: A sub-folder name of ``root`` holding ``images/`` and ``masks/``, or ``"all"`` for a flat root.
        patch_size: Patch size; ``None`` for whole images.
        stride: Step between patches.
        padding: Tiling policy.
        bands: Band indices to keep (``None``: all).
        palette: Palette file; default ``<root>/palette.yaml``, ``.yml`` or ``.json``.
    """

    name = "folder"
    splits = ()  # any sub-folder name is a split; "all" is the flat root
    image_pattern = "[<split>/]images/*"
    mask_pattern = "[<split>/]masks/<stem>.png"

    def __init__(
        self,
        root: str,
        split: str = "all",
        patch_size: int | None = 256,
        stride: int | None = None,
        padding: str = "flush",
        bands: Sequence[int] | None = None,
        palette: str | None = None,
    ) -> None:
        root_path = Path(root)
        if palette is None:
            found = [root_path / n for n in ("palette.yaml", "palette.yml", "palette.json")]
            palette_path = next((p for p in found if p.is_file()), found[0])
        else:
            palette_path = Path(palette)
        if root_path.is_dir():
            names, table, display = load_palette(palette_path)
            self.classes = tuple(names)
            self.colours = tuple(display)
            if table and isinstance(next(iter(table)), int):
                self.index_map = dict(table)  # type: ignore[arg-type]
            else:
                self.colours = tuple(display)
                self._table: dict[Colour, int] = dict(table)  # type: ignore[arg-type]
        self.palette_path = palette_path
        super().__init__(root, split, patch_size, stride, padding, bands)  # type: ignore[arg-type]

    @property
    def palette(self) -> dict[Colour, int]:
        """Colour -> class index table from the palette file."""
        return {} if self.index_map else self._table

    def _carves_val(self) -> bool:
        # Split folders without val/: validation is a seeded carve of train/ (by image).
        return (self.root / "train").is_dir() and not (self.root / "val").is_dir()

    @classmethod
    def default_split(cls, root: str | Path) -> str:
        """``"all"`` for a flat root with ``images/``, else ``"train"``."""
        return "all" if (Path(root) / "images").is_dir() else "train"

    def _find_files(self) -> list[SampleFiles]:
        base = self.root if self.split == "all" else self.root / self.split
        if self.split == "all" and not (base / "images").is_dir():
            raise DatasetNotFoundError(
                f"FolderDataset: no {base / 'images'} folder. Fix: put images in images/ and masks in "
                "masks/, or "
                "name the split sub-folder (--split train)."
            )
        images_dir = self._require(base / "images", "image folder")
        masks_dir = self._require(base / "masks", "mask folder")
        images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        out = []
        for image in images:
            candidates = [masks_dir / (image.stem + s) for s in MASK_SUFFIXES]
            mask = next((m for m in candidates if m.exists()), None)
            if mask is None:
                raise DatasetNotFoundError(
                    f"FolderDataset: image {image} has no mask {masks_dir / image.stem}.png (or .tif). Fix: "
                    "add the "
                    "mask with the same file stem, or move the image out of the folder."
                )
            out.append(SampleFiles(image, mask, image.stem))
        return out
