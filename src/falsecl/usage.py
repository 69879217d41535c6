"""Short command-line errors: a mistyped option gets one line with the nearest option ("did you mean").

jsonargparse (which LightningCLI and ``auto_cli`` use) answers an unknown option with the whole usage, often
60 lines for a training command, and no hint. :class:`HintingParser` (and
:class:`falsecl.tasks.run_guards.HintingLightningParser` for the training commands) print
instead ``falsecl pretrain: error: unknown option --data.bach_size; did you mean --data.batch_size?`` and where
to find the full list. The matching is difflib's (the one ``argparse`` uses for sub-command suggestions from
Python 3.12), on the dotted option names and on their last component, so ``--data.root`` finds
``--data.roots`` and ``--root`` finds ``--data.root``.
"""

from __future__ import annotations

import difflib
import logging
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from jsonargparse import ArgumentParser

_UNRECOGNIZED = re.compile(r"unrecognized arguments:\s*(.*)", re.IGNORECASE | re.DOTALL)


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The candidate closest to ``word`` (``--data.bach_size`` -> ``--data.batch_size``), or ``None``.

    Args:
        word: What the user typed, e.g. ``--data.root``.
        candidates: Known option strings.
        cutoff: Minimum difflib similarity ratio in [0, 1].

    Returns:
        The best match other than ``word`` itself; a match on the whole name wins over one on the last
        dotted component (``--root`` -> ``--data.root``).
    """
    options = [c for c in dict.fromkeys(candidates) if c != word]
    best = difflib.get_close_matches(word, options, n=1, cutoff=cutoff)
    if best:
        return best[0]
    tail = word.lstrip("-").rsplit(".", 1)[-1]
    by_tail: dict[str, str] = {}
    for option in options:
        by_tail.setdefault(option.lstrip("-").rsplit(".", 1)[-1], option)
    near = difflib.get_close_matches(tail, list(by_tail), n=1, cutoff=max(cutoff, 0.75))
    return by_tail[near[0]] if near else None


def unknown_option_message(message: str, known: Sequence[str]) -> str:
    """Rewrite ``unrecognized arguments: --x 1 --y`` into one hint per unknown option; other messages as given."""
    match = _UNRECOGNIZED.search(message)
    if match is None:
        return message
    unknown = [a.split("=", 1)[0] for a in match.group(1).split() if a.startswith("-")]
    if not unknown:
        return f"unexpected value(s) {match.group(1).strip()}: options are written --name value"
    parts = []
    for option in unknown:
        near = did_you_mean(option, known)
        parts.append(f"unknown option {option}" + (f"; did you mean {near}?" if near else ""))
    return "; ".join(parts)


def option_strings(parser: ArgumentParser) -> list[str]:
    """Every long option string of ``parser`` (nested groups included, e.g. ``--data.roots``)."""
    return [s for s in parser._option_string_actions if s.startswith("--")]


class ShortErrors:
    """Mixin for jsonargparse parsers: one-line errors with a "did you mean", no usage dump."""

    prog: str

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Print ``<prog>: error: <message>`` (with the nearest option for an unknown one) and exit 2."""
        if not getattr(self, "exit_on_error", True):
            super().error(message, ex)  # type: ignore[misc]  # raises for parsers used inside other parsers
        known = option_strings(self)  # type: ignore[arg-type]
        text = unknown_option_message(message, known).rstrip()
        sys.stderr.write(f"{self.prog}: error: {text}\n(all options: {self.prog} --help)\n")
        raise SystemExit(2)


class HintingParser(ShortErrors, ArgumentParser):
    """jsonargparse's ``ArgumentParser`` with short errors (for ``auto_cli(..., parser_class=HintingParser)``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to whatever ``sys.stderr`` is when a record is emitted (captured streams included)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def enable_cli_logging(level: int = logging.INFO) -> None:
    """Show falsecl's own log records (sources and their counts, exclusions, checks) on stderr, once.

    Libraries leave logging to the application; the ``falsecl`` command is that application, and the docs
    promise that the pretraining sources and every exclusion are reported at start-up.
    """
    logger = logging.getLogger("falsecl")
    if any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        return
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # not twice when the caller configured the root logger too


__all__ = [
    "HintingParser",
    "ShortErrors",
    "did_you_mean",
    "enable_cli_logging",
    "option_strings",
    "unknown_option_message",
]
