"""The report's prediction panel: three test images, their ground truth and the probes of chosen methods."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from falsecl.benchmark.figures import plot_panel


def probe_data_module(data: dict[str, Any], out: Path) -> Any:
    """The fine-tuning config's dataset as a set-up datamodule (the probe's training patches and statistics)."""
    from falsecl.datamodules import SegmentationDataModule

    keys = ("dataset", "root", "palette", "bands", "patch_size", "stride", "stats_patches")
    dm = SegmentationDataModule(**{k: data[k] for k in keys if k in data},
                                stats_path=str(out / "probe_cache" / "band_stats.json"))
    dm.setup()
    return dm


def write_panel(out: Path, data: dict[str, Any], results: Sequence[dict[str, Any]], methods: Sequence[str],
                images: int = 3, fraction: float | None = None) -> str | None:
    """Draw ``panel.png`` from the saved probe heads of pretraining seed 0; returns its caption (None if none).

    Args:
        out: The benchmark folder.
        data: The fine-tuning config's ``data`` section.
        results: Cell results (the probe cells pick the heads).
        methods: Methods shown, in order (those without a probe cell are skipped).
        images: Number of test images (the smallest ones, spread over the split).
        fraction: Label fraction of the heads (default: 5 % when probed, else the largest probed).
    """
    import numpy as np

    from falsecl.benchmark.probe import probe_predictions

    probes = [r for r in results if r.get("protocol") == "probe" and r.get("pretrain_seed") == 0]
    fractions = sorted({float(r["label_fraction"]) for r in probes})
    if not fractions:
        (out / "panel.png").unlink(missing_ok=True)
        return None
    frac = fraction if fraction is not None else (0.05 if 0.05 in fractions else fractions[-1])
    chosen = {}
    missing = []
    for m in methods:
        cells = sorted((r for r in probes if r["method"] == m and float(r["label_fraction"]) == frac),
                       key=lambda r: int(r["finetune_seed"]))
        if cells and (Path(cells[0]["run_dir"]) / "head.pt").is_file():
            chosen[m] = cells[0]
        elif cells:
            missing.append(str(Path(cells[0]["run_dir"]) / "head.pt"))
    if not chosen:
        # A panel left from an earlier run would be published as this one's.
        (out / "panel.png").unlink(missing_ok=True)
        if missing:
            print(f"falsecl benchmark: no prediction panel: {missing[0]} not found (the cells' run folders are "
                  "relative to the folder the benchmark ran in: rebuild the report from there)", file=sys.stderr)
        return None
    dm = probe_data_module(data, out)
    test = dm.whole_image_dataset("test")
    sizes = [(int(test[i]["mask"].numel()), i) for i in range(len(test))]
    small = sorted(i for _, i in sorted(sizes)[: max(images, len(sizes) // 2)])
    picks = [small[round(k * (len(small) - 1) / max(images - 1, 1))] for k in range(images)]
    predictions = {}
    for m, cell in chosen.items():
        backbone = cell.get("backbone")
        path = backbone if backbone and str(backbone).endswith(".pt") else None
        maps = probe_predictions(path, Path(cell["run_dir"]) / "head.pt", dm, picks, backbone_seed=0)
        predictions[m] = [p.numpy() for p in maps]
    rgb = [np.clip(test[i]["image"][:3].permute(1, 2, 0).numpy(), 0, 255).astype(np.uint8) for i in picks]
    truths = [test[i]["mask"].numpy() for i in picks]
    colours = [list(c) for c in getattr(test, "colours", ())] or [[i * 50, 100, 200 - i * 40]
                                                                 for i in range(dm.num_classes)]
    plot_panel(rgb, truths, predictions, colours, dm.class_names, out / "panel.png")
    return (f"Linear probes trained on {100 * frac:g} % of the labels (pretraining seed 0, fine-tuning seed "
            f"{min(int(c['finetune_seed']) for c in chosen.values())}) on test images {picks}; ignore pixels are "
            "black.")
