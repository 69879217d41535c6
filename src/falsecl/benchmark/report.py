"""Report of a benchmark: Markdown and HTML with the headline table, paired differences, figures and every cell.

Each cell result is a dict ``{"method", "protocol", "label_fraction", "pretrain_seed", "finetune_seed", "mIoU",
"OA", "kappa", "per_class": {name: IoU}, "wall_s", ...}`` as saved by :mod:`falsecl.benchmark.runner`; older
results with a single ``seed`` are read as fine-tuning cells of pretraining seed 0. Undefined scores (``None``,
``NaN``) print as ``n/a`` and never stop the report.
"""

from __future__ import annotations

import html
import json
import math
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from falsecl.benchmark.diagnostics import DIAG_TEXT, diagnostics_findings, diagnostics_table, fire_rate_lines
from falsecl.benchmark.evidence import (
    check_versions,
    fire_rates,
    holm_summary,
    holm_verdict,
    pretraining_lengths,
    primary_text,
    reproducibility,
    spread_sources,
)
from falsecl.benchmark.figures import plot_miou, plot_pretrain_curves, read_pretrain_logs
from falsecl.benchmark.stats import comparisons, mean_std, paired_table, verdict

Row = dict[str, Any]

PROTOCOL_NAMES = {"probe": "linear probe (frozen encoder)", "finetune": "DeepLabv3+ fine-tuning"}


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt_pct(value: Any, digits: int = 2) -> str:
    """``100 * value`` with ``digits`` decimals, or ``n/a`` when undefined."""
    v = _num(value)
    return "n/a" if v is None else f"{100 * v:.{digits}f}"


def _protocol(cell: Row) -> str:
    return str(cell.get("protocol", "finetune"))


def _seed_label(cell: Row) -> str:
    return f"p{cell.get('pretrain_seed', 0)}/f{cell.get('finetune_seed', cell.get('seed', 0))}"


def summarize(results: Sequence[Row]) -> list[Row]:
    """One row per (protocol, method, label fraction), in first-seen order: per-seed values, mean, std, n."""
    groups: dict[tuple[str, str, float], list[Row]] = {}
    for cell in results:
        groups.setdefault((_protocol(cell), str(cell["method"]), float(cell["label_fraction"])), []).append(cell)
    rows = []
    for (protocol, method, fraction), cells in groups.items():
        mean, std, n = mean_std([_num(c.get("mIoU")) for c in cells])
        names = list(cells[0].get("per_class") or {})
        rows.append({
            "protocol": protocol, "method": method, "label_fraction": fraction, "mean": mean, "std": std, "n": n,
            "cells": len(cells),
            "values": [(_seed_label(c), _num(c.get("mIoU"))) for c in cells],
            "per_class": {k: mean_std([_num((c.get("per_class") or {}).get(k)) for c in cells])[0] for k in names},
        })
    return rows


def _mean_std_text(row: Row) -> str:
    if row["mean"] is None:
        return "n/a"
    return fmt_pct(row["mean"]) + (f" ± {fmt_pct(row['std'])}" if row["std"] is not None else "") + f" (n={row['n']})"


