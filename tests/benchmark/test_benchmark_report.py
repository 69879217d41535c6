"""The report's FALSE curves from pretraining CSV logs, and its wording when diagnostics are absent."""

from __future__ import annotations

from falsecl.benchmark.figures import read_pretrain_logs
from falsecl.benchmark.report import write_report

CELLS = [{"method": m, "protocol": "probe", "label_fraction": 0.05, "pretrain_seed": p, "finetune_seed": 0,
          "mIoU": 0.4 + 0.01 * p, "per_class": {"water": 0.5}} for m in ("random_init", "false") for p in (0, 1)]


def _log(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


def test_fire_rate_and_diagnostics_are_read_and_plotted(tmp_path):
    header = "epoch,step,train/false/fire_rate,train/diag_precision_official,train/loss"
    _log(tmp_path / "false/pretrain_seed0/csv/metrics.csv", header,
         ["0,0,0.5,0.9,4.0", ",1,,,", "0,2,0.6,0.95,3.9"])
    logs = read_pretrain_logs(tmp_path, ["random_init", "false"])
    assert logs == {"false": [{"train/false/fire_rate": [(0, 0.5), (2, 0.6)],
                               "train/diag_precision_official": [(0, 0.9), (2, 0.95)]}]}
    paths = write_report(CELLS, tmp_path)
    assert paths["curves"].stat().st_size > 0
    text = paths["markdown"].read_text()
    assert "false-negative diagnostics logged" in text and "were not logged" not in text


def test_report_says_when_diagnostics_were_not_logged(tmp_path):
    _log(tmp_path / "false/pretrain_seed0/csv/metrics.csv", "epoch,step,train/false/fire_rate", ["0,0,0.5"])
    text = write_report(CELLS, tmp_path)["markdown"].read_text()
    assert "False-negative diagnostics were not logged" in text
    assert "no significant difference" in text  # identical scores: the interval is [0, 0]
