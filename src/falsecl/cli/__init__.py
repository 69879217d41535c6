"""The ``falsecl`` command: a thin dispatcher to the sub-commands.

Each command family has its module in this package (:mod:`~falsecl.cli.pretrain`, :mod:`~falsecl.cli.finetune`,
:mod:`~falsecl.cli.inference` for evaluate and predict, :mod:`~falsecl.cli.export`, :mod:`~falsecl.cli.data`,
:mod:`~falsecl.cli.benchmark`) exposing ``main(argv) -> int``; :mod:`falsecl.cli.common` holds the one
``auto_cli`` wrapper and the one error -> exit-code mapping. This module only routes, importing the command's
module when it runs, so ``falsecl --help`` stays cheap (no torch). Nothing outside this package imports it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

#: sub-command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "pretrain": ("falsecl.cli.pretrain", "main", "self-supervised pretraining (SimCLR, MoCo v2, BYOL; FALSE)"),
    "finetune": ("falsecl.cli.finetune", "main", "label-efficient DeepLabv3+ fine-tuning"),
    "evaluate": ("falsecl.cli.inference", "evaluate_main", "sliding-window evaluation on whole held-out images"),
    "predict": ("falsecl.cli.inference", "predict_main", "georeferenced class map for a GeoTIFF/JPEG/PNG of any size"),
    "export": ("falsecl.cli.export", "main", "fine-tuned model to ONNX, checked against ONNX Runtime"),
    "data": ("falsecl.cli.data", "main", "inspect a dataset: 'data check' and 'data plot'"),
    "benchmark": ("falsecl.cli.benchmark", "main", "methods x label fractions x seeds, with a report"),
}


def _usage() -> str:
    lines = ["usage: falsecl <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run 'falsecl <command> --help' for the options of one command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the falsecl command line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The process exit code.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    if args[0] == "--version":
        from falsecl import __version__

        print(__version__)
        return 0
    if args[0] not in COMMANDS:
        print(f"falsecl: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[args[0]]
    func: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), func_name)
    return int(func(args[1:]) or 0)


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
