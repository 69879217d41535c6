"""What the report must say before anything else: the pre-registered endpoint, corrected verdicts, provenance.

- The primary endpoint (:func:`falsecl.benchmark.stats.primary_endpoint`), written in the config before the run,
  with its 95 % interval and p-value over pretraining seeds.
- Every other comparison's verdict twice: raw (the 95 % interval excludes 0) and after Holm's correction over all
  comparisons (adjusted p < 0.05).
- The code versions the cells were computed with: a report refuses to combine several unless asked, and then lists
  them.
- The reproducibility of chosen cells, rerun from scratch, against the spread over pretraining seeds.
- Where the spread comes from: pretraining seed against label subset (a two-way decomposition).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from falsecl.benchmark.stats import mean_std, primary_endpoint, two_way_shares

Row = dict[str, Any]

#: Family-wise level of the Holm-corrected verdicts.
ALPHA = 0.05


def check_versions(results: Sequence[Row], allow_mixed: bool) -> str:
    """The code versions of the cells in words; refuses several unless ``allow_mixed``.

    Cells without provenance (older runs) count as the version ``unknown``.

    Raises:
        ValueError: Several code versions (or a dirty checkout next to a clean one) and ``allow_mixed`` is False.
    """
    versions: dict[str, set[str]] = {}
    for r in results:
        version = str(r.get("code_version") or "unknown")
        versions.setdefault(version, set()).add(str(r.get("git_commit") or "unknown")[:12]
                                                + (" (dirty)" if r.get("git_dirty") else ""))
    listed = "; ".join(f"{v}: commits {', '.join(sorted(c))}" for v, c in versions.items())
    if len(versions) > 1 and not allow_mixed:
        raise ValueError(f"the cells were computed with {len(versions)} code versions ({listed}); rerun the "
                         "older cells at one version, or pass --allow_mixed_versions true to report them together")
    if len(versions) > 1:
        return f"**Warning: this report mixes {len(versions)} code versions** ({listed})."
    if not versions:
        return ""
    return f"Code version (src/ and configs/ trees): {listed}."


def holm_verdict(diff: Row) -> str:
    """``higher`` / ``lower`` when the Holm-adjusted p-value is below :data:`ALPHA`, else ``no difference``."""
    p, mean = diff.get("p_holm"), diff.get("mean")
    if p is None or mean is None:
        return "n/a"
    return ("higher" if mean > 0 else "lower") if p < ALPHA else "no significant difference"


def primary_text(results: Sequence[Row], spec: Row | None) -> tuple[str, Row | None]:
    """The primary endpoint as a paragraph (and its result), or ``("", None)`` when none was registered."""
    if not spec:
        return "", None
    ep = primary_endpoint(results, spec)
    fractions = ", ".join(f"{100 * float(f):g}" for f in spec.get("fractions") or []) or "all"
    name = f"{spec['method']} − {spec['reference']}"
    head = (f"**Primary endpoint (pre-registered): {name}**, {spec.get('protocol', 'probe')} test mIoU averaged "
            f"over the label fractions ({fractions} %) and the subset seeds within each pretraining seed; the unit "
            "is the pretraining seed")
    if ep["mean"] is None:
        return head + ": no pretraining seed has all its cells yet.", ep
    per_seed = ", ".join(f"{100 * d:+.2f}" for d in ep["per_seed"])
    if ep["ci_low"] is None:
        return head + (f": {100 * ep['mean']:+.2f} points, n = {ep['n']} pretraining seeds (per seed {per_seed}); "
                       "no interval (fewer than 2 seeds or identical differences)."), ep
    if ep["ci_low"] > 0:
        said = f"{spec['method']} is higher than {spec['reference']}"
    elif ep["ci_high"] < 0:
        said = f"{spec['method']} is lower than {spec['reference']}"
    else:
        said = f"no significant difference between {spec['method']} and {spec['reference']}"
    return head + (f": {100 * ep['mean']:+.2f} points, 95 % CI [{100 * ep['ci_low']:+.2f}, "
                   f"{100 * ep['ci_high']:+.2f}], paired t p = {ep['p_t']:.3f}, n = {ep['n']} pretraining seeds "
                   f"(per seed {per_seed}): {said}."), ep


def holm_summary(diffs: Sequence[Row]) -> str:
    """How many comparisons stay significant after Holm's correction, and which."""
    defined = [d for d in diffs if d.get("p_holm") is not None]
    if not defined:
        return ""
    kept = [d for d in defined if d["p_holm"] < ALPHA]
    raw = sum(d["ci_low"] is not None and (d["ci_low"] > 0 or d["ci_high"] < 0) for d in defined)
    names = "; ".join(f"{d['method']} − {d['reference']} at {100 * d['label_fraction']:g} % ({d['protocol']}): "
                      f"{100 * d['mean']:+.2f} points, Holm p = {d['p_holm']:.3f}" for d in kept)
    return (f"**Corrected for {len(defined)} comparisons (Holm):** {len(kept)} significant at 5 %"
            + (f" ({names})" if kept else "") + f"; {raw} interval(s) exclude 0 before correction.")


