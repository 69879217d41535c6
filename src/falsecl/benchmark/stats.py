"""Paired statistics of the benchmark: per-seed values, mean ± std, paired differences with a 95 % t-interval.

Two methods are compared over the cells they share: the same protocol, label fraction, pretraining seed and
fine-tuning seed. The differences ``d_i = a_i - b_i`` give the mean difference, its 95 % Student-t confidence
interval ``mean ± t_{0.975, n-1} * sd / sqrt(n)``, the paired t-test p-value and, from 6 pairs on (below that
the exact Wilcoxon signed-rank test cannot reach p < 0.05), the Wilcoxon p-value. Undefined values (``None`` or
``NaN`` scores, fewer than 2 pairs, identical non-zero differences: sd 0) come out as ``None`` and print as ``n/a``.

The unit of replication is the pretraining seed: cells that share a pretraining (several label-subset seeds) are
not independent, so their differences are averaged within each pretraining seed before the interval is formed.
Many comparisons are corrected by Holm's step-down method (:func:`holm`, Holm 1979), which controls the
family-wise error rate without assuming independence.
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
    elif out["mean"] == 0:
        out["p_t"] = 1.0  # identical methods on every seed: no difference, interval [0, 0]
    else:
        # Identical non-zero differences: t is infinite and the interval has zero width, which two or three
        # replicates cannot support; the test is undefined, not "p = 0".
        out["ci_low"] = out["ci_high"] = None
    out["zero_spread"] = sd == 0
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
        if diff.get("zero_spread") and diff.get("mean") is not None:
            return (f"{a} vs {b}: n/a (all {diff['n']} differences identical, {points * diff['mean']:+.2f} points: "
                    "no spread to test)")
        return f"{a} vs {b}: n/a (fewer than 2 matching seeds)"
    interval = f"{points * diff['mean']:+.2f} points, 95 % CI [{points * lo:+.2f}, {points * hi:+.2f}], n = {diff['n']}"
    if lo <= 0.0 <= hi:
        return f"{a} vs {b}: no significant difference ({interval})"
    word = "higher" if lo > 0 else "lower"
    return f"{a} vs {b}: {a} is {word} ({interval})"


def comparisons(methods: Sequence[Row]) -> list[tuple[str, str]]:
    """Pairs ``(method, reference)``: each method against its ``base``, each pretrained one against the control.

    The control a pretrained method must beat is the most refined one: a method without pretraining that no other
    control builds on (``random_init_bn``, BatchNorm statistics refitted on the training images, rather than the
    ``random_init`` it modifies), since a pretrained backbone carries statistics fitted to the data. Comparing with
    the plain random initialisation alone would credit pretraining with that calibration.

    Args:
        methods: ``{"name", "pretrained": bool, "base": str | None}`` per method.
    """
    names = {m["name"] for m in methods}
    controls = [m for m in methods if not m.get("pretrained")]
    built_on = {m.get("base") for m in controls}
    strongest = [m["name"] for m in controls if m["name"] not in built_on]
    pairs: list[tuple[str, str]] = []
    for m in methods:
        if m.get("base") and m["base"] in names:
            pairs.append((m["name"], m["base"]))
    for m in methods:
        if m.get("pretrained"):
            pairs.extend((m["name"], c) for c in strongest)
    return list(dict.fromkeys(pairs))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (step-down Bonferroni) of the defined ones, in the input order.

    With the ``m`` defined p-values sorted ascending, ``p_(j)`` is adjusted to ``max_{i <= j} min(1, (m - i + 1)
    p_(i))``; a comparison is significant at level ``a`` after correction when its adjusted value is below ``a``.

    Args:
        pvalues: Raw p-values; ``None`` (undefined) stays ``None`` and does not count in ``m``.
    """
    defined = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(defined)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(defined):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def _per_pretraining_seed(va: dict[tuple[str, float, int, int], float | None],
                          vb: dict[tuple[str, float, int, int], float | None]) -> dict[tuple[str, float], list[float]]:
    """Per (protocol, fraction): one mean difference per pretraining seed, over its matching subset seeds."""
    within: dict[tuple[str, float, int], list[float]] = {}
    for k in sorted(set(va) & set(vb)):
        x, y = va[k], vb[k]
        within.setdefault((k[0], k[1], k[2]), [])
        if x is not None and y is not None:
            within[(k[0], k[1], k[2])].append(x - y)
    groups: dict[tuple[str, float], list[float]] = {}
    for (protocol, fraction, _p), diffs in within.items():
        groups.setdefault((protocol, fraction), [])
        if diffs:
            groups[(protocol, fraction)].append(statistics.fmean(diffs))
    return groups


