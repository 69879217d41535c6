"""Numeric precision and memory format: the choices, the CPU's bf16 support and the fallback rule.

``--precision auto`` is measured (:mod:`falsecl.calibration`: a few steps of the actual model in fp32 and bf16,
contiguous and channels-last, cached per CPU, model and size); this module holds what that measurement and the
inference core share without touching any file but ``/proc/cpuinfo``: the accepted values, the fallback when
there is no model to measure (:func:`resolve_precision`), the :class:`Workload` a measurement times, the
:class:`PrecisionChoice` it returns and :func:`to_memory_format`. The contrastive losses compute their
similarities in fp32 whatever the precision (:mod:`falsecl.losses.fp32`).
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

#: Values accepted by ``--precision`` / ``--trainer.precision`` besides Lightning's own.
PRECISION_CHOICES = ("auto", "bf16-mixed", "32-true")
Precision = Literal["bf16-mixed", "32-true"]

#: CPU flags that decide how bf16 runs (part of the cache key).
BF16_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_fp16")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_supports_bf16() -> bool:
    """Whether this CPU executes bf16 natively (x86 ``avx512_bf16`` or ``amx_bf16`` flags; Linux only)."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_description() -> dict[str, Any]:
    """CPU model name (``/proc/cpuinfo``, as ``lscpu`` shows it) and its bf16-relevant flags."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": name, "machine": platform.machine(), "flags": sorted(_cpu_flags() & set(BF16_FLAGS))}


def device_supports_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...) runs bf16 natively."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_supports_bf16()
    return False


def as_device(device: torch.device | str) -> torch.device:
    """A torch device from a device or a Lightning accelerator name (``gpu``, ``cuda``, ``auto``, ``cpu``)."""
    if isinstance(device, str) and device in ("gpu", "cuda"):
        return torch.device("cuda")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device | str = "cpu", training: bool = False) -> str:
    """``"auto"`` without a measurement: bf16 where the device runs it natively (CPU training: fp32).

    The fallback when no model is at hand to measure (see :func:`choose_precision`); other values pass unchanged.
    """
    if precision != "auto":
        return precision
    device = as_device(device)
    if training and device.type == "cpu":
        return "32-true"
    return "bf16-mixed" if device_supports_bf16(device) else "32-true"


@dataclass
class Workload:
    """One step of the real model on synthetic inputs, for calibration.

    Attributes:
        name: The model in a few words (class, architecture); part of the cache key.
        module: A throwaway copy of the model: calibration changes its weights' gradients and memory format.
        inputs: Step inputs; 4-D float tensors ``(B, C, H, W)`` are images (converted to channels-last).
        step: ``step(module, *inputs)`` -> a loss (training) or the output (inference).
    """

    name: str
    module: nn.Module
    inputs: tuple[Tensor, ...]
    step: Callable[..., Tensor]


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``auto`` chose: ``precision`` (``bf16-mixed``/``32-true``), ``channels_last`` and the line printed."""

    precision: str
    channels_last: bool = False
    line: str = ""


def to_memory_format(x: Tensor, channels_last: bool) -> Tensor:
    """An image batch ``(B, C, H, W)`` in channels-last (or contiguous) memory; other tensors unchanged."""
    if x.dim() != 4 or not x.is_floating_point():
        return x
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


PRECISION_HELP = (
    "numeric precision: 'auto' (CPUs: measures fp32 against bf16-mixed, and channels-last memory, on this model "
    "for a few seconds, cached per CPU/model/size; GPUs: bf16-mixed where supported), 'bf16-mixed' or "
    "'32-true'; an explicit --trainer.precision wins"
)


def trainer_auto_to_precision(argv: list[str] | None) -> list[str] | None:
    """Accept ``--trainer.precision auto``: Lightning refuses ``auto``, so it is rewritten as ``--precision auto``.

    Args:
        argv: Command-line arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The arguments with ``--trainer.precision auto`` / ``--trainer.precision=auto`` rewritten.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "--trainer.precision=auto":
            out += ["--precision", "auto"]
        elif args[i] == "--trainer.precision" and i + 1 < len(args) and args[i + 1] == "auto":
            out += ["--precision", "auto"]
            i += 1
        else:
            out.append(args[i])
        i += 1
    return out


def data_in_channels(data: Any, default: int = 3) -> int:
    """Bands of a datamodule's images before its ``setup`` (``in_channels``, a band list, else ``default``)."""
    channels = getattr(data, "in_channels", 0)
    if isinstance(channels, int) and channels > 0:
        return channels
    bands = getattr(data, "bands", None)
    if isinstance(bands, list | tuple) and bands:
        return len(bands)
    return default
