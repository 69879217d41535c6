"""The ``falsecl`` command: a thin dispatcher to the sub-commands.

Each sub-command lives next to the code it drives and exposes ``main(argv) -> int``; this module only
routes to it, so importing it stays cheap (``falsecl --help`` does not import torch).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

#: sub-command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "pretrain": ("falsecl.tasks.pretrain_cli", "main", "self-supervised pretraining (SimCLR, MoCo v2, BYOL; FALSE)"),
    "finetune": ("falsecl.tasks.finetune_cli", "main", "label-efficient DeepLabv3+ fine-tuning"),
    "evaluate": ("falsecl.inference_cli", "evaluate_main", "sliding-window evaluation on whole held-out images"),
    "predict": ("falsecl.inference_cli", "predict_main", "georeferenced class map for a GeoTIFF/JPEG/PNG of any size"),
    "export": ("falsecl.export", "main", "fine-tuned model to ONNX, checked against ONNX Runtime"),
    "data": ("falsecl.datasets.cli", "main", "inspect a dataset: 'data check' and 'data plot'"),
    "benchmark": ("falsecl.benchmark.cli", "main", "methods x label fractions x seeds, with a report"),
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
    from falsecl.usage import enable_cli_logging

    enable_cli_logging()  # the sources, counts and exclusions the docs say are logged at start-up
    func: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), func_name)
    return int(func(args[1:]) or 0)


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
