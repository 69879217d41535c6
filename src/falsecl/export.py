r"""A fine-tuned DeepLabv3+ as a self-describing ONNX file, checked by ONNX Runtime (``falsecl export``).

Usage::

    falsecl export --checkpoint runs/ft [--output runs/ft/model.onnx] [--opset 18] [--height 512 --width 512] \
        [--dynamic true] [--tolerance 1e-4]

The graph maps a normalised image ``image`` ``(B, C, H, W)`` float32 to ``logits`` ``(B, K, H, W)``; with
``--dynamic true`` (the default) ``B``, ``H`` and ``W`` are free, ``H`` and ``W`` multiples of 16. Normalisation
is left to the caller, ``(x - mean) / std`` per band on raw digital numbers, and the file says how: its
``metadata_props`` hold ``class_names``, ``class_colours``, ``bands``, ``mean``, ``std``, ``input_dtype`` and
``input_value_range`` (per-band 1st/99th percentile of the raw training pixels) as JSON values, and the
run's model card, which in turn records the export. Before the file is moved into place, ONNX Runtime runs it on
random inputs and its logits must equal PyTorch's within ``--tolerance``; the largest difference is printed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from falsecl.inference.checkpoint import load_task, resolve_checkpoint, run_folder
from falsecl.model_card import read_model_card, update_model_card

#: The dynamo exporter (onnxscript) implements opset 18 and later; older opsets use the TorchScript exporter.
DYNAMO_MIN_OPSET = 18


class _Logits(nn.Module):
    """The segmentation network with its input named ``image`` (the ONNX input name)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        """Logits ``(B, K, H, W)`` of a normalised batch ``(B, C, H, W)``, ``H, W`` multiples of 16."""
        out: Tensor = self.model(image)
        return out


def model_metadata(hparams: Any, card: dict[str, Any]) -> dict[str, Any]:
    """What a user of the exported file needs: classes, colours, bands and normalisation.

    Args:
        hparams: The checkpoint's hyper-parameters (``task.hparams``).
        card: The run's model card (may be empty); fills values the checkpoint lacks.

    Returns:
        Plain JSON-ready values keyed by the metadata names.
    """

    def pick(*names: str) -> Any:
        for source in (hparams, card):
            for name in names:
                value = source.get(name) if hasattr(source, "get") else None
                if value is not None:
                    return value
        return None

    # The checkpoint stores what the data was under data_* names; a model card under dataset.name and bands.
    dataset = pick("data_name", "dataset", "dataset_name")
    if isinstance(dataset, dict):
        dataset = dataset.get("name")
    found = card.get("input")
    card_input: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        "class_names": pick("class_names"),
        "class_colours": pick("class_colours", "colours"),
        "bands": pick("data_bands", "bands"),
        "input_dtype": pick("data_dtype") or card_input.get("dtype"),
        "input_value_range": pick("data_value_range") or card_input.get("value_range"),
        "in_channels": int(hparams["in_channels"]),
        "num_classes": int(hparams["num_classes"]),
        "mean": [float(v) for v in hparams["mean"]],
        "std": [float(v) for v in hparams["std"]],
        "dataset": dataset,
        "normalisation": "image = (raw - mean) / std per band, float32, NCHW",
        "input": "image: (batch, bands, height, width) float32, height and width multiples of 16",
        "output": "logits: (batch, classes, height, width); class map = argmax over axis 1",
        "architecture": f"DeepLabV3+ ({hparams.get('arch', 'resnet18')} encoder, output stride "
        f"{hparams.get('output_stride', 8)})",
    }


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata_props`` of an ONNX file, JSON values decoded (other strings kept as they are)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            out[prop.key] = prop.value
    return out


def _export_graph(model: nn.Module, example: Tensor, path: Path, opset: int, dynamic: bool) -> None:
    names: dict[str, Any] = {"input_names": ["image"], "output_names": ["logits"], "opset_version": opset}
    if opset >= DYNAMO_MIN_OPSET:
        dims = torch.export.Dim
        shapes = {"image": {0: dims("batch"), 2: dims("height"), 3: dims("width")}} if dynamic else None
        torch.onnx.export(
            model, (example,), str(path), dynamo=True, external_data=False, dynamic_shapes=shapes, verbose=False,
            **names,
        )  # fmt: skip
    else:
        axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}}
        torch.onnx.export(model, (example,), str(path), dynamo=False, dynamic_axes=axes if dynamic else None, **names)


