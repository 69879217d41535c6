"""``falsecl pretrain``: self-supervised pretraining from a YAML config (LightningCLI).

Usage::

    falsecl pretrain --config configs/pretrain/cpu_simclr_false.yaml [--trainer.max_epochs 1]
    falsecl pretrain --config configs/pretrain/cpu_simclr_false.yaml --ckpt_path last
    falsecl pretrain --config configs/pretrain/cpu_simclr_false.yaml --print_config

The model is any :class:`falsecl.tasks.base.PretrainTask` (``class_path: falsecl.tasks.simclr.SimCLR``,
``falsecl.tasks.moco.MoCo`` or ``falsecl.tasks.byol.BYOL`` with ``init_args``), the data an
:class:`falsecl.datamodules.SSLDataModule`. Everything a run writes goes to ``trainer.default_root_dir``
(``runs/<name>``): ``checkpoints/last.ckpt`` (every epoch, atomically), ``backbone.pt`` (every epoch and at
the end), ``tensorboard/`` and ``csv/metrics.csv`` logs and ``band_stats.json``. ``--ckpt_path last``
resumes from ``checkpoints/last.ckpt`` (same step, optimiser, scheduler and MoCo queue); without a
checkpoint it starts anew.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from falsecl.calibration import trainer_precision
from falsecl.cli.common import USAGE, Failure, run_reporting
from falsecl.datamodules import SSLDataModule
from falsecl.precision import PRECISION_HELP, trainer_auto_to_precision
from falsecl.tasks.base import AtomicCheckpointIO, NonFiniteLossError, PretrainTask
from falsecl.tasks.run_guards import HintingLightningParser, removed_on_failed_start, run_callbacks, run_loggers

#: Root of a run when neither the config nor the command line sets ``trainer.default_root_dir``.
DEFAULT_ROOT = "runs/pretrain"


class PretrainCLI(LightningCLI):
    """LightningCLI without subcommands: parse, build, ``trainer.fit`` with an optional ``--ckpt_path``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--ckpt_path`` (a checkpoint file, or ``last`` to resume the run in ``default_root_dir``)."""
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="checkpoint to resume; 'last': <default_root_dir>/checkpoints/last.ckpt if it exists",
        )
        parser.add_argument("--precision", type=str | None, default=None, help=PRECISION_HELP)
        parser.add_argument(
            "--name", type=str | None, default=None, help="run name: outputs go to runs/<name> (wins over the preset's)"
        )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Add the run defaults that depend on ``default_root_dir``: loggers, checkpointing, atomic writes."""
        config = self._get(self.config_init, "trainer", default={})
        precision = trainer_precision(
            self.config.get("precision"), self.config.get("trainer", {}).get("precision"), config.get("accelerator"),
            self.model, self.datamodule,  # auto: measured on this model at this batch and crop size
        )
        if precision is not None:
            kwargs["precision"] = precision
        root = Path(config.get("default_root_dir") or DEFAULT_ROOT)
        if self.config.get("name"):
            root = Path("runs") / self.config["name"]
            kwargs["default_root_dir"] = str(root)
        if config.get("logger") in (None, True):
            kwargs["logger"] = run_loggers(root)
        callbacks: list[Callback] = list(config.get("callbacks") or [])
        checkpointing = config.get("enable_checkpointing") is not False
        if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            callbacks.append(
                ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, every_n_epochs=1, save_top_k=1)
            )
        if not any(isinstance(c, LearningRateMonitor) for c in callbacks):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        kwargs["callbacks"] = run_callbacks(callbacks, config.get("enable_progress_bar"))
        if not config.get("plugins"):
            kwargs["plugins"] = [AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


def main(argv: list[str] | None = None) -> int:
    """Run ``falsecl pretrain``.

    Args:
        argv: Arguments after ``pretrain`` (``sys.argv[2:]`` style); ``None`` reads ``sys.argv[1:]``.

    Returns:
        0 on success (also after ``--help`` / ``--print_config``), 1 if the loss became NaN/inf, else the
        parser's exit code.
    """
    def work() -> None:
        with warnings.catch_warnings():
            # `falsecl pretrain ...` passes its own argv; Lightning warns when sys.argv is not empty too.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            cli = _build_cli(argv)
        with removed_on_failed_start(cli.trainer):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))

    # A diverged loss exits 1; bad data or options (ValueError, FileNotFoundError) exit 2 with their fix.
    failures = (Failure((NonFiniteLossError,), 1, prefix=""), *USAGE)
    try:
        return run_reporting("falsecl pretrain", work, failures)
    except SystemExit as exit_:  # --help, --print_config, parser errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)


def _build_cli(argv: list[str] | None) -> PretrainCLI:
    return PretrainCLI(
        PretrainTask,
        SSLDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,  # the tasks own their optimiser and schedule
        run=False,
        args=trainer_auto_to_precision(argv),
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"default_root_dir": DEFAULT_ROOT, "max_epochs": 100, "log_every_n_steps": 1},
        parser_class=HintingLightningParser,
        parser_kwargs={"prog": "falsecl pretrain", "description": "Self-supervised pretraining (FALSE)."},
    )
