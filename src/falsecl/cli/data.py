"""``falsecl data``: inspect a dataset before training on it (:mod:`falsecl.datasets.inspect` does the work).

``falsecl data check <dataset> <root> [--split S]`` reads every file and prints the number of images and
patches, image sizes, bands, and the per-class pixel histogram; it exits with status 1 and a message naming
the file and the fix on bad data. ``falsecl data plot <dataset> <root> --out grid.png`` writes a grid of
images with their masks in the class colours, to see that the colour -> class mapping is right.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jsonargparse import ArgumentParser

from falsecl.cli.common import BAD_DATA, run_reporting
from falsecl.datasets import DATASETS


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="falsecl data", description="Inspect a dataset: 'check' and 'plot'.")
    subcommands = parser.add_subcommands(dest="command", required=True)
    for name, help_ in (
        ("check", "verify every file and print counts and the class histogram"),
        ("plot", "write a PNG grid of images and masks"),
    ):
        sub = ArgumentParser(description=help_)
        sub.add_argument("dataset", choices=sorted(DATASETS), help="dataset layout name")
        sub.add_argument("root", help="dataset root folder (for 'unlabeled': a folder of images)")
        sub.add_argument("--split", type=str | None, default=None, help="split (default: the dataset's first)")
        sub.add_argument("--patch_size", "--patch-size", type=int, default=256, help="patch size")
        sub.add_argument("--palette", type=str | None, default=None, help="palette file for 'folder'")
        sub.add_argument("--bands", type=str | None, default=None, help="band set, e.g. rgb or rgbir")
        if name == "plot":
            sub.add_argument("--out", type=str, default="data_plot.png", help="output PNG")
            sub.add_argument("--num", type=int, default=4, help="number of patches to show")
            sub.add_argument("--seed", type=int, default=0, help="seed of the patch choice")
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
        dataset = build_dataset(sub.dataset, sub.root, sub.split, sub.patch_size, sub.palette, sub.bands)
        if cmd == "check":
            check(dataset)
        else:
            print(f"wrote {plot(dataset, sub.out, sub.num, sub.seed)}")

    return run_reporting(f"falsecl data {cmd}", work, BAD_DATA)