def max_logit_difference(path: str | Path, model: nn.Module, inputs: Sequence[Tensor]) -> float:
    """Largest ``|ONNX Runtime - PyTorch|`` logit over ``inputs`` (CPU, float32)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        got = session.run(["logits"], {"image": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        if got.shape != want.shape:
            raise ValueError(f"ONNX logits have shape {got.shape}, PyTorch's {want.shape}")
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def export(
    checkpoint: str,
    output: str | None = None,
    opset: int = 18,
    height: int = 512,
    width: int = 512,
    dynamic: bool = True,
    check: bool = True,
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Export a fine-tuned model to ONNX, with its classes and normalisation in the file's metadata.

    Args:
        checkpoint: A fine-tuning run folder ``runs/<name>`` (its best checkpoint) or a ``.ckpt`` file.
        output: The ONNX file to write (replaced atomically; nothing is left behind on failure); default
            ``<run>/model.onnx``.
        opset: ONNX opset; 18 or later uses the dynamo exporter, 17 and earlier the TorchScript exporter.
        height: Example input height, a multiple of 16 (the fixed height when ``dynamic`` is false).
        width: Example input width, a multiple of 16.
        dynamic: Free batch size, height and width.
        check: Run the file with ONNX Runtime and compare its logits with PyTorch's.
        tolerance: Largest accepted absolute logit difference.

    Returns:
        ``{"output", "opset", "max_abs_diff", "metadata", "checkpoint", "tolerance"}`` (``max_abs_diff`` is
        ``None`` without ``check``).

    Raises:
        ValueError: Bad sizes or opset, or ONNX Runtime disagrees with PyTorch beyond ``tolerance``.
        FileNotFoundError: No checkpoint.
    """
    if height < 16 or width < 16 or height % 16 or width % 16:
        raise ValueError(f"--height and --width must be positive multiples of 16 (DeepLabv3+), got {height}x{width}")
    if not 7 <= opset <= 23:
        raise ValueError(f"--opset must be between 7 and 23, got {opset}")
    ckpt = resolve_checkpoint(checkpoint)
    task = load_task(ckpt, device="cpu")
    if task.model is None:
        raise ValueError(f"{ckpt} holds no model")
    model = _Logits(task.model).eval()
    channels = int(task.hp.in_channels)
    run_dir = run_folder(ckpt) or ckpt.parent  # a lone .ckpt: its folder holds the card and the export
    card = read_model_card(run_dir)
    metadata = model_metadata(task.hp, card)
    generator = torch.Generator().manual_seed(0)
    # Batch 2 in the example keeps the exporter from specialising a dynamic batch dimension to 1.
    example = torch.randn(2 if dynamic else 1, channels, height, width, generator=generator)

    target = Path(output) if output is not None else run_dir / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        _export_graph(model, example, tmp, opset, dynamic)
        import onnx

        proto = onnx.load(str(tmp))
        entries = {**metadata, "checkpoint": str(ckpt), "model_card": card or None}
        for key, value in entries.items():
            proto.metadata_props.add(key=key, value=json.dumps(value))
        proto.producer_name = "falsecl"
        onnx.save(proto, str(tmp))
        diff = None
        if check:
            inputs = [example[:1]]
            if dynamic:  # another batch size and shape, to prove the axes are free
                inputs.append(torch.randn(2, channels, height // 2 + 16, width + 16, generator=generator))
            diff = max_logit_difference(tmp, model, inputs)
            if not diff <= tolerance:
                raise ValueError(
                    f"ONNX Runtime's logits differ from PyTorch's by up to {diff:.3g} (> {tolerance:g}); "
                    "the file was not written. Try another --opset"
                )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    opset_written = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=opset)
    if card:  # a falsecl run: its card points at the export
        onnx_entry = {"path": str(target), "opset": opset_written, "dynamic": dynamic, "max_abs_diff": diff}
        update_model_card(run_dir, {"onnx": onnx_entry})
    return {
        "output": str(target),
        "opset": opset_written,
        "max_abs_diff": diff,
        "metadata": metadata,
        "checkpoint": str(ckpt),
        "tolerance": tolerance,
    }
