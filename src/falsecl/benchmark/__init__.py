"""The experiment matrix: pretraining methods x label fractions x seeds, and its report."""

from falsecl.benchmark.report import summarize, write_report
from falsecl.benchmark.runner import Cell, plan_cells, run_benchmark

__all__ = ["Cell", "plan_cells", "run_benchmark", "summarize", "write_report"]
