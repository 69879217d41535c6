"""What every ``falsecl`` command shares: the one ``auto_cli`` wrapper and the one error -> exit-code mapping.

A user error (a missing file, a bad value) is reported as one line ``falsecl <command>: error: <message>``
and an exit code, never as a traceback. Which errors count as the user's, and which code each gets, is
written here once; a command names the table it uses (:data:`USAGE`, :data:`BAD_DATA`, ...).
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Errors that are the user's to fix (a path, a value): one-line message, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
)


@dataclass(frozen=True)
class Failure:
    """A kind of failure a command reports in one line.

    Attributes:
        errors: Exception types of this kind (matched in order of the table).
        code: Process exit code.
        prefix: Text between ``<prog>: `` and the message (``"error: "`` for usage errors).
    """

    errors: tuple[type[BaseException], ...]
    code: int
    prefix: str = "error: "


#: Bad arguments or paths: exit code 2, as argparse gives for a bad option.
USAGE = (Failure(USER_ERRORS, 2),)
#: ``falsecl data``: bad data is the finding, exit code 1.
BAD_DATA = (Failure((ValueError, FileNotFoundError), 1),)
#: ``falsecl benchmark``: a failed cell (RuntimeError) or a bad configuration, exit code 1.
BENCHMARK = (Failure((RuntimeError, ValueError, FileNotFoundError), 1),)


def run_reporting(prog: str, call: Callable[[], object], failures: Sequence[Failure] = USAGE) -> int:
    """Run ``call`` and turn the failures of ``failures`` into a message on stderr and their exit code.

    Args:
        prog: The command as typed (``"falsecl predict"``), at the start of each message.
        call: The command's work.
        failures: Which exceptions to report, in order; others propagate (a bug shows its traceback).

    Returns:
        0 on success, else the code of the first matching failure.
    """
    try:
        call()
    except BaseException as err:
        for failure in failures:
            if isinstance(err, failure.errors):
                print(f"{prog}: {failure.prefix}{err}", file=sys.stderr)
                return failure.code
        raise
    return 0


def run_function(
    func: Callable[..., Any],
    argv: Sequence[str] | None,
    prog: str,
    failures: Sequence[Failure] = USAGE,
    *,
    show: Callable[[Any], None] | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> int:
    """Parse ``argv`` into a library function's arguments, run it and show its result.

    The function's signature and Google docstring are the command's options and their ``--help``, so a
    library call and its command cannot drift apart.

    Args:
        func: The library function doing the work (typed, documented).
        argv: Arguments after the command name; ``None`` reads ``sys.argv[1:]``.
        prog: The command as typed.
        failures: See :func:`run_reporting`.
        show: Prints the function's result.
        fixed: Arguments the command passes itself (callbacks); they are no options.

    Returns:
        The exit code (``--help`` exits 0 through the parser).
    """
    from jsonargparse import auto_cli

    given = dict(fixed or {})
    signature = inspect.signature(func)

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        result = func(**kwargs, **given)
        if show is not None:
            show(result)
        return result

    options = [p for name, p in signature.parameters.items() if name not in given]
    command.__signature__ = signature.replace(parameters=options)  # type: ignore[attr-defined]
    args = list(argv) if argv is not None else None
    return run_reporting(prog, lambda: auto_cli(command, args=args, as_positional=False, prog=prog), failures)


def join_list_option(argv: Sequence[str], flag: str) -> list[str]:
    """``--input a b c`` (as a shell expands a glob) -> ``--input '["a", "b", "c"]'``, the parser's list form.

    jsonargparse reads a list option as one JSON/YAML value or repeated ``--input+ x``; this keeps the form
    a shell produces working too.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] == flag:
            values = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                values.append(argv[i + 1])
                i += 1
            if values:
                out.append(json.dumps(values) if len(values) > 1 else values[0])
        i += 1
    return out
