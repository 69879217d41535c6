"""Paired statistics against hand-computed references, the wording that follows the interval, n/a cases."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from falsecl.benchmark.cells import Method
from falsecl.benchmark.evidence import spread_sources
from falsecl.benchmark.stats import (
    comparisons,
    mean_std,
    paired_difference,
    paired_table,
    two_way_shares,
    verdict,
)


def test_interval_and_p_value_against_hand_computation():
    # d = 1, 2, 3, 4: mean 2.5, sd sqrt(5/3) = 1.2910, t_{0.975, 3} = 3.1824 (table), half-width 2.0543;
    # t = 2.5 / (1.2910 / 2) = 3.873 with 3 degrees of freedom: two-sided p = 0.0305.
    d = paired_difference([1.0, 2.0, 3.0, 4.0])
    assert d["n"] == 4 and d["mean"] == pytest.approx(2.5)
    assert d["std"] == pytest.approx(math.sqrt(5 / 3))
    assert d["ci_low"] == pytest.approx(2.5 - 2.0543, abs=1e-3)
    assert d["ci_high"] == pytest.approx(2.5 + 2.0543, abs=1e-3)
    assert d["p_t"] == pytest.approx(0.0305, abs=5e-4)
    assert d["p_wilcoxon"] is None  # 4 pairs: the signed-rank test cannot reach 5 %, so it is not reported


def test_wilcoxon_reported_from_six_pairs():
    d = paired_difference([0.01, -0.02, 0.015, 0.005, -0.01, 0.02])
    assert d["p_wilcoxon"] == pytest.approx(0.6875)  # exact: 22 of 64 sign patterns are as extreme, x 2


def test_verdict_follows_the_interval():
    assert "no significant difference" in verdict(paired_difference([0.01, -0.02, 0.015]), "a", "b")
    higher = verdict(paired_difference([0.010, 0.012, 0.011]), "a", "b")
    assert "a is higher" in higher and "no significant" not in higher
    assert "a is lower" in verdict(paired_difference([-0.010, -0.012, -0.011]), "a", "b")


def test_undefined_values_give_none_not_errors():
    assert paired_difference([0.1])["ci_low"] is None
    assert paired_difference([])["mean"] is None
    assert "n/a" in verdict(paired_difference([0.1]), "a", "b")
    assert mean_std([None, float("nan")]) == (None, None, 0)
    assert mean_std([0.5, None]) == (0.5, None, 1)


def test_pairs_match_seeds_and_skip_null_scores():
    cells = [
        {"method": m, "protocol": "probe", "label_fraction": 0.05, "pretrain_seed": p, "finetune_seed": 0, "mIoU": v}
        for m, vals in (("simclr", [0.40, 0.42, None]), ("false", [0.41, 0.44, 0.50]), ("random", [0.3, 0.3, 0.3]))
        for p, v in enumerate(vals)
    ]
    pairs = comparisons([{"name": "random", "pretrained": False}, {"name": "simclr", "pretrained": True},
                         {"name": "false", "pretrained": True, "base": "simclr"}])
    assert pairs == [("false", "simclr"), ("simclr", "random"), ("false", "random")]
    rows = {(r["method"], r["reference"]): r for r in paired_table(cells, pairs)}
    assert rows[("false", "simclr")]["n"] == 2  # seed 2 has no SimCLR score
    assert rows[("false", "simclr")]["mean"] == pytest.approx(0.015)
    assert rows[("false", "random")]["n"] == 3


def test_identical_nonzero_differences_are_not_significant_at_n_2():
    # sd 0: the t statistic is infinite and the interval has zero width; neither is evidence at n = 2.
    d = paired_difference([0.01, 0.01])
    assert d["p_t"] is None and d["ci_low"] is None and d["ci_high"] is None
    text = verdict(d, "a", "b")
    assert "a is higher" not in text and "identical" in text
    same = paired_difference([0.0, 0.0, 0.0])  # identical methods: no difference, p = 1
    assert same["p_t"] == 1.0 and "no significant difference" in verdict(same, "a", "b")


def test_holm_against_hand_computation():
    from falsecl.benchmark.stats import holm

    # m = 4 defined: sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, max(0.04, 0.06), max(0.06, 0.06), max(0.06, 0.5).
    assert holm([0.03, None, 0.01, 0.5, 0.02]) == pytest.approx([0.06, None, 0.04, 0.5, 0.06])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_subset_seeds_are_averaged_within_each_pretraining_seed():
    # Unit = pretraining seed: 2 pretraining seeds x 2 subset seeds give n = 2, each the mean of its 2 diffs.
    cells = [{"method": m, "protocol": "probe", "label_fraction": 0.1, "pretrain_seed": p, "finetune_seed": s,
              "mIoU": base + 0.01 * p + 0.02 * s + (0.01 * (p + 1) * (s + 1) if m == "a" else 0.0)}
             for m, base in (("a", 0.5), ("b", 0.5)) for p in (0, 1) for s in (0, 1)]
    (row,) = paired_table(cells, [("a", "b")])
    # p 0: diffs 0.01, 0.02 -> 0.015; p 1: 0.02, 0.04 -> 0.03.
    assert row["n"] == 2 and row["mean"] == pytest.approx(0.0225)
    assert row["std"] == pytest.approx(statistics_stdev([0.015, 0.03]))


def statistics_stdev(values):
    import statistics

    return statistics.stdev(values)


def test_primary_endpoint_averages_fractions_and_subset_seeds_per_pretraining_seed():
    from falsecl.benchmark.stats import primary_endpoint

    cells = [{"method": m, "protocol": "probe", "label_fraction": f, "pretrain_seed": p, "finetune_seed": s,
              "mIoU": 0.4 + (0.01 * (p + 1) * f * 10 + 0.001 * s if m == "false" else 0.0)}
             for m in ("false", "simclr") for f in (0.1, 0.2) for p in (0, 1, 2) for s in (0, 1)]
    spec = {"method": "false", "reference": "simclr", "protocol": "probe", "fractions": [0.1, 0.2]}
    ep = primary_endpoint(cells, spec)
    # seed p: mean over f of 0.01 (p + 1) 10 f + mean over s of 0.001 s = 0.015 (p + 1) + 0.0005.
    per_seed = [0.015 * (p + 1) + 0.0005 for p in range(3)]
    assert ep["n"] == 3 and ep["per_seed"] == pytest.approx(per_seed)
    assert ep["mean"] == pytest.approx(sum(per_seed) / 3)
    ref = paired_difference(per_seed)
    assert ep["ci_low"] == pytest.approx(ref["ci_low"]) and ep["p_t"] == pytest.approx(ref["p_t"])
    # A pretraining seed missing a planned cell does not count (its mean would cover other cells).
    missing = [c for c in cells if not (c["method"] == "simclr" and c["pretrain_seed"] == 2 and c["finetune_seed"])]
    assert primary_endpoint(missing, spec)["n"] == 2


def test_learned_methods_are_compared_with_the_strongest_control():
    # random_init_bn builds on random_init (BatchNorm refitted, no pretraining): it is the control a pretrained
    # backbone must beat; comparing only with plain random init would credit pretraining with BN calibration.
    methods = [Method("random_init"), Method("random_init_bn", bn_recalibration=True, base="random_init"),
               Method("simclr", "x.yaml"), Method("false", "x.yaml", base="simclr")]
    pairs = comparisons([m.info() for m in methods])
    assert pairs == [("random_init_bn", "random_init"), ("false", "simclr"), ("simclr", "random_init_bn"),
                     ("false", "random_init_bn")]
    # Two controls that build on nothing: each learned method is compared with both.
    two = comparisons([{"name": "a", "pretrained": False}, {"name": "b", "pretrained": False},
                       {"name": "ssl", "pretrained": True}])
    assert two == [("ssl", "a"), ("ssl", "b")]


def test_shipped_benchmarks_compare_with_the_batchnorm_control():
    root = Path(__file__).resolve().parents[2]
    for name in ("cpu_dubai", "gpu_dubai"):
        config = yaml.safe_load((root / f"configs/benchmark/{name}.yaml").read_text())
        pairs = comparisons([Method(**m).info() for m in config["methods"]])
        assert ("simclr_ntxent", "random_init_bn") in pairs and ("random_init_bn", "random_init") in pairs
        assert ("simclr_ntxent", "random_init") not in pairs, name


def test_two_way_shares_against_hand_computation():
    # y[p, s] = a_p + b_s, a = (0, 1, 2), b = (0, 0, 3): SS_pretraining = 3 * 2 = 6, SS_subset = 3 * 6 = 18,
    # no interaction; total 24.
    grid = {(p, s): float(a + b) for p, a in enumerate((0, 1, 2)) for s, b in enumerate((0, 0, 3))}
    shares = two_way_shares(grid)
    assert shares == pytest.approx({"pretraining": 0.25, "subset": 0.75, "residual": 0.0})
    # Adding an interaction to one cell moves variance into the residual only; the shares still sum to 1.
    grid[(0, 0)] += 1.0
    shares = two_way_shares(grid)
    assert shares["residual"] > 0 and sum(shares.values()) == pytest.approx(1.0)
    # Incomplete grids, a single level, or no spread at all: undefined.
    assert two_way_shares({k: v for k, v in grid.items() if k != (2, 2)}) is None
    assert two_way_shares({(0, s): 1.0 + s for s in range(3)}) is None
    assert two_way_shares({(p, s): 0.5 for p in range(2) for s in range(2)}) is None


def test_spread_sources_table_names_the_dominant_seed():
    cells = [{"method": m, "protocol": "probe", "label_fraction": 0.01, "pretrain_seed": p, "finetune_seed": s,
              "mIoU": 0.40 + 0.05 * s + 0.001 * p} for m in ("a", "b") for p in range(3) for s in range(3)]
    text, (header, body) = spread_sources(cells, "probe")
    assert header[0] == "labels" and body[0][0] == "1 %"
    assert "label subset" in text and body[0][1:4] == ["0.0 %", "100.0 %", "0.0 %"]
