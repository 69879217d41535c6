"""What a fine-tuning checkpoint says about itself: its model, its data, and how it was chosen.

``falsecl finetune`` stores in the checkpoint's hyper-parameters the training dataset (name, root, bands,
palette), class names and colours, band statistics, label fraction, seed and the validation split the best
checkpoint was chosen on (:data:`falsecl.tasks.segmentation._FROM_DATA`). ``evaluate`` and ``predict`` take
all of these from the checkpoint by default; checkpoints written before these fields existed still load, with
a warning and Dubai as the assumed data.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from falsecl.calibration import choose_precision
from falsecl.inference.preview import class_colours, class_labels
from falsecl.inference.sliding_window import Blend, SlidingWindowPredictor
from falsecl.tasks.segmentation import SegmentationTask

#: Dataset assumed for checkpoints that do not record theirs.
FALLBACK_DATASET, FALLBACK_ROOT = "dubai", "data/dubai_aerial"


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _run_folder_of(path: Path) -> Path:
    """``runs/<name>`` of a run folder, of ``runs/<name>/checkpoints/x.ckpt`` or of ``runs/<name>/backbone.pt``."""
    if path.is_dir():
        return path
    return run_folder(path) or path.parent


def pretraining_run_message(path: Path) -> str | None:
    """What to say when ``path`` (a folder or file) belongs to a pretraining run; ``None`` when it does not.

    A pretraining run is recognised by what ``falsecl pretrain`` leaves in its folder (``pretrain_images.txt``,
    or ``backbone.pt`` without the fine-tuning model card), and its method by its saved config.
    """
    from falsecl.model_card import MODEL_CARD, pretraining_source

    run = _run_folder_of(path)
    if (run / MODEL_CARD).is_file():
        return None
    if not (run / "pretrain_images.txt").is_file() and not (run / "backbone.pt").is_file():
        return None
    method = pretraining_source(run / "backbone.pt").get("method") or "self-supervised"
    return (
        f"{path} is a pretraining run ({method}): it holds an encoder, not a segmentation model. Fine-tune it "
        f"first, then pass a fine-tuning run, e.g. falsecl finetune --config configs/finetune/cpu_quick.yaml "
        f"--model.backbone_weights {run / 'backbone.pt'} --name my_model, then --checkpoint runs/my_model"
    )


def _backbone_file_message(path: Path) -> str | None:
    """What to say when ``path`` is a bare encoder state dict (``backbone.pt``); ``None`` otherwise."""
    try:  # weights_only: plain tensors load, nothing is executed
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file, or a Lightning checkpoint with objects in it
        return None
    if isinstance(state, dict) and "state_dict" not in state and "pytorch-lightning_version" not in state:
        return (
            f"{path} is an encoder's weights (a backbone file), not a segmentation model; pass a fine-tuning run, "
            f"e.g. falsecl finetune --model.backbone_weights {path} --name my_model, then --checkpoint runs/my_model"
        )
    return None


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A checkpoint file, or the best one (by validation mIoU) of a run folder ``runs/<name>``.

    Raises:
        FileNotFoundError: Neither a file nor a run folder with checkpoints.
        ValueError: A pretraining run or an encoder file (the message says what to pass instead).
    """
    path = Path(checkpoint)
    if path.exists():
        message = pretraining_run_message(path)
        if message is not None:
            raise ValueError(message)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        # ModelCheckpoint keeps one best-*.ckpt (save_top_k=1); the newest wins if a user kept several.
        candidates = sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime) or sorted(
            folder.glob("last.ckpt")
        )
        if candidates:
            return candidates[-1]
        raise FileNotFoundError(f"no best-*.ckpt or last.ckpt in {folder}; has 'falsecl finetune' run there?")
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} not found; pass a run folder runs/<name>, its checkpoints/last.ckpt or a best-*.ckpt"
        )
    return path


