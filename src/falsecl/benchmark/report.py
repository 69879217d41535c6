"""Report of a benchmark: Markdown and HTML tables plus a PNG chart, from the per-cell metrics.

Each cell result is a dict ``{"method", "label_fraction", "seed", "mIoU", "OA", "kappa", "per_class": {name: IoU}}``
as collected by :mod:`falsecl.benchmark.runner`.
"""

from __future__ import annotations

import html
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else 0.0)


def summarize(results: Sequence[Row]) -> list[Row]:
    """Aggregate cells over seeds: one row per (method, label fraction), in first-seen order.

    Args:
        results: Cell results.

    Returns:
        Rows with ``method``, ``label_fraction``, ``seeds`` (count), ``mIoU``/``OA``/``kappa`` as ``(mean, std)``
        and ``per_class`` ``{name: mean IoU}``.
    """
    groups: dict[tuple[str, float], list[Row]] = {}
    for cell in results:
        groups.setdefault((str(cell["method"]), float(cell["label_fraction"])), []).append(cell)
    rows = []
    for (method, fraction), cells in groups.items():
        names = list(cells[0].get("per_class", {}))
        rows.append(
            {
                "method": method,
                "label_fraction": fraction,
                "seeds": len(cells),
                **{key: _mean_std([float(c[key]) for c in cells]) for key in ("mIoU", "OA", "kappa")},
                "per_class": {n: _mean_std([float(c["per_class"][n]) for c in cells])[0] for n in names},
            }
        )
    return rows


def _pct(value: tuple[float, float], seeds: int) -> str:
    mean, std = value
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if seeds > 1 else "")


def _table(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    names = list(rows[0]["per_class"]) if rows else []
    header = ["method", "labels", "seeds", "mIoU %", "OA %", "Kappa %"] + [f"{n} IoU %" for n in names]
    body = []
    for r in rows:
        per_class = [f"{100 * r['per_class'][n]:.2f}" for n in names]
        body.append(
            [r["method"], f"{100 * r['label_fraction']:g} %", str(r["seeds"])]
            + [_pct(r[k], r["seeds"]) for k in ("mIoU", "OA", "kappa")]
            + per_class
        )
    return header, body


def markdown_table(rows: Sequence[Row]) -> str:
    """The summary as a Markdown table."""
    header, body = _table(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def _plot(rows: Sequence[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    fractions = sorted({r["label_fraction"] for r in rows})
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(fractions) + 2), 3.6))
    for k, method in enumerate(methods):
        xs, means, stds = [], [], []
        for j, fraction in enumerate(fractions):
            match = [r for r in rows if r["method"] == method and r["label_fraction"] == fraction]
            if match:
                xs.append(j + (k - (len(methods) - 1) / 2) * width)
                means.append(100 * match[0]["mIoU"][0])
                stds.append(100 * match[0]["mIoU"][1])
        ax.bar(xs, means, width, yerr=stds, label=method, capsize=3)
    ax.set_xticks(range(len(fractions)), [f"{100 * f:g} % labels" for f in fractions])
    ax.set_ylabel("test mIoU (%)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_report(results: Sequence[Row], out_dir: str | Path, title: str = "falsecl benchmark") -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``miou.png`` into ``out_dir``.

    Args:
        results: Cell results (see module docstring).
        out_dir: Destination folder.
        title: Heading of the report.

    Returns:
        The paths written, by kind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(results)
    png = out / "miou.png"
    if rows:
        _plot(rows, png)
    md = out / "report.md"
    md.write_text(
        f"# {title}\n\nTest-split scores of DeepLabv3+ fine-tuned from each pretraining, mean ± std over seeds.\n\n"
        + markdown_table(rows)
        + ("\n![mIoU per method](miou.png)\n" if rows else "\nNo finished cell yet.\n")
    )
    header, body = _table(rows)
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in header)
        + f"</tr>{cells}</table>"
        + ("<p><img src='miou.png' alt='mIoU per method'></p>" if rows else "")
        + "</body></html>\n"
    )
    page_path = out / "report.html"
    page_path.write_text(page)
    return {"markdown": md, "html": page_path, "png": png}
