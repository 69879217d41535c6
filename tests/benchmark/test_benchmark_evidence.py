"""The report's evidence: primary endpoint first, Holm verdicts, code versions, fire rates, reproducibility."""

from __future__ import annotations

import json

import pytest

from falsecl.benchmark.report import write_report

SPEC = {"method": "false", "reference": "simclr", "protocol": "probe", "fractions": [0.1, 0.5]}


def _cells(version="v1", commit="c1"):
    return [{"method": m, "protocol": "probe", "label_fraction": f, "pretrain_seed": p, "finetune_seed": s,
             "mIoU": 0.4 + (0.02 + 0.005 * p if m == "false" else 0.0) + (0.03 if m != "random" else 0.0)
             + 0.001 * s, "per_class": {}, "code_version": version, "git_commit": commit, "git_dirty": False,
             "fire_rate": 0.3 if m == "false" else None, "pretrain_steps": 500, "pretrain_epochs": 7.35}
            for m in ("random", "simclr", "false") for f in (0.1, 0.5) for p in (0, 1, 2) for s in (0, 1)]


def _args(tmp_path, **extra):
    methods = [{"name": "random", "pretrained": False}, {"name": "simclr", "pretrained": True},
               {"name": "false", "pretrained": True, "base": "simclr"}]
    (tmp_path / "benchmark_args.json").write_text(json.dumps({"method_info": methods, "primary_endpoint": SPEC,
                                                              **extra}))


def test_primary_endpoint_comes_first_with_its_interval_and_holm_verdicts(tmp_path):
    _args(tmp_path)
    text = write_report(_cells(), tmp_path)["markdown"].read_text()
    first = text.index("Primary endpoint")
    assert first < text.index("Paired differences") and first < text.index("## Test mIoU")
    # per seed: 0.02 + 0.005 p -> 2.00, 2.50, 3.00 points; mean 2.50.
    assert "false − simclr" in text and "+2.50 points" in text and "n = 3 pretraining seeds" in text
    assert "Holm" in text and "Holm-adjusted p" in text
    assert "fire rate" in text.lower() and "30.0 %" in text  # next to the method in the headline table
    assert "500" in text and "7.35" in text  # steps and epochs per cell


def test_report_refuses_mixed_code_versions_unless_allowed_and_then_lists_them(tmp_path):
    _args(tmp_path)
    mixed = _cells() + [{**c, "code_version": "v2", "git_commit": "c2", "method": "late"} for c in _cells()[:2]]
    with pytest.raises(ValueError, match="allow_mixed_versions"):
        write_report(mixed, tmp_path)
    _args(tmp_path, allow_mixed_versions=True)
    text = write_report(mixed, tmp_path)["markdown"].read_text()
    assert "c1" in text and "c2" in text and "mixes" in text


def test_reproducibility_section_compares_reruns_with_the_seed_spread(tmp_path):
    _args(tmp_path)
    cells = _cells()
    reruns = [{**c, "repro": True, "mIoU": c["mIoU"] + 0.01} for c in cells
              if c["method"] == "false" and c["pretrain_seed"] == 1]
    paths = write_report(cells + reruns, tmp_path)
    text = paths["markdown"].read_text()
    assert "Reproducibility" in text and "+1.00" in text
    assert (tmp_path / "repro.png").is_file()
    # The reruns never enter the statistics: the primary endpoint is unchanged.
    assert "+2.50 points" in text
