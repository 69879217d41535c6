"""``falsecl benchmark``: run the experiment matrix from a YAML config (:func:`falsecl.benchmark.runner.run_benchmark`).

``--methods a,b``, ``--fractions 0.01,0.05`` and ``--seeds 0,1`` narrow the configured matrix (they become
``--select_methods`` / ``--select_fractions`` / ``--select_seeds``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from falsecl.cli.common import BENCHMARK, run_function

_NARROW = {"--methods": "--select_methods", "--fractions": "--select_fractions", "--seeds": "--select_seeds"}


def narrow_args(argv: Sequence[str]) -> list[str]:
    """Rewrite ``--methods a,b`` (or ``--methods=a,b``) into ``--select_methods [a,b]``, likewise fractions, seeds.

    A YAML list value (``--seeds [0,1]``) still sets the configured seeds themselves.
    """
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        flag, _, value = args[i].partition("=")
        if flag in _NARROW:
            if not value:
                i += 1
                value = args[i] if i < len(args) else ""
            if value.startswith("["):
                out += [flag, value]
            else:
                out += [_NARROW[flag], "[" + ",".join(v.strip() for v in value.split(",") if v.strip()) + "]"]
        else:
            out.append(args[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``falsecl benchmark --config configs/benchmark/<name>.yaml``; returns the exit code."""
    from falsecl.benchmark.runner import run_benchmark

    args = narrow_args(list(argv) if argv is not None else sys.argv[1:])
    return run_function(run_benchmark, args, "falsecl benchmark", BENCHMARK)
