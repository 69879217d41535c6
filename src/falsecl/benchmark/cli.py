"""``falsecl benchmark``: run the experiment matrix from a YAML config (see :func:`run_benchmark`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from falsecl.benchmark.runner import run_benchmark


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``falsecl benchmark --config configs/benchmark/<name>.yaml``; returns the exit code."""
    from jsonargparse import auto_cli

    try:
        auto_cli(run_benchmark, args=list(argv) if argv is not None else None, as_positional=False,
                 prog="falsecl benchmark")
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        print(f"falsecl benchmark: error: {err}", file=sys.stderr)
        return 1
    return 0
