"""Paired statistics of the benchmark: per-seed values, mean ± std, paired differences with a 95 % t-interval.

Two methods are compared over the cells they share: the same protocol, label fraction, pretraining seed and
fine-tuning seed. The differences ``d_i = a_i - b_i`` give the mean difference, its 95 % Student-t confidence
interval ``mean ± t_{0.975, n-1} * sd / sqrt(n)``, the paired t-test p-value and, from 6 pairs on (below that
the exact Wilcoxon signed-rank test cannot reach p < 0.05), the Wilcoxon p-value. Undefined values (``None`` or
``NaN`` scores, fewer than 2 pairs) come out as ``None`` and print as ``n/a``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

Row = dict[str, Any]

#: Fewest pairs for which the Wilcoxon signed-rank test is reported.
WILCOXON_MIN_PAIRS = 6


def _value(cell: Row, key: str = "mIoU") -> float | None:
    v = cell.get(key)
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _key(cell: Row) -> tuple[str, float, int, int]:
    ft = cell.get("finetune_seed")
    return (str(cell.get("protocol", "finetune")), float(cell["label_fraction"]),
            int(cell.get("pretrain_seed") or 0), int(cell.get("seed") or 0) if ft is None else int(ft))


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation and count of the defined values (``None`` where undefined)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None, 0
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else None), len(finite)


def paired_difference(diffs: Sequence[float], confidence: float = 0.95) -> Row:
    """Mean of paired differences with its t-interval and test p-values.

    Args:
        diffs: ``a_i - b_i`` over matching seeds.
        confidence: Level of the two-sided interval.

    Returns:
        ``{"n", "mean", "std", "ci_low", "ci_high", "p_t", "p_wilcoxon"}``; ``None`` for what is undefined.
    """
    from scipy import stats

    d = [float(x) for x in diffs if x is not None and math.isfinite(x)]
    n = len(d)
    out: Row = {"n": n, "mean": statistics.fmean(d) if d else None, "std": None, "ci_low": None, "ci_high": None,
                "p_t": None, "p_wilcoxon": None}
    if n < 2:
        return out
    sd = statistics.stdev(d)
    out["std"] = sd
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    if sd > 0:
        out["p_t"] = float(stats.ttest_1samp(d, 0.0).pvalue)
    else:
        out["p_t"] = 1.0 if out["mean"] == 0 else 0.0
    if n >= WILCOXON_MIN_PAIRS and any(x != 0 for x in d):
        out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue)
    return out


def verdict(diff: Row, a: str, b: str, points: float = 100.0) -> str:
    """One sentence that says what the interval supports and nothing more.

    Args:
        diff: A :func:`paired_difference` result (of fractions; ``points`` scales them to percentage points).
        a: The method compared.
        b: The reference method.
        points: Scale of the printed numbers.
    """
    lo, hi = diff.get("ci_low"), diff.get("ci_high")
    if lo is None or hi is None:
        return f"{a} vs {b}: n/a (fewer than 2 matching seeds)"
    interval = f"{points * diff['mean']:+.2f} points, 95 % CI [{points * lo:+.2f}, {points * hi:+.2f}], n = {diff['n']}"
    if lo <= 0.0 <= hi:
        return f"{a} vs {b}: no significant difference ({interval})"
    word = "higher" if lo > 0 else "lower"
    return f"{a} vs {b}: {a} is {word} ({interval})"


def comparisons(methods: Sequence[Row]) -> list[tuple[str, str]]:
    """Pairs ``(method, reference)``: each method against its ``base``, each pretrained one against random init.

    Args:
        methods: ``{"name", "pretrained": bool, "base": str | None}`` per method.
    """
    names = {m["name"] for m in methods}
    randoms = [m["name"] for m in methods if not m.get("pretrained")]
    pairs: list[tuple[str, str]] = []
    for m in methods:
        if m.get("base") and m["base"] in names:
            pairs.append((m["name"], m["base"]))
    for m in methods:
        if m.get("pretrained") and randoms:
            pairs.append((m["name"], randoms[0]))
    return list(dict.fromkeys(pairs))


def paired_table(results: Sequence[Row], pairs: Sequence[tuple[str, str]], key: str = "mIoU") -> list[Row]:
    """Paired differences of ``key`` for every pair, protocol and label fraction that share seeds."""
    by_method: dict[str, dict[tuple[str, float, int, int], float | None]] = {}
    for cell in results:
        by_method.setdefault(str(cell["method"]), {})[_key(cell)] = _value(cell, key)
    rows = []
    for a, b in pairs:
        va, vb = by_method.get(a, {}), by_method.get(b, {})
        groups: dict[tuple[str, float], list[float]] = {}
        for k in sorted(set(va) & set(vb)):
            x, y = va[k], vb[k]
            groups.setdefault((k[0], k[1]), [])
            if x is not None and y is not None:
                groups[(k[0], k[1])].append(x - y)
        for (protocol, fraction), diffs in groups.items():
            rows.append({"method": a, "reference": b, "protocol": protocol, "label_fraction": fraction,
                         **paired_difference(diffs)})
    return rows
