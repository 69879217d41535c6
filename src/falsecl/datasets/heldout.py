"""Held-out rules in one place: which images must never be seen by pretraining, or trained on.

Validation data chooses the checkpoint and test data is what a paper reports, so neither may reach the encoder
or the training loss, however the data is pointed at: a folder above the dataset, a tile folder inside it, a
single file, or a symlink with another name (the resolved target is judged). Three rules, in this order:

1. **Dataset layouts**, recognised by their marker folders wherever they sit (the folder given, one above it or
   one inside it; not by the folder's own name): the images of their validation and test splits as the dataset
   class itself defines them, the seeded validation carve of :func:`falsecl.datasets.subsets.carve_tiles`
   included (Dubai ``Tile 2``, ``3``, ``8``; Potsdam's 3 carved and 14 test tiles in every product folder; a
   labelled ``folder`` root's carved ``train/`` images and ``val/``, ``test/`` ...).
2. **The official ISPRS test tiles by file name**: Potsdam ``top_potsdam_<r>_<c>*``/``dsm_potsdam_<r>_<c>*``
   (zero-padded ``02_13`` too), Vaihingen ``top_mosaic_09cm_area<N>*``/``dsm_09cm_matching_area<N>*``, and
   mmsegmentation's crops of them (``2_13_0_0_512_512.png``, ``area2_0_0_512_512.png``).
3. **Folders named like a held-out split**, the given root included: ``test``, ``testing``, ``Test-Set``,
   ``val``, ``valid``, ``validation_set``, ``holdout``, ``held_out``, ``test_RGBIR`` ...

Label folders and files (``masks/``, ``5_Labels_all_noBoundary/``, ``*_label_noBoundary.tif``, ``gts*`` ...) are
never imagery, whatever ``include_held_out`` says.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from falsecl.datasets.base import SegmentationDataset
from falsecl.datasets.deepglobe import DeepGlobeLandCover
from falsecl.datasets.dubai import DubaiAerial
from falsecl.datasets.errors import DatasetError, DatasetNotFoundError
from falsecl.datasets.folder import FolderDataset
from falsecl.datasets.isprs import (
    POTSDAM_TEST,
    POTSDAM_TRAIN,
    VAIHINGEN_TEST,
    ISPRSMMSeg,
    PotsdamTiles,
    VaihingenPatches,
)
from falsecl.datasets.loveda import LoveDA
from falsecl.datasets.subsets import carve_tiles

log = logging.getLogger(__name__)

#: Folder-name words of a held-out split (a name is split into words at ``-``, ``_``, spaces and dots).
HELD_OUT_WORDS = frozenset({"test", "tests", "testing", "val", "valid", "validation", "holdout", "heldout"})
#: Folder-name words of label folders (``masks_png``, ``ann_dir``, ``5_Labels_all_noBoundary``, ``*_lbl``).
LABEL_DIR_WORDS = frozenset({"mask", "masks", "label", "labels", "lbl", "ann", "annotations", "gt", "gts"})
#: File-name words of label files (``*_mask.png``, ``top_potsdam_2_10_label_noBoundary.tif``).
LABEL_FILE_WORDS = frozenset({"mask", "label", "lbl"})

_POTSDAM_TILE = re.compile(r"^(?:top|dsm)_potsdam_0*(\d+)_0*(\d+)(?:_|$)", re.IGNORECASE)
_VAIHINGEN_AREA = re.compile(r"^(?:top_mosaic|dsm)_09cm_(?:matching_)?area0*(\d+)(?:\D|$)", re.IGNORECASE)
# mmsegmentation's conversion names crops <tile>_<x0>_<y0>_<x1>_<y1>: "2_13_0_0_512_512", "area2_0_0_512_512".
_MMSEG_POTSDAM = re.compile(r"^0*(\d+)_0*(\d+)(?:_\d+){4}$")
_MMSEG_VAIHINGEN = re.compile(r"^area0*(\d+)(?:_\d+){4}$", re.IGNORECASE)
#: How far above an image its dataset's root may sit (LoveDA: ``Train/Urban/images_png/x.png``).
_LAYOUT_DEPTH = 4


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


#: Words that may accompany a held-out word in a folder that is nothing but a split (``Test-Set``, ``val_images``).
_SPLIT_FILLER = frozenset({"set", "split", "data", "images", "imgs", "img", "tiles", "rgbir", "rgb", "dir"})


def is_held_out_dir(name: str, whole: bool = False) -> bool:
    """Whether a folder name says it holds a validation or test split (``Test-Set``, ``validation_set`` ...).

    Args:
        name: The folder name.
        whole: Require the name to be nothing but a split name (``testing``, ``Test-Set``, ``val_images``), not
            merely contain one (``test_RGBIR``). Used for the root itself, whose name a user or tool chose
            (``test_scenes_2024``, pytest's ``test_<name>0``) and which may mean something else.
    """
    words = _words(name)
    if "".join(words) in ("holdout", "heldout"):
        return True
    if whole:
        return bool(HELD_OUT_WORDS.intersection(words)) and set(words) <= HELD_OUT_WORDS | _SPLIT_FILLER
    return bool(HELD_OUT_WORDS.intersection(words))


def is_label_dir(name: str) -> bool:
    """Whether a folder name says it holds labels (``masks``, ``ann_dir``, ``gts_for_participants`` ...)."""
    words = _words(name)
    return bool(LABEL_DIR_WORDS.intersection(words)) or "groundtruth" in "".join(words)


def is_label_file(name: str) -> bool:
    """Whether a file name says it is a label (``*_mask.png``, ``*_label_noBoundary.tif``)."""
    return bool(LABEL_FILE_WORDS.intersection(_words(Path(name).stem)[1:]))


def potsdam_tile(name: str) -> str | None:
    """The Potsdam tile id ``"<r>_<c>"`` of a file name (any product, zero-padded or not), else None."""
    stem = Path(name).stem
    m = _POTSDAM_TILE.match(stem) or _MMSEG_POTSDAM.match(stem)
    return f"{int(m.group(1))}_{int(m.group(2))}" if m else None


def held_out_tile(name: str) -> str | None:
    """``"potsdam <r>_<c>"`` / ``"vaihingen area <N>"`` when a file name is an official ISPRS test tile, else None.

    Patches cut from a test tile keep the tile's name as prefix (``top_potsdam_2_13_RGBIR_0_1.tif``), so they are
    recognised too, as are the DSM products (``dsm_potsdam_02_13.tif``, ``dsm_09cm_matching_area2.tif``) and
    mmsegmentation's crops (``2_13_0_0_512_512.png``, ``area2_0_0_512_512.png``).
    """
    tile = potsdam_tile(name)
    if tile is not None and tile in POTSDAM_TEST:
        return f"potsdam {tile}"
    stem = Path(name).stem
    m = _VAIHINGEN_AREA.match(stem) or _MMSEG_VAIHINGEN.match(stem)
    if m and int(m.group(1)) in VAIHINGEN_TEST:
        return f"vaihingen area {int(m.group(1))}"
    return None


def is_vaihingen(name: str) -> bool:
    """Whether a file name is a Vaihingen tile (or a patch of one): IR-R-G false colour, no true RGB."""
    stem = Path(name).stem
    return _VAIHINGEN_AREA.match(stem) is not None or _MMSEG_VAIHINGEN.match(stem) is not None


# ---------------------------------------------------------------------------------------------- layouts
_POTSDAM_DIRS = ("4_Ortho_RGBIR", "2_Ortho_RGB", "3_Ortho_IRRG", "1_DSM", "1_DSM_normalisation", "5_Labels_all")


def detect_layout(folder: Path) -> str | None:
    """The dataset name whose layout has its root at ``folder`` (by marker folders/files), else None."""
    if any((folder / f"Tile {t}" / "images").is_dir() for t in range(1, 9)):
        return "dubai"
    if any((folder / d).is_dir() for d in _POTSDAM_DIRS):
        return "potsdam"
    if (folder / "train_RGBIR").is_dir() and (folder / "train_lbl").is_dir():
        return "isprs_patches"
    if (folder / "img_dir").is_dir() and (folder / "ann_dir").is_dir():
        return "isprs_mmseg"
    if any((folder / s / c).is_dir() for s in ("Train", "Val") for c in ("Urban", "Rural")):
        return "loveda"
    if (folder / "train").is_dir() and next((folder / "train").glob("*_sat.jpg"), None) is not None:
        return "deepglobe"
    if any((folder / p).is_file() for p in ("palette.yaml", "palette.yml", "palette.json")) and (
        (folder / "images").is_dir() or next(folder.glob("*/images"), None) is not None
    ):
        return "folder"
    return None


#: Dataset classes whose own split rules list a layout's val/test images (``isprs_patches``: the FALSE patch
#: folders; VaihingenPatches has ISPRSPatches' split rule and accepts any band count).
_CLASSES: dict[str, type[SegmentationDataset]] = {
    "isprs_patches": VaihingenPatches,
    "isprs_mmseg": ISPRSMMSeg,
    "loveda": LoveDA,
    "deepglobe": DeepGlobeLandCover,
    "folder": FolderDataset,
}


def layout_held_out(name: str, root: Path) -> dict[Path, str]:
    """Resolved image path -> reason for every validation/test image of the ``name`` layout at ``root``.

    Args:
        name: A name returned by :func:`detect_layout`.
        root: The layout's root folder.

    Returns:
        The held-out images and why (``"dubai val"``, ``"folder val (carved from train)"`` ...).
    """
    out: dict[Path, str] = {}
    if name == "dubai":
        for split in ("val", "test"):
            for t in DubaiAerial.split_tiles[split]:
                for image in sorted((root / f"Tile {t}").rglob("*")):
                    out[image.resolve()] = f"dubai {split} (Tile {t})"
        return out
    if name == "potsdam":
        # Every product folder (RGBIR, RGB, IRRG, DSM): by tile id, as PotsdamTiles carves its val tiles.
        carved = set(carve_tiles(POTSDAM_TRAIN, PotsdamTiles.val_fraction, PotsdamTiles.val_seed))
        for image in sorted(root.rglob("*")):
            tile = potsdam_tile(image.name)
            if tile in carved:
                out[image.resolve()] = f"potsdam val {tile} (carved from train)"
            elif tile in POTSDAM_TEST:
                out[image.resolve()] = f"potsdam test {tile}"
        return out
    cls = _CLASSES[name]
    for split in ("val", "test"):
        try:
            ds = cls(str(root), split, patch_size=None)
        except DatasetNotFoundError:
            continue  # the layout has no such split
        except (DatasetError, ValueError) as err:
            log.warning(
                "cannot list the %s images of the %s layout at %s (%s); only the name rules keep them out",
                split,
                name,
                root,
                err,
            )
            continue
        how = " (carved from train)" if ds.val_tiles and split == "val" else ""
        out.update({f.image.resolve(): f"{name} {split}{how}" for f in ds.files})
    return out


@dataclass
class HeldOutRules:
    """The three rules with a cache of the layouts seen (one instance per scan of a root).

    Attributes:
        layouts: Folder -> its layout name (None: not a dataset root).
        held: Layout root -> its held-out images.
    """

    layouts: dict[Path, str | None] = field(default_factory=dict)
    held: dict[Path, dict[Path, str]] = field(default_factory=dict)

    def enclosing_layout(self, path: Path) -> tuple[Path, str] | None:
        """The nearest dataset root above ``path`` (resolved) and its layout name."""
        for folder in list(path.parents)[:_LAYOUT_DEPTH]:
            if folder not in self.layouts:
                self.layouts[folder] = detect_layout(folder)
            name = self.layouts[folder]
            if name is not None:
                return folder, name
        return None

    def _layout_reason(self, path: Path) -> str | None:
        found = self.enclosing_layout(path)
        if found is None:
            return None
        root, name = found
        if root not in self.held:
            self.held[root] = layout_held_out(name, root)
        return self.held[root].get(path)

    def is_label(self, path: Path, dirs: Sequence[str]) -> bool:
        """Whether ``path`` (found under folders ``dirs``) is a label file, never imagery."""
        return is_label_file(path.name) or any(is_label_dir(d) for d in dirs)

    def reason(self, path: Path, dirs: Sequence[str], root_name: str | None = None) -> str | None:
        """Why the image ``path`` is held out, or None.

        Args:
            path: The image (a symlink is judged by its own name and by its resolved target: name, folder,
                dataset layout).
            dirs: The folders between the root and the image.
            root_name: The root folder's own name, judged only when it is nothing but a split name.
        """
        target = path.resolve()
        names = [path.name, target.name]
        folders = list(dirs) + ([target.parent.name] if path.is_symlink() else [])
        if root_name is not None and is_held_out_dir(root_name, whole=True):
            return f"held-out folder {root_name}/"
        layout = self._layout_reason(target)
        if layout is not None:
            return layout
        for name in names:
            tile = held_out_tile(name)
            if tile is not None:
                return f"official ISPRS test tile {tile}"
        for folder in folders:
            if is_held_out_dir(folder):
                return f"held-out folder {folder}/"
        return None


@dataclass
class ImageScan:
    """What a search of one root found.

    Attributes:
        root: The root searched.
        images: Images to use, sorted.
        excluded: Held-out images left out, with the reason.
        labels: Label files skipped (never imagery).
    """

    root: Path
    images: list[Path]
    excluded: list[tuple[Path, str]]
    labels: int = 0

    def counts(self) -> Counter[str]:
        """Excluded images per reason kind (the reason up to its tile/folder detail)."""
        return Counter(reason.split(" (")[0] for _, reason in self.excluded)


def summarise(excluded: Iterable[tuple[Path, str]]) -> str:
    """``"3 held-out image(s): dubai test (Tile 3) x 1, ..."`` (empty when nothing was excluded)."""
    items = list(excluded)
    if not items:
        return ""
    counts = Counter(reason for _, reason in items)
    return f"{len(items)} held-out image(s) left out: " + ", ".join(f"{r} x {n}" for r, n in sorted(counts.items()))


def _shown(paths: Iterable[Path]) -> str:
    items = sorted(paths)
    return f"{len(items)} image(s) (e.g. {items[0]})" if items else ""


def split_problems(
    train: SegmentationDataset, val: SegmentationDataset | None, test: SegmentationDataset | None
) -> list[str]:
    """What breaks the held-out guarantee of a fine-tuning set-up, in words (empty: nothing).

    The validation split chooses the checkpoint and the test split is what is reported, so: validation must not
    share images with training, neither may touch the test split, and no official ISPRS test tile (by name) or
    validation/test image of a recognised layout may be trained on.

    Args:
        train: The training split.
        val: The validation split (None: none).
        test: The dataset's test split (None: it has none).

    Returns:
        One sentence per problem, naming the overlap.
    """

    def images(ds: SegmentationDataset | None) -> set[Path]:
        return ds.split_units() if ds is not None else set()

    tr, va, te = images(train), images(val), images(test)
    problems = []
    if tr & va and val is not None:
        problems.append(
            f"the training split {train.split!r} and the validation split {val.split!r} share {_shown(tr & va)}, "
            "so the checkpoint would be chosen on training data"
        )
    if tr & te:
        problems.append(f"the training split {train.split!r} holds {_shown(tr & te)} of the test split")
    if va & te and val is not None:
        problems.append(
            f"the validation split {val.split!r} holds {_shown(va & te)} of the test split, so the checkpoint "
            "would be chosen on the data it is reported on"
        )
    rules = HeldOutRules()
    for what, ds, seen in (("training", train, tr & te), ("validation", val, va & te)):
        if ds is None:
            continue
        flagged: dict[str, list[Path]] = {}
        for f in ds.files:
            target = f.image.resolve()
            reason = None if target in seen else rules.reason(f.image, [])
            if reason is not None and (what == "training" or "val" not in reason.split()):
                flagged.setdefault(reason.split(" (")[0], []).append(target)
        for reason, paths in sorted(flagged.items()):
            problems.append(f"the {what} split {ds.split!r} holds {_shown(paths)} held out as {reason}")
    return problems
