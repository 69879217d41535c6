"""Every mask a run will read, decoded once before training: a bad colour stops the run at start-up.

Masks are otherwise decoded patch by patch inside DataLoader workers, so one mask with a colour missing from
the palette failed mid-training under a long traceback, or never (when no sampled patch touched it).
:func:`check_masks` decodes the whole masks of the images that hold the selected patches and raises the same
:class:`~falsecl.datasets.errors.DatasetError` as ``falsecl data check``. The result is cached in a JSON file
keyed by the files' paths, sizes and modification times, so a resumed or repeated run pays nothing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from falsecl.datasets.base import SegmentationDataset

log = logging.getLogger(__name__)


def _fingerprint(dataset: SegmentationDataset, images: list[int]) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of each mask file checked (a changed or replaced mask is checked again)."""
    out: list[list[Any]] = []
    for i in images:
        mask = str(dataset.files[i].mask)
        stat = os.stat(mask)
        out.append([str(Path(mask).resolve()), stat.st_size, stat.st_mtime_ns])
    return out


def check_masks(dataset: SegmentationDataset, patches: Iterable[int], cache: str | Path | None = None) -> int:
    """Decode the whole mask of every image holding one of ``patches``; raise on the first bad one.

    Args:
        dataset: A labelled dataset (tiled or not).
        patches: Indices of the patches the run reads (the label subset, or every validation patch).
        cache: JSON file remembering masks already found good (``None``: no cache).

    Returns:
        The number of masks decoded now (0 when the cache covered them all).

    Raises:
        DatasetError: A mask with a colour or value outside the palette, or an unreadable mask; the message
            names the file and the fix (as ``falsecl data check`` does).
    """
    held = {dataset.patches[i].image_index for i in patches}
    images = sorted(i for i in held if dataset.files[i].mask is not None)
    expected = _fingerprint(dataset, images)
    path = Path(cache) if cache is not None else None
    known: set[tuple[Any, ...]] = set()
    if path is not None and path.is_file():
        try:
            known = {tuple(entry) for entry in json.loads(path.read_text(encoding="utf-8")).get("good", [])}
        except (json.JSONDecodeError, AttributeError, TypeError):
            known = set()  # an unreadable cache only costs a re-check
    todo = [i for i, key in zip(images, expected, strict=True) if tuple(key) not in known]
    if not todo:
        return 0
    whole = dataset.with_patch_size(None)  # one patch per image: the whole mask
    by_image = {p.image_index: k for k, p in enumerate(whole.patches)}
    for i in todo:
        whole.read_mask(by_image[i])
    log.info("checked %d mask(s) of %s before training", len(todo), dataset.root)
    if path is not None:
        good = sorted(known | {tuple(key) for key in expected})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"good": [list(g) for g in good]}, indent=1) + "\n", encoding="utf-8")
    return len(todo)


__all__ = ["check_masks"]
