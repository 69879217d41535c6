"""The rasters named by ``falsecl predict --input``: files, folders, globs and VRT mosaics.

A batch is judged file by file: a folder or a glob that matches nothing is reported like a bad file (named, and the
run ends with exit code 1) while the other inputs are still predicted, and the product's own earlier outputs found
in a folder or by a glob (``*_classes.tif``, ``*_probabilities.tif`` ... carry the ``FALSECL_OUTPUT`` tag) are
skipped and listed, never taken for imagery. A file named explicitly is used as given.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from falsecl.inference.raster import product_output_kind

#: File suffixes taken from a folder given to ``predict --input``.
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".png", ".jpg", ".jpeg", ".img")


@dataclass
class InputFiles:
    """What ``--input`` names.

    Attributes:
        files: Rasters to predict, in order, each once.
        unmatched: One message per folder or glob that matched no raster (report them as failed inputs).
        skipped: ``(file, kind)`` for each product output (``kind`` = ``classes``, ``confidence`` ...) found in a
            folder or by a glob and left out.
    """

    files: list[Path] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def collect_inputs(inputs: str | Sequence[str]) -> InputFiles:
    """Expand ``--input`` items: files as given, folders (their rasters, sorted), globs (sorted).

    Args:
        inputs: One item or several (``--input a.tif tiles/ 'more/*.tif'``).

    Returns:
        The files to predict, the items that matched nothing and the product outputs left out.
    """
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    out = InputFiles()
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
            what = f"folder {path} holds no raster ({', '.join(RASTER_SUFFIXES)})"
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            what = f"no file matches {item!r}"
        else:
            out.files.append(path)  # a missing file is reported when it is predicted on
            continue
        kept = []
        for candidate in found:
            kind = product_output_kind(candidate)
            if kind is None:
                kept.append(candidate)
            else:
                out.skipped.append((candidate, kind))
        if not kept:
            skipped = len(found) - len(kept)
            out.unmatched.append(what if not skipped else f"{item}: only falsecl outputs ({skipped} skipped)")
        out.files += kept
    out.files = list(dict.fromkeys(out.files))
    return out
