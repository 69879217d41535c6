"""Every ``falsecl`` command shown in README.md and docs/*.md parses (issue 21, item 5).

Commands are taken from fenced code blocks (with their ``\\`` continuations) and from inline code spans that
give options. Each is parsed in-process, as typed, with ``--print_config`` appended (the jsonargparse commands
stop after parsing and never train) or, for ``falsecl data``, with its parser; a parse error fails the test
with the file and line. Synopses (``<dataset>``, ``[--split S]``), overview tables (``->``) and printed output
(``falsecl data check: error: ...``) are not commands.
"""

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^\s*```")
_INLINE = re.compile(r"`(falsecl [a-z]+ [^`]*--[^`]*)`")


def _is_command(text: str) -> bool:
    tokens = text.split()
    return (
        len(tokens) >= 2
        and not any(t.endswith(":") for t in tokens[:3])
        and not any(mark in text for mark in ("<", "[--", "->"))
    )


def documented_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for every command in the README and docs."""
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        fenced, i = False, 0
        while i < len(lines):
            line = lines[i]
            if _FENCE.match(line):
                fenced = not fenced
            elif fenced and line.strip().startswith("falsecl "):
                start, text = i, line.strip()
                while text.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text[:-1] + " " + lines[i].strip()
                text = re.sub(r"\s+#\s.*$", "", text)  # a trailing comment
                if _is_command(text):
                    found.append((f"{doc.relative_to(REPO)}:{start + 1}", text))
            elif not fenced:
                for span in _INLINE.findall(line):
                    # `falsecl predict --input` names an option; a command gives it a value
                    if _is_command(span) and not span.split()[-1].startswith("--"):
                        found.append((f"{doc.relative_to(REPO)}:{i + 1}", span))
            i += 1
    return found


COMMANDS = documented_commands()


def test_the_docs_show_the_workflow() -> None:
    """The extraction finds the README's workflow and the command the issue found broken."""
    commands = [c for _, c in COMMANDS]
    for name in ("pretrain", "finetune", "evaluate", "predict", "export", "data", "benchmark"):
        assert any(c.startswith(f"falsecl {name} ") for c in commands), name
    assert len(commands) >= 30
    assert any("backbone_weights" in c for w, c in COMMANDS if w.startswith("docs/pretraining.md"))


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where: str, command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from falsecl.cli import main

    monkeypatch.chdir(REPO)  # the docs' paths are relative to the repository
    args = [a for a in shlex.split(command)[1:] if a != "..."]
    err = io.StringIO()
    if args[0] == "data":
        from falsecl.cli.data import _parser

        with contextlib.redirect_stderr(err):
            try:
                _parser().parse_args(args[1:])
                code = 0
            except SystemExit as exit_:
                code = int(exit_.code or 0)
    else:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main([*args, "--print_config"])
    assert code == 0, f"{where}: {command}\n{err.getvalue()}"
