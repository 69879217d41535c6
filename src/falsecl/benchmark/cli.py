"""``falsecl benchmark``: run the experiment matrix from a YAML config (see :func:`run_benchmark`).

Every config and data folder is checked before the first cell (:mod:`falsecl.benchmark.preflight`).

``--methods a,b``, ``--fractions 0.01,0.05`` and ``--seeds 0,1`` narrow the configured matrix (they become
``--select_methods`` / ``--select_fractions`` / ``--select_seeds``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from falsecl.benchmark.preflight import checked_run_benchmark

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
    from jsonargparse import auto_cli

    from falsecl.usage import HintingParser

    args = narrow_args(list(argv) if argv is not None else sys.argv[1:])
    try:
        auto_cli(
            checked_run_benchmark, args=args, as_positional=False, prog="falsecl benchmark", parser_class=HintingParser
        )
    except SystemExit as exit_:  # --help, parse errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        print(f"falsecl benchmark: error: {err}", file=sys.stderr)
        return 1
    return 0