def headline_tables(rows: Sequence[Row], fire: dict[str, str] | None = None,
                    lengths: dict[str, str] | None = None) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per protocol: a method x label fraction table of ``mean ± std (n)`` test mIoU %.

    With ``fire`` (:func:`falsecl.benchmark.evidence.fire_rates`) and ``lengths``, each method's FALSE fire rate
    and pretraining length follow its scores.
    """
    tables = []
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        mine = [r for r in rows if r["protocol"] == protocol]
        fractions = sorted({r["label_fraction"] for r in mine})
        header = ["method"] + [f"{100 * f:g} % labels" for f in fractions]
        if fire is not None:
            header += ["FALSE fire rate", "pretraining"]
        body = []
        for method in dict.fromkeys(r["method"] for r in mine):
            cells = {r["label_fraction"]: r for r in mine if r["method"] == method}
            extra = [] if fire is None else [fire.get(method, "-"), (lengths or {}).get(method, "-")]
            body.append([method] + [_mean_std_text(cells[f]) if f in cells else "-" for f in fractions] + extra)
        tables.append((PROTOCOL_NAMES.get(protocol, protocol), header, body))
    return tables


def seed_table(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """Every per-seed value (``p<pretraining seed>/f<fine-tuning seed>``) and the per-class mean IoU."""
    names = list(rows[0]["per_class"]) if rows else []
    header = ["protocol", "method", "labels", "per-seed mIoU %", "mean ± std"] + [f"{n} IoU %" for n in names]
    body = [[r["protocol"], r["method"], f"{100 * r['label_fraction']:g} %",
             ", ".join(f"{s}: {fmt_pct(v)}" for s, v in r["values"]), _mean_std_text(r)]
            + [fmt_pct(r["per_class"].get(n)) for n in names] for r in rows]
    return header, body


def diff_table(diffs: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """The paired differences in percentage points, with interval, p-values and the verdict."""
    header = ["protocol", "labels", "method − reference", "n", "mean diff (points)", "95 % CI", "paired t p",
              "Holm-adjusted p", "Wilcoxon p", "verdict (raw)", "verdict (Holm)"]
    body = []
    for d in diffs:
        ci = "n/a" if d["ci_low"] is None else f"[{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]"
        mean = "n/a" if d["mean"] is None else f"{100 * d['mean']:+.2f}"
        body.append([d["protocol"], f"{100 * d['label_fraction']:g} %", f"{d['method']} − {d['reference']}",
                     str(d["n"]), mean, ci, "n/a" if d["p_t"] is None else f"{d['p_t']:.3f}",
                     "n/a" if d.get("p_holm") is None else f"{d['p_holm']:.3f}",
                     "n/a" if d["p_wilcoxon"] is None else f"{d['p_wilcoxon']:.3f}",
                     verdict(d, d["method"], d["reference"]).split(": ", 1)[1].split(" (", 1)[0], holm_verdict(d)])
    return header, body


def cells_table(results: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """Every cell: its seeds, score, wall time and what it started from."""
    header = ["method", "protocol", "labels", "pretrain seed", "fine-tune seed", "mIoU %", "cell wall (s)",
              "pretraining wall (s)", "pretraining steps", "epochs", "commit", "finished", "backbone"]

    def secs(v: Any) -> str:
        x = _num(v)
        return "n/a" if x is None else f"{x:.0f}"

    body = [[str(c["method"]), _protocol(c), f"{100 * float(c['label_fraction']):g} %",
             str(c.get("pretrain_seed", 0)), str(c.get("finetune_seed", c.get("seed", 0))), fmt_pct(c.get("mIoU")),
             secs(c.get("wall_s")), secs(c.get("pretrain_wall_s")), str(c.get("pretrain_steps") or "-"),
             str(c.get("pretrain_epochs") or "-"),
             str(c.get("git_commit") or "n/a")[:10] + ("+dirty" if c.get("git_dirty") else ""),
             str(c.get("finished", "n/a")),
             str(c.get("backbone", "n/a"))] for c in results]
    return header, body


def markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body]) + "\n"


def markdown_table(rows: Sequence[Row]) -> str:
    """Per-seed values and mean ± std as a Markdown table."""
    return markdown(*seed_table(rows))


def _html_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def html_inline(text: str) -> str:
    """Escape ``text`` for HTML and render its Markdown ``**strong**`` and ```code``` spans."""
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def html_text(text: str) -> str:
    """Paragraphs (blank-line separated) and ``- `` bullet lines of Markdown-lite text as HTML."""
    parts = []
    for block in (b.strip() for b in text.split("\n\n")):
        lines = block.splitlines()
        if lines and all(line.startswith("- ") for line in lines):
            parts.append("<ul>" + "".join(f"<li>{html_inline(line[2:])}</li>" for line in lines) + "</ul>")
        elif block:
            parts.append(f"<p>{html_inline(block)}</p>")
    return "".join(parts)


def machine() -> str:
    """The CPU model and logical core count this process sees (the machine the cells were timed on)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} logical cores"


def status_line(results: Sequence[Row], planned: dict[str, int] | None) -> str:
    """How many cells of each protocol are finished out of those planned (``partial`` while some are missing)."""
    done: dict[str, int] = {}
    for cell in results:
        done[_protocol(cell)] = done.get(_protocol(cell), 0) + 1
    parts = []
    for protocol in dict.fromkeys([*(planned or {}), *done]):
        total = (planned or {}).get(protocol)
        n = done.get(protocol, 0)
        tail = " cells" if total is None else f" of {total} cells" + (" (partial)" if n < total else "")
        parts.append(f"{PROTOCOL_NAMES.get(protocol, protocol)}: {n}{tail}")
    return "Status: " + ("; ".join(parts) if parts else "no cell finished yet") + "."


def compute_summary(results: Sequence[Row]) -> str:
    """Summed wall time: pretraining (once per method and seed), then the cells of each protocol."""
    pre: dict[tuple[str, Any], float] = {}
    per_protocol: dict[str, float] = {}
    for cell in results:
        w = _num(cell.get("pretrain_wall_s"))
        if w is not None:
            pre[(str(cell["method"]), cell.get("pretrain_seed", 0))] = w
        per_protocol[_protocol(cell)] = per_protocol.get(_protocol(cell), 0.0) + (_num(cell.get("wall_s")) or 0.0)
    parts = [f"pretraining {sum(pre.values()) / 60:.0f} min ({len(pre)} runs)"]
    parts += [f"{PROTOCOL_NAMES.get(k, k)} {v / 60:.0f} min" for k, v in per_protocol.items()]
    total = sum(pre.values()) + sum(per_protocol.values())
    return f"Wall time, summed over the finished cells: {', '.join(parts)}; {total / 3600:.1f} h in all."


