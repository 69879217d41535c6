"""``falsecl data``: inspect a dataset before training on it (:mod:`falsecl.datasets.inspect` does the work).

``falsecl data check <dataset> <root> [--split S]`` reads every file and prints the number of images and
patches, image sizes, bands, and the per-class pixel histogram; it exits with status 1 and a message naming
the file and the fix on bad data. ``falsecl data plot <dataset> <root> --out grid.png`` writes a grid of
images with their masks in the class colours, to see that the colour -> class mapping is right.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, cast

from jsonargparse import ArgumentParser

from falsecl.cli.common import BAD_DATA, run_reporting
from falsecl.datasets import DATASETS
from falsecl.usage import HintingParser


def _parser() -> ArgumentParser:
    parser = HintingParser(prog="falsecl data", description="Inspect a dataset: 'check' and 'plot'.")
    subcommands = parser.add_subcommands(dest="command", required=True)
    for name, help_ in (
        ("check", "verify every file and print counts and the class histogram"),
        ("plot", "write a PNG grid of images and masks"),
    ):
        sub = HintingParser(description=help_)
        sub.add_argument("dataset", choices=sorted(DATASETS), help="dataset layout name")
        sub.add_argument("root", help="dataset root folder (for 'unlabeled': a folder of images)")
        sub.add_argument("--split", type=str | None, default=None, help="split (default: the dataset's first)")
        sub.add_argument("--patch_size", "--patch-size", type=int, default=256, help="patch size")
        sub.add_argument("--palette", type=str | None, default=None, help="palette file for 'folder'")
        sub.add_argument("--bands", type=str | None, default=None, help="band set, e.g. rgb or rgbir")
        sub.add_argument("--labels", type=str | None, default=None, help="'vector': polygon file (GPKG, SHP, GeoJSON)")
        sub.add_argument("--class_field", type=str | None, default=None, help="'vector': attribute holding the class")
        sub.add_argument("--layer", type=str | None, default=None, help="'vector': layer of a multi-layer file")
        sub.add_argument("--classes", type=list[str] | str | None, default=None, help="'vector': class order/palette")
        sub.add_argument("--make_valid", type=bool, default=False, help="'vector': repair invalid polygons")
        if name == "plot":
            sub.add_argument("--out", type=str, default="data_plot.png", help="output PNG")
            sub.add_argument("--num", type=int, default=4, help="number of patches to show")
            sub.add_argument("--seed", type=int, default=0, help="seed of the patch choice")
            sub.add_argument("--scene", type=int | None, default=None, help="'vector': scene index (most polygons)")
        subcommands.add_subcommand(name, sub, help=help_)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``falsecl data``.

    Args:
        argv: Arguments after ``data``.

    Returns:
        0 on success, 1 on bad data (the message is printed to stderr).
    """
    from falsecl.datasets.inspect import build_dataset, check, plot

    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    cmd = args.command
    sub = args[cmd]

    def work() -> None:
        if sub.dataset == "vector":
            return vector(cmd, sub)
        dataset = build_dataset(sub.dataset, sub.root, sub.split, sub.patch_size, sub.palette, sub.bands)
        if cmd == "check":
            check(dataset)
        else:
            print(f"wrote {plot(dataset, sub.out, sub.num, sub.seed)}")

    return run_reporting(f"falsecl data {cmd}", work, BAD_DATA)


def vector(cmd: str, sub: Any) -> None:
    """``falsecl data check|plot vector``: polygon counts per class, or a scene with its polygons."""
    from falsecl.datasets import segmentation_dataset
    from falsecl.datasets.vector import VectorLabels, VectorSource
    from falsecl.datasets.vector_check import check_vector, plot_scene

    source = VectorSource(sub.labels, sub.class_field, sub.layer, sub.classes, sub.make_valid)
    dataset = cast(
        VectorLabels,
        segmentation_dataset("vector", sub.root, sub.split or "all", sub.patch_size, bands=sub.bands, vector=source),
    )
    if cmd == "plot":
        print(f"wrote {plot_scene(dataset, sub.out, sub.scene)}")
        return
    print(f"scenes  : {len(dataset.files)} under {dataset.root}; labels {dataset.labels.where}")
    print(f"patches : {len(dataset)} labelled patches of {sub.patch_size} px")
    print("\n".join(check_vector(dataset).lines()))
    print("ok")
