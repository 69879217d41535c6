"""Label-fraction subsets (1, 5, 10, 25, 100 % of the training patches), seeded and stratified by tile.

The subset is saved as a list of patch ids (one per line) so a run can be reproduced and compared across
methods on exactly the same labels, as in the FALSE paper's few-label protocol. Its first line is a comment
holding the *fingerprint* of what it was drawn from (dataset, root, split, patch size, stride, fraction, seed,
file and patch counts), so a file drawn under other settings is never reused silently.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from falsecl.datasets.errors import DatasetError
from falsecl.tiling import Patch


def label_fraction_subset(patches: Sequence[Patch], fraction: float, seed: int = 0) -> list[int]:
    """Indices of a seeded subset holding ``fraction`` of the patches, stratified by tile.

    The total ``n = max(1, round(fraction * N))`` is shared among tiles in proportion to their patch counts
    (largest-remainder rounding), then each tile's share is drawn at random; so every tile is represented as
    evenly as the fraction allows and a 1 % subset is not all from one scene.

    Args:
        patches: The training patch index.
        fraction: Share of patches in ``(0, 1]``.
        seed: Random seed.

    Returns:
        Sorted patch indices.

    Raises:
        ValueError: ``fraction`` outside ``(0, 1]`` or no patches.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction} (write 0.01 for 1 %)")
    if not patches:
        raise ValueError("cannot draw a subset of an empty dataset")
    if fraction == 1.0:
        return list(range(len(patches)))
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(patches):
        groups[p.tile].append(i)
    tiles = sorted(groups)
    total = max(1, round(fraction * len(patches)))
    quotas = np.array([fraction * len(groups[t]) for t in tiles]) * total / (fraction * len(patches))
    counts = np.floor(quotas).astype(int)
    rng = np.random.default_rng(seed)
    # Largest remainder; ties broken at random (seeded) so no tile is systematically favoured.
    order = np.lexsort((rng.random(len(tiles)), -(quotas - counts)))
    for j in order[: total - int(counts.sum())]:
        counts[j] += 1
    chosen: list[int] = []
    for tile, k in zip(tiles, counts, strict=True):
        if k:
            chosen += [int(v) for v in rng.choice(groups[tile], size=int(k), replace=False)]
    return sorted(chosen)


def carve_tiles(tiles: Sequence[str], fraction: float = 0.125, seed: int = 0) -> list[str]:
    """A seeded share of ``tiles`` held out for validation (at least one, and at least one left to train on).

    Whole tiles (scenes) are held out, never patches of a tile that also trains, because neighbouring patches
    of one scene are nearly duplicates. The draw depends only on the sorted tile names and the seed.

    Args:
        tiles: Tile identifiers of the training split.
        fraction: Share of tiles to hold out.
        seed: Random seed.

    Returns:
        The held-out tiles, sorted.

    Raises:
        ValueError: Fewer than two tiles, or ``fraction`` outside ``(0, 1)``.
    """
    names = sorted(set(tiles))
    if len(names) < 2:
        raise ValueError(
            f"cannot carve a validation split from {len(names)} tile(s); give the dataset a val split of its own"
        )
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    count = min(len(names) - 1, max(1, round(fraction * len(names))))
    rng = np.random.default_rng(seed)
    return sorted(names[i] for i in rng.choice(len(names), size=count, replace=False))


_FINGERPRINT = "# fingerprint: "


def save_ids(ids: Sequence[str], path: str | Path, fingerprint: Mapping[str, Any] | None = None) -> None:
    """Write patch ids one per line (creating parent folders), after an optional fingerprint comment."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = f"{_FINGERPRINT}{json.dumps(dict(fingerprint), sort_keys=True)}\n" if fingerprint is not None else ""
    path.write_text(head + "".join(f"{i}\n" for i in ids))


def load_ids(path: str | Path) -> list[str]:
    """Read patch ids written by :func:`save_ids` (or by hand: one per line, ``#`` comments skipped)."""
    lines = (line.strip() for line in Path(path).read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def load_fingerprint(path: str | Path) -> dict[str, Any] | None:
    """The fingerprint saved with an id list, or ``None`` for a file without one (e.g. written by hand)."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(_FINGERPRINT):
            try:
                value = json.loads(line[len(_FINGERPRINT) :])
            except ValueError as err:
                raise DatasetError(f"{path}: unreadable fingerprint line ({err}). Fix: delete the file.") from err
            return dict(value) if isinstance(value, dict) else None
    return None


def fingerprint_mismatch(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``"key: saved -> wanted"`` for every key of ``wanted`` whose saved value differs (empty: same source)."""
    return [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in wanted.items() if saved.get(k) != v]


def ids_to_indices(ids: Sequence[str], patch_ids: Sequence[str], source: str | Path = "subset") -> list[int]:
    """Positions of ``ids`` in ``patch_ids``.

    Raises:
        DatasetError: An id that the dataset does not have (the data or patch size changed since it was
            saved).
    """
    where = {pid: i for i, pid in enumerate(patch_ids)}
    missing = [i for i in ids if i not in where]
    if missing:
        raise DatasetError(
            f"{source}: {len(missing)} patch id(s) not in the dataset (first: {missing[0]!r}); the data, "
            "split or "
            "patch size changed since the subset was saved. Fix: delete the id list to draw a new one."
        )
    return sorted(where[i] for i in ids)