def _fractions(ds: Sequence[Row]) -> str:
    return ", ".join(f"{100 * d['label_fraction']:g}" for d in sorted(ds, key=lambda d: d["label_fraction"])) + " %"


def pair_summary(diffs: Sequence[Row]) -> list[str]:
    """One line per (method, reference): at which label fractions its interval lies above 0, below 0, or spans it."""
    lines = []
    for a, b in dict.fromkeys((d["method"], d["reference"]) for d in diffs):
        mine = [d for d in diffs if (d["method"], d["reference"]) == (a, b)]
        up = [d for d in mine if d["ci_low"] > 0]
        down = [d for d in mine if d["ci_high"] < 0]
        flat = [d for d in mine if d["ci_low"] <= 0 <= d["ci_high"]]
        n = sorted({d["n"] for d in mine})
        parts = ([f"higher at {_fractions(up)} labels"] if up else []) + (
            [f"lower at {_fractions(down)} labels"] if down else [])
        if flat:
            parts.append("no significant difference " + ("at any label fraction" if not parts else
                                                           f"at {_fractions(flat)} labels"))
        lines.append(f"- **{a} vs {b}**: " + "; ".join(parts) + f" (n = {'-'.join(map(str, n))} seeds).")
    return lines


def findings(diffs: Sequence[Row], protocol: str) -> str:
    """The paired differences of ``protocol`` in words: how many intervals exclude 0, then one line per pair."""
    mine = [d for d in diffs if d["protocol"] == protocol and d["ci_low"] is not None]
    if not mine:
        return ""
    above = sum(d["ci_low"] > 0 for d in mine)
    below = sum(d["ci_high"] < 0 for d in mine)
    lines = [f"**Paired differences, {PROTOCOL_NAMES.get(protocol, protocol)}** (95 % intervals of the mean "
             f"difference in test mIoU over matching seeds): {above} of {len(mine)} intervals lie above 0, {below} "
             f"below 0, and {len(mine) - above - below} include 0 (no significant difference); about "
             f"{0.05 * len(mine):.1f} would exclude 0 by chance alone if no method differed.", "",
             *pair_summary(mine), "", "Each interval is in the table of paired differences below."]
    return "\n".join(lines) + "\n"


def _versions() -> str:
    import importlib.metadata as md

    parts = [f"python {platform.python_version()}"]
    for pkg in ("falsecl", "torch", "lightning", "segmentation-models-pytorch", "scipy"):
        try:
            parts.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            continue
    return ", ".join(parts) + f"; {platform.machine()} {platform.system()}"


