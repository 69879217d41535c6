"""What every training run gets from both training commands: a clean failure, a sane progress bar, validation.

* :func:`removed_on_failed_start`: a run that fails before its first optimisation step (bad data, wrong bands)
  leaves no half-made ``runs/<name>`` behind, so the next attempt starts clean and ``--ckpt_path last`` is
  not confused by an empty folder.
* :class:`StepProgressBar`: Lightning's bar prints ``Epoch 29/-2`` when a run is bounded by ``max_steps``
  with ``max_epochs: -1`` (as the fine-tuning presets are); this one says ``Epoch 29`` and counts steps.
* :class:`HintingLightningParser`: a mistyped option gets one line with the nearest option.
* :func:`run_loggers`: TensorBoard and CSV logs in the run folder. Lightning's CSV writer deletes an existing
  ``metrics.csv``, so a run resumed with ``--ckpt_path last`` lost the log of everything before it; here the rows
  before the resumed run's first step are kept.
* :class:`ValidateByTheEnd`: a preset shortened on the command line (``--trainer.max_steps 30`` with
  ``val_check_interval: 60``) never validated, so no checkpoint was selected. The interval is scaled to the
  run so that the last validation falls on the last step.
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

from falsecl.usage import ShortErrors

log = logging.getLogger(__name__)


@contextmanager
def removed_on_failed_start(trainer: Trainer) -> Iterator[None]:
    """Delete ``trainer.default_root_dir`` if the block fails before the first step and the folder is new.

    A folder that existed before (a resumed run, another run's files) is never touched.
    """
    root = Path(trainer.default_root_dir)
    existed = root.exists()
    try:
        yield
    except BaseException:
        if not existed and trainer.global_step == 0 and root.is_dir():
            shutil.rmtree(root, ignore_errors=True)
            log.info("the run failed before its first step: removed the new run folder %s", root)
        raise


def validation_interval(max_steps: int, interval: int) -> int:
    """A step interval that divides the run: the last validation falls on the last step.

    Args:
        max_steps: Training steps of the run (``> 0``).
        interval: Configured ``val_check_interval`` in steps.

    Returns:
        ``max_steps`` when ``interval > max_steps``; else ``max_steps / k`` for the smallest number of
        validations ``k`` in ``[ceil(max_steps / interval), 2 ceil(max_steps / interval)]`` dividing
        ``max_steps``; else ``interval``.
    """
    if max_steps <= 0 or interval <= 0 or max_steps % interval == 0:
        return interval
    if interval > max_steps:
        return max_steps  # the case that never validated at all
    count = math.ceil(max_steps / interval)
    # An interval that hits max_steps exactly with at most twice the validations asked for; otherwise keep
    # the interval (its last validation is then within one interval of the end, past half of the run).
    for k in range(count, 2 * count + 1):
        if max_steps % k == 0:
            return max_steps // k
    return interval


class ValidateByTheEnd(Callback):
    """Scale a step ``val_check_interval`` to ``max_steps`` so that training ends with a validation.

    Only runs bounded by steps whose interval counts steps (an ``int``) are changed; the change is logged.
    """

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Adjust ``trainer.val_check_interval`` before the fit loop turns it into a batch count."""
        interval = trainer.val_check_interval
        if not isinstance(interval, int) or trainer.max_steps is None or trainer.max_steps <= 0:
            return
        if trainer.limit_val_batches == 0:
            return
        new = validation_interval(int(trainer.max_steps), interval)
        if new != interval:
            log.warning(
                "val_check_interval %d does not divide max_steps %d: validating every %d steps so that the "
                "last validation (and the checkpoint choice) falls on the last step",
                interval,
                trainer.max_steps,
                new,
            )
            trainer.val_check_interval = new


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar without the ``Epoch 29/-2`` of step-bounded runs (``max_epochs: -1``)."""

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is not None and self.trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        bounded = self.trainer.max_steps is not None and self.trainer.max_steps > 0
        steps = f" (max {self.trainer.max_steps} steps)" if bounded else ""
        description = f"Epoch {current_epoch}{steps}"
        return f"{description:{len(self.validation_description)}}"


class HintingLightningParser(ShortErrors, LightningArgumentParser):
    """LightningCLI's parser with one-line errors and a "did you mean" (``parser_class=HintingLightningParser``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


def run_callbacks(callbacks: list[Callback], progress_bar: bool | None) -> list[Callback]:
    """``callbacks`` plus :class:`ValidateByTheEnd` and :class:`StepProgressBar` unless one of a kind is there."""
    out = list(callbacks)
    if not any(isinstance(c, ValidateByTheEnd) for c in out):
        out.append(ValidateByTheEnd())
    has_bar = any(isinstance(c, ProgressBar) for c in out)
    if progress_bar is not False and not has_bar:
        out.append(StepProgressBar() if _RICH_AVAILABLE else TQDMProgressBar())  # TQDM says "Epoch N" already
    return out


__all__ = [
    "HintingLightningParser",
    "StepProgressBar",
    "ValidateByTheEnd",
    "removed_on_failed_start",
    "run_callbacks",
    "validation_interval",
]


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is kept up to the new run's first step.

    Rows at or after that step belong to the stretch a killed run logged past its last checkpoint; the resumed run
    logs those steps again. A new run (first step 0) therefore starts a new log, as Lightning's writer does. The
    old file is left alone until the first save, so a resume that fails at once loses nothing.
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self._merged = False

    def _check_log_dir_exists(self) -> None:
        """Keep the folder's files (Lightning's writer deletes ``metrics.csv`` here)."""

    def save(self) -> None:
        """Write the recorded metrics, preceded (on the first save) by the earlier run's rows before them."""
        if not self._merged and self.metrics:
            path = Path(self.metrics_file_path)
            if path.is_file():
                with path.open(newline="") as f:
                    earlier = list(csv.DictReader(f))
                first = min(int(m.get("step", 0)) for m in self.metrics)
                kept = [{k: _number(v) for k, v in r.items() if k and v not in ("", None)}
                        for r in earlier if _number(r.get("step")) < first]
                path.unlink()
                self.metrics = [*kept, *self.metrics]
            self._merged = True
        super().save()


def _number(value: Any) -> float:
    """A logged value read back from the CSV file (NaN where unreadable, so such a row's step keeps nothing)."""
    for kind in (int, float):  # steps and epochs are written back as integers, as Lightning writes them
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    return float("nan")


class _KeepingCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return cast(ExperimentWriter, self._experiment)


def run_loggers(root: str | Path) -> list[Logger]:
    """TensorBoard and CSV loggers writing ``root/tensorboard`` and ``root/csv``, one log per run folder.

    Fixed (empty) versions keep one log per run; a run resumed in the same folder appends to both (TensorBoard
    with a second events file, the CSV log keeping the rows before the step it resumes from).
    """
    return [TensorBoardLogger(str(root), name="tensorboard", version=""),
            _KeepingCSVLogger(str(root), name="csv", version="")]