def run_folder(checkpoint: str | Path) -> Path | None:
    """The run folder ``runs/<name>`` of a checkpoint ``runs/<name>/checkpoints/*.ckpt`` (``None`` elsewhere).

    The reverse of :func:`resolve_checkpoint`: where the run's model card, band statistics and reports live.
    """
    path = Path(checkpoint)
    return path.parent.parent if path.parent.name == "checkpoints" else None


def load_task(checkpoint: str | Path, device: str = "cpu", output_stride: int | None = None) -> SegmentationTask:
    """Load a fine-tuning checkpoint for inference (eval mode), checking it carries band statistics.

    Args:
        checkpoint: ``.ckpt`` written by ``falsecl finetune``, or a run folder (its best checkpoint is used).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        output_stride: Run DeepLabv3+ at this output stride (8 or 16) instead of the one it was trained at. The
            weights are the same (only the dilation of the last ResNet stages changes): 16 is about 2-3x faster
            than 8, usually for some accuracy.

    Returns:
        The task in eval mode on ``device``.

    Raises:
        FileNotFoundError: The checkpoint does not exist.
        ValueError: It is not a segmentation checkpoint or lacks ``mean``/``std``.
    """
    path = resolve_checkpoint(checkpoint)
    try:
        task = SegmentationTask.load_from_checkpoint(path, map_location="cpu")
    except Exception as err:  # unpickling errors, missing keys, foreign hyper-parameters
        # Lightning's own words ("blocked to prevent arbitrary code execution", "('pytorch-lightning_version')")
        # describe its internals, not the user's mistake: say what the file is when we can tell.
        message = pretraining_run_message(path) or _backbone_file_message(path)
        raise ValueError(
            message or f"{path} is not a falsecl fine-tuning checkpoint; pass a run folder runs/<name> written by "
            "'falsecl finetune' (or one of its checkpoints/*.ckpt)"
        ) from err
    hp = task.hp
    if task.model is None or not hp.mean or not hp.std:
        raise ValueError(
            f"{path} lacks in_channels/num_classes/mean/std in its hyper-parameters; it was not written by "
            "'falsecl finetune' with a datamodule providing band statistics"
        )
    if output_stride is not None and output_stride != hp.output_stride and task.model is not None:
        from falsecl.models.segmentation import build_deeplabv3plus

        model = build_deeplabv3plus(hp.arch, int(hp.in_channels), int(hp.num_classes), output_stride)
        model.load_state_dict(task.model.state_dict())
        task.model = model
        hp.output_stride = output_stride
    return task.to(resolve_device(device)).eval()


