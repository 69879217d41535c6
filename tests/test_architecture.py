"""The shape of the package (shared/ARCHITECTURE.md): no import cycle, the CLI on top, a file-free core, small rooms.

Imports are read from the source with ``ast``, including those inside functions (a lazy import is still a
dependency). ``import a.b.c`` counts as a dependency on ``a.b.c`` (the package ``__init__`` files it runs are
checked by the runtime test below).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "falsecl"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """falsecl modules ``name`` imports anywhere in its source (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` the module mod.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_imports_are_read_inside_functions(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from falsecl.x import y\n    import falsecl.z\n")
    assert imports_of("falsecl.m", path, {"falsecl.x", "falsecl.x.y", "falsecl.z"}) == {"falsecl.x.y", "falsecl.z"}


def test_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_nothing_outside_cli_imports_the_cli() -> None:
    offenders = {
        name: sorted(t for t in targets if t == "falsecl.cli" or t.startswith("falsecl.cli."))
        for name, targets in import_graph().items()
        if not (name == "falsecl.cli" or name.startswith("falsecl.cli."))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_lower_layers_know_nothing_of_lightning_or_the_cli() -> None:
    for name, path in modules().items():
        if name.startswith(("falsecl.losses", "falsecl.datasets")):
            text = path.read_text()
            assert "lightning" not in text.replace("Lightning", ""), name
            assert "falsecl.cli" not in text, name


def test_sliding_window_core_reads_and_writes_no_file() -> None:
    graph = import_graph()
    reached, todo = set(), ["falsecl.inference.sliding_window"]
    while todo:
        for nxt in graph[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    assert not reached & {"falsecl.inference.raster", "falsecl.datasets.io", "falsecl.model_card"}, reached
    source = (PACKAGE / "inference" / "sliding_window.py").read_text()
    for word in ("rasterio", "open(", "PIL", "Path"):
        assert word not in source, word
    # And at run time, with every package __init__ it triggers: no raster library is loaded.
    code = (
        "import sys, falsecl.inference.sliding_window; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rasterio', 'PIL') "
        "or m in ('falsecl.inference.raster', 'falsecl.datasets.io')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_falsecl_help_does_not_import_torch() -> None:
    code = "import sys; from falsecl.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_no_module_over_the_limit() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {k: v for k, v in sizes.items() if v > MAX_LINES} == {}


def test_documented_public_imports_keep_working(monkeypatch) -> None:
    import importlib

    import pytest

    monkeypatch.delitem(sys.modules, "falsecl.inference_cli", raising=False)
    with pytest.warns(DeprecationWarning, match="falsecl.inference.checkpoint"):
        old = importlib.import_module("falsecl.inference_cli")
    from falsecl.inference.checkpoint import load_task

    assert old.load_task is load_task
    from falsecl.datamodules import DEFAULT_SSL_ROOTS, SegmentationDataModule, SSLDataModule  # noqa: F401
    from falsecl.datasets import grid_windows, segmentation_dataset, window_starts  # noqa: F401
    from falsecl.inference import SlidingWindowPredictor, window_coverage  # noqa: F401
    from falsecl.losses import FALSELoss  # noqa: F401
