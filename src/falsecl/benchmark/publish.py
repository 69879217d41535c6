"""Copy a benchmark's report into a documentation folder under one name, with its figures and cell results.

``<dest>/<name>.md``, ``<name>.html``, ``<name>_<figure>.png`` and ``<name>_results.json``: the figures are
renamed so that several benchmarks can share one folder, and the report's links follow them. Every file is
written beside its destination first and then renamed, so an interrupted copy never leaves a half-written
report in the documentation.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

FIGURES = ("miou.png", "pretrain_curves.png", "panel.png", "repro.png")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def publish_report(out_dir: str | Path, dest_dir: str | Path, name: str) -> list[Path]:
    """Copy ``report.md``, ``report.html``, the figures and ``results.json`` of ``out_dir`` to ``dest_dir``.

    Args:
        out_dir: The benchmark folder (as written by :func:`falsecl.benchmark.report.write_report`).
        dest_dir: The documentation folder (created when missing).
        name: Stem of the published files (e.g. ``dubai_cpu``).

    Returns:
        The files written.

    Raises:
        FileNotFoundError: ``out_dir`` holds no report yet.
        ValueError: ``name`` is not a plain file stem.
    """
    out, dest = Path(out_dir), Path(dest_dir)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"publish name {name!r} must be a plain file stem such as 'dubai_cpu'")
    if not (out / "report.md").is_file():
        raise FileNotFoundError(f"{out / 'report.md'} does not exist: run the benchmark (or --report_only true) "
                                "before publishing it")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    figures = [f for f in FIGURES if (out / f).is_file()]
    for figure in figures:
        target = dest / f"{name}_{figure}"
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(out / figure, tmp)
        tmp.replace(target)
        written.append(target)
    for suffix in ("md", "html"):
        text = (out / f"report.{suffix}").read_text()
        for figure in figures:
            # Markdown image links `](miou.png)` and HTML `src='miou.png'`.
            text = text.replace(f"]({figure})", f"]({name}_{figure})").replace(f"'{figure}'", f"'{name}_{figure}'")
        _atomic_write(dest / f"{name}.{suffix}", text)
        written.append(dest / f"{name}.{suffix}")
    if (out / "results.json").is_file():
        _atomic_write(dest / f"{name}_results.json", (out / "results.json").read_text())
        written.append(dest / f"{name}_results.json")
    return written