def write_report(results: Sequence[Row], out_dir: str | Path, title: str = "falsecl benchmark",
                 methods: Sequence[Row] | None = None, intro: str | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``miou.png`` and (when logged) ``pretrain_curves.png``.

    Args:
        results: Cell results (see module docstring).
        out_dir: Destination folder (also searched for ``<method>/pretrain_seed*/csv/metrics.csv`` and
            ``benchmark_args.json``).
        title: Heading of the report.
        methods: ``{"name", "pretrained", "base"}`` per method for the comparisons (default: read from
            ``benchmark_args.json``, else random init is any method whose name starts with ``random``).
        intro: Markdown-lite text placed under the heading: what ran and why (default: ``benchmark_args.json``'s
            ``intro``). The status, the findings in words and the wall time follow it, computed from the cells.

    Returns:
        The paths written, by kind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    repro = [r for r in results if r.get("repro")]  # reruns from scratch: the reproducibility section only
    results = [r for r in results if not r.get("repro")]
    args_path = out / "benchmark_args.json"
    args = json.loads(args_path.read_text()) if args_path.is_file() else {}
    if methods is None:
        methods = args.get("method_info") or [
            {"name": n, "pretrained": not n.startswith("random"), "base": None}
            for n in dict.fromkeys(str(c["method"]) for c in results)]
    intro = args.get("intro", "") if intro is None else intro
    versions = check_versions([*results, *repro], bool(args.get("allow_mixed_versions")))
    rows = summarize(results)
    diffs = paired_table(results, comparisons(methods))
    paths: dict[str, Path] = {}
    if rows:
        plot_miou(rows, out / "miou.png")
        paths["png"] = out / "miou.png"
    logs = read_pretrain_logs(out, [m["name"] for m in methods])
    curves = plot_pretrain_curves(logs, out / "pretrain_curves.png") if logs else []
    diag = diagnostics_table(logs)
    sections: list[tuple[str, str, Any]] = []  # (heading, text, table or image)
    primary, _ = primary_text(results, args.get("primary_endpoint"))
    if primary:
        sections.append(("Primary endpoint", primary, None))
    for name, header, body in headline_tables(rows, fire_rates(results), pretraining_lengths(results)):
        sections.append((f"Test mIoU %, {name}", "mean ± std over seeds (n = defined values)", (header, body)))
    if rows:
        sections.append(("mIoU against label fraction", "", "miou.png"))
    n_int = sum(d["ci_low"] is not None for d in diffs)
    sections.append(("Paired differences", "Over cells with the same label fraction, pretraining seed and "
                     "fine-tuning (label-subset) seed, averaged over the subset seeds within each pretraining seed "
                     "(the unit: n counts pretraining seeds); 95 % Student-t interval of the mean difference, in "
                     "mIoU points. The raw verdict needs an interval that excludes 0; of "
                     f"{n_int} intervals, about {0.05 * n_int:.1f} would exclude 0 by chance alone if no method "
                     "differed, so the Holm verdict (adjusted p < 0.05 over every comparison of the table) is the "
                     "one to quote.", diff_table(diffs)))
    sections.append(("Per-seed values", "", seed_table(rows)))
    headline = args.get("headline_protocol") or (results[0].get("protocol") if results else None)
    spread = spread_sources(results, str(headline))
    if spread:
        sections.append(("Where the spread comes from", *spread))
    if diag is not None:
        sections.append(("FALSE's false-negative diagnostics", DIAG_TEXT + "\n\n" + diagnostics_findings(logs), diag))
    diag_text = ("FALSE fire rate" + (" and false-negative diagnostics" if diag else "")
                 + " logged during pretraining (one line per pretraining seed). A method without FALSE may log a "
                 "fire rate too (MoCo's InfoNCE is FALSE with alpha 0): it counts the candidates the gate would "
                 "accept, which change nothing."
                 + ("" if diag else " False-negative diagnostics were not logged by these pretraining runs."))
    if curves:
        rates = fire_rate_lines(logs)
        sections.append(("FALSE during pretraining", diag_text + ("\n\n" + rates if rates else ""),
                         "pretrain_curves.png"))
    else:
        sections.append(("FALSE during pretraining", "No fire rate or diagnostics were logged.", None))
    repro_section = reproducibility(results, repro, out / "repro.png")
    if repro_section is not None:
        sections.append(("Reproducibility", repro_section[0] + " Figure: repro.png.", repro_section[1]))
        sections.append(("Reproducibility figure", "", "repro.png"))
    if (out / "panel.png").is_file():
        sections.append(("Predictions on test images", args.get("panel_caption", ""), "panel.png"))
    sections.append(("Every cell", "", cells_table(results)))
    config = args.get("arguments")
    headline = str(args.get("headline_protocol") or (rows[0]["protocol"] if rows else ""))
    summary = "\n\n".join(t for t in (
        primary,
        holm_summary(diffs),
        status_line(results, args.get("planned_cells")),
        # The headline protocol first, then the others.
        *(findings(diffs, p) for p in dict.fromkeys([headline, *(r["protocol"] for r in rows)])),
        compute_summary(results) + f" Machine: {machine()}. Versions: {_versions()}.", versions) if t)
    md_parts = [f"# {title}\n\n", intro.strip() + "\n\n" if intro else "", summary + "\n"]
    html_parts = [f"<h1>{html.escape(title)}</h1>", html_text(intro), html_text(summary)]
    for heading, text, content in sections:
        md_parts.append(f"\n## {heading}\n\n" + (text + "\n\n" if text else ""))
        html_parts.append(f"<h2>{html.escape(heading)}</h2>" + html_text(text))
        if isinstance(content, tuple):
            md_parts.append(markdown(*content))
            html_parts.append(_html_table(*content))
        elif isinstance(content, str):
            md_parts.append(f"![{heading}]({content})\n")
            html_parts.append(f"<p><img src='{html.escape(content)}' alt='{html.escape(heading)}'></p>")
        elif not rows and heading.startswith("Every"):
            md_parts.append("No finished cell yet.\n")
    if config:
        text = json.dumps(config, indent=2)
        md_parts.append(f"\n## Configuration\n\n```json\n{text}\n```\n")
        html_parts.append(f"<h2>Configuration</h2><pre>{html.escape(text)}</pre>")
    md = out / "report.md"
    md.write_text("".join(md_parts))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;margin:0.5em 0}"
            "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;font-size:13px}img{max-width:100%}"
            "pre{background:#f6f6f6;padding:1em;font-size:12px}</style></head><body>"
            + "".join(html_parts) + "</body></html>\n")
    (out / "report.html").write_text(page)
    paths.update({"markdown": md, "html": out / "report.html"})
    if curves:
        paths["curves"] = out / "pretrain_curves.png"
    return paths
