"""The experiment matrix: pretraining seeds x methods x label fractions x fine-tuning seeds, and its report."""

from falsecl.benchmark.cells import Cell, Method, plan_cells
from falsecl.benchmark.report import summarize, write_report
from falsecl.benchmark.runner import run_benchmark
from falsecl.benchmark.stats import paired_difference, verdict

__all__ = ["Cell", "Method", "paired_difference", "plan_cells", "run_benchmark", "summarize", "verdict",
           "write_report"]
