"""``falsecl finetune``: LightningCLI over :class:`SegmentationTask` and the segmentation datamodule.

Usage::

    falsecl finetune --config configs/finetune/cpu_quick.yaml [--model.backbone_weights runs/x/backbone.pt]
        [--data.label_fraction 0.05] [--name my_run] [--trainer.max_steps 100] [--ckpt_path last]
    falsecl finetune --config configs/finetune/paper_deeplabv3plus.yaml --print_config

A run lives in ``runs/<name>/`` (or ``trainer.default_root_dir`` when set), laid out as in pretraining:
``checkpoints/`` (best by ``val/mIoU`` and ``last.ckpt``, written atomically), ``tensorboard/`` (with the
resolved ``config.yaml``), ``csv/metrics.csv``, and the data's ``label_subset.txt`` and ``band_stats.json``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from falsecl.calibration import trainer_precision
from falsecl.cli.common import Failure, run_reporting
from falsecl.model_card import ModelCardCallback
from falsecl.precision import PRECISION_HELP, trainer_auto_to_precision
from falsecl.tasks.base import AtomicCheckpointIO
from falsecl.tasks.run_guards import HintingLightningParser, removed_on_failed_start, run_callbacks, run_loggers
from falsecl.tasks.segmentation import SegmentationTask


class FinetuneCLI(LightningCLI):
    """LightningCLI with ``--name`` (run folder ``runs/<name>``) and ``--ckpt_path`` (resume: ``last``)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the run name, the runs folder and the checkpoint to resume from."""
        parser.add_argument("--name", type=str, default="finetune", help="run name: outputs go to runs/<name>")
        parser.add_argument("--runs_dir", type=str, default="runs", help="folder holding the runs")
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="checkpoint to resume from, or 'last'")
        parser.add_argument("--precision", type=str | None, default=None, help=PRECISION_HELP)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Point the trainer, loggers and checkpoints at ``runs/<name>`` unless the config says otherwise."""
        trainer_cfg = self.config_init.get("trainer", {})
        explicit = self.config.get("trainer", {}).get("precision")
        precision = trainer_precision(
            self.config.get("precision"), explicit, trainer_cfg.get("accelerator"), self.model, self.datamodule
        )
        if precision is not None:
            kwargs["precision"] = precision
        if trainer_cfg.get("default_root_dir") is None:
            root = Path(self.config["runs_dir"]) / self.config["name"]
            kwargs["default_root_dir"] = str(root)
        else:  # an explicit run folder wins over --name, for the logs and checkpoints too
            root = Path(trainer_cfg["default_root_dir"])
        logger = trainer_cfg.get("logger")
        if logger is None or logger is True:
            kwargs["logger"] = run_loggers(root)
        callbacks = list(trainer_cfg.get("callbacks") or [])
        checkpointing = trainer_cfg.get("enable_checkpointing") is not False
        if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            callbacks.append(
                ModelCheckpoint(
                    dirpath=str(root / "checkpoints"),
                    filename="best-epoch{epoch:03d}-step{step}",
                    auto_insert_metric_name=False,
                    monitor="val/mIoU",
                    mode="max",
                    save_last=True,
                )
            )
        if not any(isinstance(c, LearningRateMonitor) for c in callbacks) and kwargs.get("logger", logger):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        if not any(isinstance(c, ModelCardCallback) for c in callbacks):
            callbacks.append(ModelCardCallback())  # <run>/model.json
        kwargs["callbacks"] = run_callbacks(callbacks, trainer_cfg.get("enable_progress_bar"))
        if not trainer_cfg.get("plugins"):
            kwargs["plugins"] = [AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


def main(argv: Sequence[str] | None = None, *, datamodule_class: type[LightningDataModule] | None = None) -> int:
    """Run ``falsecl finetune``.

    Args:
        argv: Command-line arguments (without ``finetune``).
        datamodule_class: Datamodule to use instead of :class:`falsecl.datamodules.SegmentationDataModule`
            (tests use a tiny in-memory one).

    Returns:
        Exit code: 0 on success (also after ``--help``/``--print_config``), 2 for a configuration error.
    """
    if datamodule_class is None:
        from falsecl.datamodules import SegmentationDataModule

        datamodule_class = SegmentationDataModule
    def work() -> None:
        with warnings.catch_warnings():
            # The `falsecl` dispatcher passes argv explicitly while sys.argv also holds it; nothing is mixed up.
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python")
            cli = FinetuneCLI(
                SegmentationTask,
                datamodule_class,
                args=trainer_auto_to_precision(list(argv) if argv is not None else None),
                run=False,
                seed_everything_default=0,
                save_config_kwargs={"overwrite": True},
                auto_configure_optimizers=False,
                parser_class=HintingLightningParser,
                parser_kwargs={"prog": "falsecl finetune", "description": "Fine-tune DeepLabv3+ on few labels."},
            )
        with removed_on_failed_start(cli.trainer):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config["ckpt_path"])

    try:  # a bad backbone file, mismatched bands/classes: one line, exit code 2
        return run_reporting("falsecl finetune", work, (Failure((ValueError, FileNotFoundError), 2),))
    except SystemExit as exit_:  # --help, --print_config, parser errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
