"""The benchmark's start-up check: every config parses and every data folder exists, before an hour of work.

A misspelled ``pretrain_config``, a missing ``finetune_config``, a mistyped option in ``pretrain_args`` or a data
root that does not exist used to surface only when the cell that needed it started. :func:`check_benchmark`
parses each pretraining config with its arguments and the fine-tuning config with each method's arguments,
exactly as the cells will (``--print_config``, in-process, nothing trained), resolves the data each one reads,
and reports every problem at once. ``falsecl benchmark`` runs it before the matrix (and ``--dry_run`` prints
what it found) through :func:`checked`, which the command line gives its own parsers (this module does not import
the command line).
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from falsecl.benchmark.cells import Method
from falsecl.benchmark.runner import run_benchmark
from falsecl.datasets.dubai import BUNDLED_ROOT, resolve_bundled


def _parsed(main: Callable[[list[str]], int], argv: list[str]) -> tuple[dict[str, Any] | None, str]:
    """The resolved config of ``falsecl <cmd> argv --print_config`` (``None`` and the error when it fails)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, "--print_config"])
    if code != 0:
        lines = [line for line in err.getvalue().strip().splitlines() if line.strip()]
        return None, lines[-2] if len(lines) >= 2 and lines[-1].startswith("(all options") else (lines or ["?"])[-1]
    loaded = yaml.safe_load(out.getvalue())
    return (loaded if isinstance(loaded, dict) else {}), ""


def _folder(path: Any, what: str, problems: list[str]) -> str:
    """``path`` resolved as the commands will (bundled data from anywhere); a missing one is a problem."""
    resolved = resolve_bundled(str(path))
    if not Path(resolved).exists():
        problems.append(f"{what}: {path} does not exist (from {Path.cwd()})")
    return str(Path(resolved).resolve())


def _pretraining_data(data: dict[str, Any], where: str, problems: list[str]) -> str:
    """What a pretraining run reads, in words: ``folders [...]`` and/or ``<dataset> <split> at <root>``."""
    parts = []
    if data.get("dataset"):
        root = _folder(data.get("root"), f"{where}: data.root", problems) if data.get("root") else "?"
        parts.append(f"{data['dataset']} {data.get('split', 'train')} split at {root}")
    roots = data.get("roots")
    if roots is None and not data.get("dataset"):
        roots = [BUNDLED_ROOT]
    folders = [_folder(r, f"{where}: data.roots", problems) for r in roots or []]
    folders += [str(Path(r).resolve()) for r in data.get("extra_roots") or [] if Path(r).exists()]
    if folders:
        parts.append("folders " + ", ".join(folders))
    return "; ".join(parts) or "nothing"


#: A command's ``main(argv) -> exit code`` (``falsecl pretrain`` / ``finetune``), given by the command line so
#: that this module does not import it.
CommandMain = Callable[[list[str]], int]


def check_benchmark(
    methods: Sequence[Method],
    finetune_config: str,
    pretrain_args: Sequence[str] | None,
    finetune_args: Sequence[str] | None,
    pretrain_main: CommandMain,
    finetune_main: CommandMain,
    finetunes: bool = True,
) -> list[str]:
    """Parse every config the matrix will use and check every data folder; the plan in words.

    Args:
        methods: The methods that will run.
        finetune_config: The fine-tuning YAML (its data section is also the probe's).
        pretrain_args: Extra arguments of every pretraining.
        finetune_args: Extra arguments of every fine-tuning.
        pretrain_main: ``falsecl pretrain``'s entry point (parses with ``--print_config``, trains nothing).
        finetune_main: ``falsecl finetune``'s entry point.
        finetunes: Whether fine-tuning cells will run (their arguments are then parsed too).

    Returns:
        One line per method: the config, and the data its pretraining and its cells read.

    Raises:
        ValueError: Listing every problem found (missing file, parse error, missing data folder).
    """
    problems: list[str] = []
    lines: list[str] = []
    labelled = "?"
    if not Path(finetune_config).is_file():
        problems.append(f"finetune_config {finetune_config} does not exist (from {Path.cwd()})")
    for method in methods:
        pre = "random initialisation (no pretraining)"
        if method.pretrain_config is not None:
            where = f"method {method.name}"
            if not Path(method.pretrain_config).is_file():
                problems.append(f"{where}: pretrain_config {method.pretrain_config} does not exist")
            else:
                argv = ["--config", method.pretrain_config, *(pretrain_args or []), *method.pretrain_args]
                cfg, error = _parsed(pretrain_main, argv)
                if cfg is None:
                    problems.append(f"{where}: falsecl pretrain {' '.join(argv)}: {error}")
                else:
                    data = _pretraining_data(cfg.get("data") or {}, where, problems)
                    pre = f"pretrains ({method.pretrain_config}) on {data}"
        if Path(finetune_config).is_file():
            argv = ["--config", finetune_config, *(finetune_args or []), *method.finetune_args]
            cfg, error = _parsed(finetune_main, argv if finetunes else ["--config", finetune_config])
            if cfg is None:
                problems.append(f"method {method.name}: falsecl finetune {' '.join(argv)}: {error}")
            else:
                section = cfg.get("data") or {}
                root = _folder(section.get("root"), f"{finetune_config}: data.root", problems)
                labelled = f"{section.get('dataset')} at {root}"
        lines.append(f"{method.name}: {pre}; its probe/fine-tuning cells read {labelled}")
    if problems:
        unique = list(dict.fromkeys(problems))
        raise ValueError("the benchmark cannot start:\n  " + "\n  ".join(unique))
    return lines


def checked(pretrain_main: CommandMain, finetune_main: CommandMain) -> Callable[..., list[dict[str, Any]]]:
    """:func:`run_benchmark` preceded by :func:`check_benchmark` (not for ``report_only``, which runs nothing).

    Args:
        pretrain_main: ``falsecl pretrain``'s entry point.
        finetune_main: ``falsecl finetune``'s entry point.

    Returns:
        A function with :func:`run_benchmark`'s signature and docstring (the command's options and help).
    """

    @functools.wraps(run_benchmark)
    def checked_run_benchmark(**kwargs: Any) -> list[dict[str, Any]]:
        if not kwargs.get("report_only"):
            methods = [m if isinstance(m, Method) else Method(**m) for m in kwargs["methods"]]
            keep = kwargs.get("select_methods")
            fractions = kwargs.get("label_fractions")
            plan = check_benchmark(
                [m for m in methods if keep is None or m.name in keep],
                kwargs.get("finetune_config", "configs/finetune/cpu_quick.yaml"),
                kwargs.get("pretrain_args"),
                kwargs.get("finetune_args"),
                pretrain_main,
                finetune_main,
                finetunes=fractions is None or bool(fractions),
            )
            print("data each method's cells read (checked):\n  " + "\n  ".join(plan), flush=True)
        return run_benchmark(**kwargs)

    return checked_run_benchmark


__all__ = ["CommandMain", "check_benchmark", "checked"]