def fire_rates(results: Sequence[Row]) -> dict[str, str]:
    """Per method, FALSE's fire rate over the second half of pretraining, mean over its pretraining seeds."""
    per: dict[str, dict[Any, float]] = {}
    for r in results:
        v = r.get("fire_rate")
        if isinstance(v, int | float) and math.isfinite(v):
            per.setdefault(str(r["method"]), {})[r.get("pretrain_seed")] = float(v)
    return {m: f"{100 * statistics.fmean(v.values()):.1f} %" for m, v in per.items()}


def pretraining_lengths(results: Sequence[Row]) -> dict[str, str]:
    """Per method, the pretraining steps and epochs recorded by its cells (``500 steps, 7.35 epochs``).

    Pretrainings that were interrupted and resumed are named (``seed 0 resumed at step 272``): they are valid runs,
    but not reproducible from their seed alone.
    """
    out: dict[str, set[str]] = {}
    resumed: dict[str, dict[Any, str]] = {}
    for r in results:
        if r.get("pretrain_steps") is not None:
            epochs = r.get("pretrain_epochs")
            out.setdefault(str(r["method"]), set()).add(
                f"{r['pretrain_steps']} steps" + ("" if epochs is None else f", {epochs} epochs"))
        if r.get("pretrain_resumed_at"):
            steps = ", ".join("?" if s is None else str(s) for s in r["pretrain_resumed_at"])
            seed = r.get("pretrain_seed")
            resumed.setdefault(str(r["method"]), {})[seed] = f"seed {seed} resumed at step {steps}"
    return {m: " / ".join(sorted(v)) + "".join(f"; {t}" for _, t in sorted(resumed.get(m, {}).items(), key=str))
            for m, v in out.items()}