def paired_table(results: Sequence[Row], pairs: Sequence[tuple[str, str]], key: str = "mIoU") -> list[Row]:
    """Paired differences of ``key`` for every pair, protocol and label fraction that share seeds.

    Differences are taken cell by cell (same fraction, pretraining seed and subset seed), averaged over the subset
    seeds within each pretraining seed, and the interval is formed over pretraining seeds (``n``). Every row also
    carries its Holm-adjusted p-value over all rows (``p_holm``).
    """
    by_method: dict[str, dict[tuple[str, float, int, int], float | None]] = {}
    for cell in results:
        by_method.setdefault(str(cell["method"]), {})[_key(cell)] = _value(cell, key)
    rows = []
    for a, b in pairs:
        groups = _per_pretraining_seed(by_method.get(a, {}), by_method.get(b, {}))
        for (protocol, fraction), diffs in groups.items():
            rows.append({"method": a, "reference": b, "protocol": protocol, "label_fraction": fraction,
                         **paired_difference(diffs)})
    for row, adjusted in zip(rows, holm([r["p_t"] for r in rows]), strict=True):
        row["p_holm"] = adjusted
    return rows


def primary_endpoint(results: Sequence[Row], spec: Row) -> Row:
    """The pre-registered primary endpoint: ``method - reference``, averaged per pretraining seed.

    For each pretraining seed, ``method``'s test ``key`` is averaged over the endpoint's fractions and every
    subset seed, likewise ``reference``'s, and the two means are subtracted; the pretraining seed is the unit
    (runs that share a pretraining are not independent), so ``n`` is the number of pretraining seeds. A seed
    counts only when both methods hold exactly the same (fraction, subset seed) cells, all defined, covering
    every fraction of the endpoint.

    Args:
        results: Cell results.
        spec: ``{"method", "reference", "protocol" (default probe), "fractions" (default: all), "key"
            (default mIoU)}``.

    Returns:
        :func:`paired_difference` of the per-seed differences, plus ``per_seed`` (the differences), ``seeds``
        and the ``spec``.
    """
    protocol = str(spec.get("protocol", "probe"))
    key = str(spec.get("key", "mIoU"))
    fractions = {float(f) for f in spec.get("fractions") or []}
    cells: dict[str, dict[int, dict[tuple[float, int], float | None]]] = {}
    for cell in results:
        k = _key(cell)
        if k[0] != protocol or (fractions and k[1] not in fractions):
            continue
        cells.setdefault(str(cell["method"]), {}).setdefault(k[2], {})[(k[1], k[3])] = _value(cell, key)
    a, b = cells.get(str(spec["method"]), {}), cells.get(str(spec["reference"]), {})
    seeds, per_seed = [], []
    for p in sorted(set(a) & set(b)):
        va, vb = a[p], b[p]
        covered = {f for f, _ in va}
        if (set(va) != set(vb) or any(v is None for v in [*va.values(), *vb.values()])
                or (fractions and covered != fractions)):
            continue
        ma = statistics.fmean(float(v) for v in va.values() if v is not None)
        mb = statistics.fmean(float(v) for v in vb.values() if v is not None)
        seeds.append(p)
        per_seed.append(ma - mb)
    return {**paired_difference(per_seed), "per_seed": per_seed, "seeds": seeds, "spec": dict(spec)}


def two_way_shares(grid: dict[tuple[int, int], float]) -> dict[str, float] | None:
    """Shares of the variance of ``y[p, s]`` due to the pretraining seed, the label-subset seed and the rest.

    A two-way layout without replication: with grand mean ``m``, row means ``r_p`` over the ``S`` subset seeds and
    column means ``c_s`` over the ``P`` pretraining seeds, ``SS_pretraining = S * sum_p (r_p - m)^2``,
    ``SS_subset = P * sum_s (c_s - m)^2`` and the residual (interaction and noise) is what remains of
    ``SS_total = sum (y - m)^2``; each is divided by ``SS_total``.

    Args:
        grid: ``(pretraining seed, subset seed) -> value`` over a complete grid.

    Returns:
        ``{"pretraining", "subset", "residual"}`` summing to 1, or ``None`` for an incomplete grid, fewer than two
        levels of either seed, or no spread at all.
    """
    rows = sorted({p for p, _ in grid})
    cols = sorted({s for _, s in grid})
    if len(rows) < 2 or len(cols) < 2 or any((p, s) not in grid for p in rows for s in cols):
        return None
    m = statistics.fmean(grid.values())
    total = sum((v - m) ** 2 for v in grid.values())
    if total <= 0.0:
        return None
    ss_p = len(cols) * sum((statistics.fmean(grid[p, s] for s in cols) - m) ** 2 for p in rows)
    ss_s = len(rows) * sum((statistics.fmean(grid[p, s] for p in rows) - m) ** 2 for s in cols)
    residual = max(0.0, total - ss_p - ss_s)
    return {"pretraining": ss_p / total, "subset": ss_s / total, "residual": residual / total}
