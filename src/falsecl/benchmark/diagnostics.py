"""FALSE's false-negative diagnostics in the benchmark report: a table over seeds and what it says in words.

The pretraining runs log them (``train/diag_*``, see :mod:`falsecl.losses.diagnostics`) every few steps; here
each run is summarised by its means over the second half of training, then the seeds are combined.
"""

from __future__ import annotations

import math

from falsecl.benchmark.stats import mean_std, paired_difference

#: ``{method: [{column: [(step, value), ...]} per pretraining seed]}``, as read by ``read_pretrain_logs``.
Logs = dict[str, list[dict[str, list[tuple[int, float]]]]]

DIAG_TEXT = (
    "Logged every 10 pretraining steps on the training batch itself, without gradient; the patches' majority "
    "classes are read for these numbers only and never reach a loss. Rows: share of the batch's rows whose loss "
    "the selection changes. Precision: share of accepted (anchor, candidate) pairs whose patches have the same "
    "majority class. `mutual`: per_anchor pairs accepted from both ends. References on the same batch: a random "
    "negative (chance), the most similar negative (hardest), and the most similar negative on the rows whose "
    "positive passes the gate (per_anchor's like-for-like reference). Each run's mean over the second half of "
    "its logged steps, then mean ± std over pretraining seeds. `official` changes about one row per batch, so "
    "its precision rests on a handful of pairs per run. Only the SimCLR-family methods log them.")


DIAG_COLUMNS = (("per_anchor_rows", "per_anchor rows"), ("per_anchor_precision", "per_anchor precision"),
                ("official_rows", "official rows"), ("official_precision", "official precision"),
                ("mutual_rows", "mutual rows"), ("mutual_precision", "mutual precision"),
                ("chance_precision", "chance"), ("hardest_precision", "hardest negative"),
                ("hardest_gated_precision", "hardest, gated rows"))


def _diag_key(column: str) -> str | None:
    for marker in ("diag_", "diag/"):
        if marker in column:
            return column.split(marker, 1)[1].removesuffix("_step").removesuffix("_epoch")
    return None


def _second_half_mean(series: list[tuple[int, float]]) -> float | None:
    if not series:
        return None
    last = max(step for step, _ in series)
    vals = [v for step, v in series if step >= last / 2 and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def run_means(run: dict[str, list[tuple[int, float]]]) -> dict[str, float]:
    """A run's diagnostics, each the mean of its defined values over the second half of its logged steps.

    The first half is left out: a barely trained network passes almost every positive through the gate.
    """
    means = {}
    for column, series in run.items():
        key = _diag_key(column)
        mean = None if key is None else _second_half_mean(series)
        if key is not None and mean is not None:
            means[key] = mean
    return means


def diagnostics_table(logs: Logs) -> tuple[list[str], list[list[str]]] | None:
    """Mean ± std over seeds of each run's :func:`run_means`; ``None`` when no diagnostics were logged."""
    body = []
    for method, runs in logs.items():
        per_key: dict[str, list[float]] = {}
        for run in runs:
            for key, value in run_means(run).items():
                per_key.setdefault(key, []).append(value)
        if not per_key:
            continue
        row = [method, str(max(len(v) for v in per_key.values()))]
        for key, _ in DIAG_COLUMNS:
            mean, std, _n = mean_std(per_key.get(key, []))
            # Shares of rows in %, one decimal: official acts on well under 1 % of them.
            scale, unit, digits = (100.0, " %", 1) if key.endswith("_rows") else (1.0, "", 2)
            row.append("n/a" if mean is None else f"{scale * mean:.{digits}f}"
                       + ("" if std is None else f" ± {scale * std:.{digits}f}") + unit)
        body.append(row)
    if not body:
        return None
    return ["method", "seeds", *(name for _, name in DIAG_COLUMNS)], body


def diagnostics_findings(logs: Logs) -> str:
    """Per method, ``per_anchor``'s precision against the hardest negative on the same gated rows, in words.

    The paired difference over pretraining seeds (each run's :func:`run_means`) with its 95 % interval: the
    selection adds something over simply taking the hardest negative only if the interval lies above 0.
    """
    lines = []
    for method, runs in logs.items():
        pairs = [(m["per_anchor_precision"], m["hardest_gated_precision"]) for m in map(run_means, runs)
                 if "per_anchor_precision" in m and "hardest_gated_precision" in m]
        if not pairs:
            continue
        d = paired_difference([a - b for a, b in pairs])
        a = sum(p[0] for p in pairs) / len(pairs)
        b = sum(p[1] for p in pairs) / len(pairs)
        head = f"- {method}: per_anchor precision {a:.2f} against {b:.2f} for the hardest negative on the same rows"
        if d["ci_low"] is None:
            lines.append(head + f" (n = {len(pairs)}: no interval yet).")
            continue
        interval = f"difference {d['mean']:+.3f}, 95 % CI [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], n = {d['n']}"
        if d["ci_low"] > 0:
            said = "per_anchor is more precise than the hardest negative"
        elif d["ci_high"] < 0:
            said = "per_anchor is less precise than the hardest negative"
        else:
            said = "no significant difference: per_anchor is no more precise than the hardest negative"
        lines.append(f"{head} ({interval}): {said}.")
    return "\n".join(lines)


def fire_rate_lines(logs: Logs) -> str:
    """Per method, the share of rows FALSE changed per step over the second half of pretraining, over seeds.

    A rate near 0 means FALSE hardly acted: the method then trained almost exactly as its base, whatever the
    report's differences say.
    """
    lines = []
    for method, runs in logs.items():
        rates = [r for r in (_second_half_mean(next((s for c, s in run.items() if c.endswith("fire_rate")), []))
                             for run in runs) if r is not None]
        if rates:
            mean, std, n = mean_std(rates)
            spread = "" if std is None else f" ± {100 * std:.1f}"
            lines.append(f"- {method}: {100 * (mean or 0.0):.1f}{spread} % of rows per step (n = {n} seeds)")
    if not lines:
        return ""
    return ("Share of rows whose loss FALSE changed (its fire rate), mean over the second half of pretraining; a "
            "method whose loss has alpha 0 counts the candidates the gate would accept:\n\n" + "\n".join(lines))
