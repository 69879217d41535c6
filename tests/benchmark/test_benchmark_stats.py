"""Paired statistics against hand-computed references, the wording that follows the interval, n/a cases."""

from __future__ import annotations

import math

import pytest

from falsecl.benchmark.stats import comparisons, mean_std, paired_difference, paired_table, verdict


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