def classes_of(task: SegmentationTask) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and RGB colours of a checkpoint (its training dataset's when it predates stored colours)."""
    hp = task.hp
    k = int(hp.num_classes)
    colours = hp.get("class_colours")
    if not colours and hp.get("data_name"):
        from falsecl.datasets import SEGMENTATION_DATASETS

        cls = SEGMENTATION_DATASETS.get(hp.get("data_name"))
        colours = [list(c) for c in getattr(cls, "colours", ())] or None
    return class_labels(k, hp.get("class_names")), class_colours(k, colours)


def resolve_data(
    task: SegmentationTask, dataset: str | None, root: str | None, palette: str | None, bands: Any
) -> tuple[str, str, str | None, Any]:
    """Dataset, root, palette and bands for evaluation: the checkpoint's own unless given.

    Args:
        task: The loaded checkpoint.
        dataset: Explicit dataset name, or ``None`` for the checkpoint's.
        root: Explicit root, or ``None`` for the checkpoint's (when the dataset is the checkpoint's).
        palette: Explicit palette file (``folder`` datasets), or ``None``.
        bands: Explicit band choice, or ``None``.

    Returns:
        ``(dataset, root, palette, bands)``.

    Raises:
        ValueError: Another dataset than the checkpoint's without a root.
    """
    hp = task.hp
    own = hp.get("data_name")
    if own is None:
        warnings.warn(
            "the checkpoint does not record its training data (written by an older falsecl); assuming "
            f"--dataset {dataset or FALLBACK_DATASET} --root {root or FALLBACK_ROOT}. Pass --dataset/--root to be "
            "sure.",
            stacklevel=2,
        )
        own = dataset or FALLBACK_DATASET
        root = root or (FALLBACK_ROOT if own == FALLBACK_DATASET else None)
    dataset = dataset or own
    same = dataset == own
    if root is None and same and hp.get("data_root") is not None:
        root = existing_root(hp.get("data_root"), hp.get("data_root_as_given"))
    if root is None:
        raise ValueError(
            f"the checkpoint was trained on {own!r}; to evaluate it on {dataset!r} give --root (the dataset folder)"
        )
    if same:
        palette = palette if palette is not None else hp.get("data_palette")
        bands = bands if bands is not None else hp.get("data_bands")
    return dataset, str(root), palette, bands


def existing_root(recorded: str, as_given: str | None = None) -> str:
    """The checkpoint's data root that exists from here: the recorded (absolute) one, else the one as typed.

    Raises:
        FileNotFoundError: Neither exists; the message names both and the option that fixes it.
    """
    tried = list(dict.fromkeys(p for p in (recorded, as_given) if p))
    for candidate in tried:
        if Path(candidate).exists():
            return candidate
    raise FileNotFoundError(
        f"the dataset this model was trained on is not at {' or '.join(tried)} (seen from {Path.cwd()}); pass "
        "--root <the dataset folder> (add --dataset/--palette if it is another dataset)"
    )


def check_same_classes(task: SegmentationTask, names: list[str], where: str) -> None:
    """Refuse data whose classes differ from the checkpoint's (count, or names when both are known).

    Raises:
        ValueError: Naming the checkpoint's and the data's classes and the fix.
    """
    hp = task.hp
    own = hp.get("class_names")
    if len(names) != int(hp.num_classes) or (own and list(own) != list(names)):
        raise ValueError(
            f"the checkpoint predicts {hp.num_classes} classes {list(own) if own else ''} (trained on "
            f"{hp.get('data_name') or 'unrecorded data'}) but {where} has {len(names)} classes {list(names)}; "
            "evaluate on data with the same classes, or leave out --dataset to use the checkpoint's own"
        )


def describe_checkpoint(path: Path, task: SegmentationTask) -> dict[str, Any]:
    """Which checkpoint is scored and on which split it was chosen (for ``metrics.json`` / ``metrics.md``)."""
    hp = task.hp
    best = path.name.startswith("best")
    kind = "best-by-val" if best else "last" if path.name == "last.ckpt" else "given file"
    split, description = hp.get("data_val_split"), hp.get("data_val_description")
    if best:
        where = description or (f"split {split!r}" if split else "an unrecorded validation split")
        chosen = f"best val/mIoU on {where}"
    else:
        chosen = "last training step (not selected on validation)" if kind == "last" else "unknown"
    return {
        "file": str(path),
        "name": path.name,
        "kind": kind,
        "selected_on": {"split": split, "description": description},
        "chosen": chosen,
    }


def make_predictor(
    task: SegmentationTask,
    window: int,
    overlap: float,
    blend: Blend,
    tta: bool,
    batch_size: int,
    precision: str = "32-true",
) -> SlidingWindowPredictor:
    """A :class:`SlidingWindowPredictor` normalising with the checkpoint's band statistics.

    ``precision="auto"`` is measured on this model at this window and batch
    (:func:`falsecl.calibration.choose_precision`: fp32 or bf16, contiguous or channels-last, cached per CPU) and
    prints its choice.
    """
    hp = task.hp
    predictor = SlidingWindowPredictor(
        task,
        window=window,
        overlap=overlap,
        blend=blend,
        tta_flip=tta,
        batch_size=batch_size,
        num_classes=int(hp.num_classes),
        mean=hp.mean,
        std=hp.std,
        in_channels=int(hp.in_channels),
        precision=precision,
    )
    if precision == "auto":
        predictor.use_precision(
            choose_precision("auto", predictor.device, training=False, workload=predictor.calibration_workload)
        )
    return predictor
