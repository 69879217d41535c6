"""The report's FALSE curves from pretraining CSV logs, and its wording when diagnostics are absent."""

from __future__ import annotations

import torch

from falsecl.benchmark.figures import read_pretrain_logs
from falsecl.benchmark.report import write_report

CELLS = [{"method": m, "protocol": "probe", "label_fraction": 0.05, "pretrain_seed": p, "finetune_seed": 0,
          "mIoU": 0.4 + 0.01 * p, "per_class": {"water": 0.5}} for m in ("random_init", "false") for p in (0, 1)]


def _log(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


def test_fire_rate_and_diagnostics_are_read_and_plotted(tmp_path):
    header = "epoch,step,train/false/fire_rate,train/diag_official_precision,train/loss"
    _log(tmp_path / "false/pretrain_seed0/csv/metrics.csv", header,
         ["0,0,0.5,0.9,4.0", ",1,,,", "0,2,0.6,0.95,3.9"])
    logs = read_pretrain_logs(tmp_path, ["random_init", "false"])
    assert logs == {"false": [{"train/false/fire_rate": [(0, 0.5), (2, 0.6)],
                               "train/diag_official_precision": [(0, 0.9), (2, 0.95)]}]}
    paths = write_report(CELLS, tmp_path)
    assert paths["curves"].stat().st_size > 0
    text = paths["markdown"].read_text()
    assert "false-negative diagnostics logged" in text and "were not logged" not in text
    # The key SimCLR really logs (losses.diagnostics) lands in its column of the diagnostics table.
    from falsecl.losses.diagnostics import false_negative_diagnostics

    z = torch.randn(4, 8)
    assert "official_precision" in false_negative_diagnostics(z, z + 0.1, torch.tensor([0, 0, 1, 1]), 0.5, 0.0)
    diag = text.split("## FALSE's false-negative diagnostics", 1)[1]
    row = next(line for line in diag.splitlines() if line.startswith("| false |"))
    assert "0.95" in row  # the second-half mean of official precision (step 2: 0.95)


def test_report_says_when_diagnostics_were_not_logged(tmp_path):
    _log(tmp_path / "false/pretrain_seed0/csv/metrics.csv", "epoch,step,train/false/fire_rate", ["0,0,0.5"])
    text = write_report(CELLS, tmp_path)["markdown"].read_text()
    assert "False-negative diagnostics were not logged" in text
    assert "no significant difference" in text  # identical scores: the interval is [0, 0]


def test_html_renders_strong_and_code_spans_and_escapes_the_rest():
    from falsecl.benchmark.report import html_text

    assert html_text("**Headline.** a <b> & `x.yaml`") == (
        "<p><strong>Headline.</strong> a &lt;b&gt; &amp; <code>x.yaml</code></p>")
    assert html_text("- **one**\n- two") == "<ul><li><strong>one</strong></li><li>two</li></ul>"


def test_diagnostics_table_averages_the_second_half_then_the_seeds():
    from falsecl.benchmark.diagnostics import diagnostics_table

    # Seed 0: steps 0..30, second half (step >= 15) = steps 20, 30 -> mean 0.8; seed 1 -> 0.9; NaN cells skipped.
    runs = [{"train/diag_per_anchor_precision": [(0, 0.1), (10, 0.1), (20, 0.7), (30, 0.9)],
             "train/diag_official_rows": [(0, 0.5), (20, 0.004), (30, 0.002)], "train/false/fire_rate": [(0, 1.0)]},
            {"train/diag_per_anchor_precision": [(0, 0.2), (20, 0.9), (30, float("nan"))]}]
    header, body = diagnostics_table({"false": runs, "random_init": []})
    assert header[:5] == ["method", "seeds", "per_anchor rows", "per_anchor precision", "official rows"]
    assert body == [["false", "2", "n/a", "0.85 ± 0.07", "0.3 %", *["n/a"] * 6]]
    assert diagnostics_table({"ntxent": [{"train/loss": [(0, 1.0)]}]}) is None


def test_pair_summary_groups_fractions_by_verdict():
    from falsecl.benchmark.report import pair_summary

    def d(f, lo, hi, n=3):
        return {"method": "a", "reference": "b", "label_fraction": f, "ci_low": lo, "ci_high": hi, "n": n}

    assert pair_summary([d(0.01, 0.1, 0.3), d(0.05, -0.1, 0.2), d(1.0, -0.3, -0.1, 2)]) == [
        "- **a vs b**: higher at 1 % labels; lower at 100 % labels; no significant difference at 5 % labels "
        "(n = 2-3 seeds)."]
    assert pair_summary([d(0.1, -0.1, 0.1)]) == ["- **a vs b**: no significant difference at any label fraction "
                                                 "(n = 3 seeds)."]


def test_findings_status_and_wall_time_follow_the_cells():
    from falsecl.benchmark.report import compute_summary, findings, status_line
    from falsecl.benchmark.stats import comparisons, paired_table

    cells = [{"method": m, "protocol": "probe", "label_fraction": f, "pretrain_seed": p, "finetune_seed": 0,
              "mIoU": v + (0.002 * p if m == "ssl" else 0.001 * p * p),  # differences not all identical
              "wall_s": 60.0, "pretrain_wall_s": None if m == "random" else 600.0}
             for m, v in (("random", 0.40), ("ssl", 0.45)) for f in (0.01, 0.05) for p in (0, 1, 2)]
    diffs = paired_table(cells, comparisons([{"name": "random", "pretrained": False},
                                             {"name": "ssl", "pretrained": True}]))
    text = findings(diffs, "probe")
    assert "2 of 2 intervals lie above 0, 0 below 0, and 0 include 0" in text
    assert "- **ssl vs random**: higher at 1, 5 % labels (n = 3 seeds)." in text
    assert findings(diffs, "finetune") == ""
    assert status_line(cells, {"probe": 12, "finetune": 6}) == (
        "Status: linear probe (frozen encoder): 12 of 12 cells; DeepLabv3+ fine-tuning: 0 of 6 cells (partial).")
    # Pretraining counted once per (method, seed) although two cells share it: 3 x 600 s; cells 12 x 60 s.
    assert compute_summary(cells) == ("Wall time, summed over the finished cells: pretraining 30 min (3 runs), "
                                      "linear probe (frozen encoder) 12 min; 0.7 h in all.")


def test_publish_renames_figures_and_rewrites_the_links(tmp_path):
    import pytest

    from falsecl.benchmark.publish import publish_report

    with pytest.raises(FileNotFoundError, match="report_only"):
        publish_report(tmp_path / "empty", tmp_path / "docs", "x")
    write_report(CELLS, tmp_path / "bench")
    (tmp_path / "bench" / "results.json").write_text("[]\n")
    with pytest.raises(ValueError, match="plain file stem"):
        publish_report(tmp_path / "bench", tmp_path / "docs", "../x")
    written = publish_report(tmp_path / "bench", tmp_path / "docs", "dubai_cpu")
    names = sorted(p.name for p in written)
    assert names == ["dubai_cpu.html", "dubai_cpu.md", "dubai_cpu_miou.png", "dubai_cpu_results.json"]
    md = (tmp_path / "docs" / "dubai_cpu.md").read_text()
    assert "](dubai_cpu_miou.png)" in md and "](miou.png)" not in md
    assert "src='dubai_cpu_miou.png'" in (tmp_path / "docs" / "dubai_cpu.html").read_text()
    assert not list((tmp_path / "docs").glob("*.tmp"))


def test_diagnostics_findings_follow_the_paired_interval_over_seeds():
    from falsecl.benchmark.diagnostics import diagnostics_findings

    def run(pa, hg):
        return {"train/diag_per_anchor_precision": [(0, 0.0), (10, pa)],
                "train/diag_hardest_gated_precision": [(0, 1.0), (10, hg)]}

    # Differences +0.10, +0.11, +0.12: the interval lies above 0.
    better = diagnostics_findings({"a": [run(0.9, 0.8), run(0.91, 0.8), run(0.92, 0.8)]})
    assert "per_anchor precision 0.91 against 0.80" in better and "difference +0.110" in better
    assert better.endswith("per_anchor is more precise than the hardest negative.")
    same = diagnostics_findings({"b": [run(0.8, 0.79), run(0.78, 0.8), run(0.8, 0.8)]})
    assert "no significant difference: per_anchor is no more precise" in same
    assert "no interval yet" in diagnostics_findings({"c": [run(0.8, 0.7)]})
    assert diagnostics_findings({"d": [{"train/false/fire_rate": [(0, 0.5)]}]}) == ""


def test_summary_speaks_of_the_headline_protocol_first_then_the_others(tmp_path):
    import json

    finetune = [{**c, "protocol": "finetune",
                 "mIoU": c["mIoU"] + (0.05 + 0.01 * c["pretrain_seed"] if c["method"] == "false" else 0.0)}
                for c in CELLS]
    (tmp_path / "benchmark_args.json").write_text(json.dumps({"headline_protocol": "probe"}))
    text = write_report(finetune + CELLS, tmp_path)["markdown"].read_text()
    probe_at = text.index("**Paired differences, linear probe (frozen encoder)**")
    assert probe_at < text.index("**Paired differences, DeepLabv3+ fine-tuning**") < text.index("## Test mIoU")


def test_fire_rate_lines_say_how_much_false_acted_in_the_second_half():
    from falsecl.benchmark.diagnostics import fire_rate_lines

    runs = [{"train/false/fire_rate": [(0, 1.0), (10, 0.5), (20, 0.3)]},   # second half: 0.5, 0.3 -> 0.4
            {"train/false/fire_rate": [(0, 1.0), (20, 0.2)]}]               # second half: 0.2
    text = fire_rate_lines({"moco_false": runs, "byol": [{"train/diag_chance_precision": [(0, 0.4)]}]})
    assert text.endswith("- moco_false: 30.0 ± 14.1 % of rows per step (n = 2 seeds)")
    assert "byol" not in text
    assert fire_rate_lines({"byol": []}) == ""


def test_no_stale_panel_when_the_probe_heads_are_not_found(tmp_path, capsys):
    # A report rebuilt from another folder than the one the benchmark ran in: the cells' run folders are relative
    # to that one. Before, the last run's panel.png stayed and was published without a caption.
    from falsecl.benchmark.panel import write_panel

    (tmp_path / "panel.png").write_bytes(b"old")
    cells = [{"method": "simclr", "protocol": "probe", "label_fraction": 0.05, "pretrain_seed": 0,
              "finetune_seed": 0, "run_dir": "runs/elsewhere/simclr/probe/labels5pct_pre0_ft0"}]
    assert write_panel(tmp_path, {}, cells, ["simclr"]) is None
    assert not (tmp_path / "panel.png").exists()
    err = capsys.readouterr().err
    assert "runs/elsewhere/simclr/probe/labels5pct_pre0_ft0" in err and "folder the benchmark ran in" in err