def reproducibility(results: Sequence[Row], reruns: Sequence[Row], path: Path) -> tuple[str, Any] | None:
    """Rerun cells against their originals, next to the spread over pretraining seeds; draws ``path``.

    Returns:
        ``(text, (header, body))`` or ``None`` without reruns.
    """
    if not reruns:
        return None

    def cell_id(r: Row) -> tuple[str, str, float, int, int]:
        return (str(r["method"]), str(r.get("protocol")), float(r["label_fraction"]), int(r["pretrain_seed"]),
                int(r["finetune_seed"]))

    original = {cell_id(r): r for r in results}
    body, diffs, points = [], [], []
    for r in reruns:
        o = original.get(cell_id(r))
        if o is None or o.get("mIoU") is None or r.get("mIoU") is None:
            continue
        d = float(r["mIoU"]) - float(o["mIoU"])
        diffs.append(d)
        # The seed spread: std over pretraining seeds of the same method, fraction and subset seed.
        spread = mean_std([c.get("mIoU") for c in results if c["method"] == r["method"]
                           and float(c["label_fraction"]) == float(r["label_fraction"])
                           and c["finetune_seed"] == r["finetune_seed"]])[1]
        points.append((float(o["mIoU"]), float(r["mIoU"]), spread))
        body.append([str(r["method"]), f"{100 * float(r['label_fraction']):g} %", str(r["pretrain_seed"]),
                     str(r["finetune_seed"]), f"{100 * float(o['mIoU']):.2f}", f"{100 * float(r['mIoU']):.2f}",
                     f"{100 * d:+.2f}", "n/a" if spread is None else f"{100 * spread:.2f}"])
    if not body:
        return None
    seed_sd = [p[2] for p in points if p[2] is not None]
    text = (f"{len(body)} cells rerun from scratch (pretraining and probe, same seeds, same code, same machine "
            f"kind): mean |rerun − original| {100 * statistics.fmean(abs(d) for d in diffs):.2f} points, largest "
            f"{100 * max(abs(d) for d in diffs):.2f}; the std over pretraining seeds of the same cells is "
            + (f"{100 * statistics.fmean(seed_sd):.2f} points on average." if seed_sd else "n/a."))
    _plot(points, path)
    header = ["method", "labels", "pretrain seed", "subset seed", "original mIoU %", "rerun mIoU %",
              "rerun − original", "std over pretraining seeds"]
    return text, (header, body)


def _plot(points: Sequence[tuple[float, float, float | None]], path: Path) -> None:
    from falsecl.benchmark.figures import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    xs = [100 * p[0] for p in points]
    ys = [100 * p[1] for p in points]
    err = [100 * (p[2] or 0.0) for p in points]
    ax.errorbar(xs, ys, xerr=err, fmt="o", capsize=2, alpha=0.8, label="rerun vs original (bar: seed std)")
    lo, hi = min(xs + ys) - 1, max(xs + ys) + 1
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="identical")
    ax.set_xlabel("original test mIoU (%)")
    ax.set_ylabel("rerun from scratch (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def spread_sources(results: Sequence[Row], protocol: str) -> tuple[str, Any] | None:
    """Where the spread of a method's mIoU comes from, per label fraction: pretraining seed, label subset, rest.

    Each method's complete ``pretraining seed x subset seed`` grid is decomposed (:func:`two_way_shares`) and the
    shares are averaged over the methods; a user reads off whether more seeds of pretraining or more label subsets
    would narrow the intervals, and how much the choice of the labelled patches alone moves the score.

    Returns:
        ``(text, (header, body))``, or ``None`` when no method has a complete grid of at least 2 x 2 seeds.
    """
    grids: dict[float, dict[str, dict[tuple[int, int], float]]] = {}
    for r in results:
        v = r.get("mIoU")
        if r.get("protocol") != protocol or v is None or not math.isfinite(float(v)):
            continue
        grid = grids.setdefault(float(r["label_fraction"]), {}).setdefault(str(r["method"]), {})
        grid[int(r.get("pretrain_seed") or 0), int(r.get("finetune_seed") or 0)] = float(v)
    body: list[list[str]] = []
    for fraction in sorted(grids):
        shares = [s for s in (two_way_shares(g) for g in grids[fraction].values()) if s is not None]
        if shares:
            mean = {k: statistics.fmean(s[k] for s in shares) for k in ("pretraining", "subset", "residual")}
            body.append([f"{100 * fraction:g} %", *(f"{100 * mean[k]:.1f} %" for k in mean), str(len(shares))])
    if not body:
        return None
    text = ("Share of the variance of a method's test mIoU over its pretraining seed x label subset grid (a "
            "two-way decomposition without replication, averaged over the methods): the pretraining seed, the "
            "label subset (which patches were labelled, and the head's seed; at 100 % the head's seed alone), "
            "and the rest (their interaction). A large label-subset share means the choice of the labelled "
            "patches moves the score more than the pretraining run does.")
    return text, (["labels", "pretraining seed", "label subset", "rest", "methods"], body)
