"""Numeric precision: ``auto`` picks bf16 mixed precision where it is measured to be faster.

- GPUs with bf16 tensor cores: ``bf16-mixed`` for training and inference.
- CPUs with AVX-512 BF16 or AMX: ``bf16-mixed`` for inference (forward passes only), ``32-true`` for training.
  On such a CPU (2 cores, PyTorch 2.14) a ResNet-18 forward ran 1.08-1.6x faster in bf16, but forward + backward
  ran at 0.59x (0.72x channels-last) of fp32 speed, and a SimCLR preset step at 0.52x: PyTorch's CPU backward
  kernels for bf16 convolutions are slower than fp32 ones. ``--precision bf16-mixed`` still forces bf16.
- Anything else: ``32-true`` (bf16 would be emulated).

The contrastive losses always compute their similarities in fp32 whatever the precision (see
:mod:`falsecl.losses.fp32`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

import torch

#: Values accepted by ``--precision`` / ``--trainer.precision`` besides Lightning's own.
PRECISION_CHOICES = ("auto", "bf16-mixed", "32-true")
Precision = Literal["bf16-mixed", "32-true"]


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU executes bf16 natively (x86 ``avx512_bf16`` or ``amx_bf16`` flags; Linux only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def device_supports_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...) runs bf16 natively."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_supports_bf16()
    return False


def resolve_precision(precision: str, device: torch.device | str = "cpu", training: bool = False) -> str:
    """Turn ``"auto"`` into ``"bf16-mixed"`` or ``"32-true"`` for ``device``; other values pass unchanged.

    Args:
        precision: ``"auto"``, or any precision Lightning accepts (``"bf16-mixed"``, ``"32-true"``, ...).
        device: Where the model runs (an accelerator name such as ``"gpu"`` counts as ``"cuda"``).
        training: Resolve for training (forward + backward) rather than inference; on CPUs ``auto`` then stays
            ``32-true`` (see the module docstring for the measurements).

    Returns:
        The precision to use.
    """
    if precision != "auto":
        return precision
    if isinstance(device, str) and device in ("gpu", "cuda"):
        device = "cuda"
    elif isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if training and torch.device(device).type == "cpu":
        return "32-true"
    return "bf16-mixed" if device_supports_bf16(device) else "32-true"


PRECISION_HELP = (
    "numeric precision: 'auto' (bf16-mixed on GPUs with bf16, 32-true on CPUs, where bf16 training measured "
    "slower), 'bf16-mixed' or '32-true'; an explicit --trainer.precision wins"
)


def trainer_precision(precision: str | None, trainer_precision: Any, accelerator: Any) -> str | None:
    """The precision to give Lightning's Trainer from falsecl's ``--precision`` and ``--trainer.precision``.

    Args:
        precision: falsecl's ``--precision`` (``"auto"``, ``"bf16-mixed"``, ``"32-true"`` or ``None``).
        trainer_precision: ``--trainer.precision`` as configured (``None`` when not set); it wins when set.
        accelerator: ``--trainer.accelerator`` (``"auto"``, ``"cpu"``, ``"gpu"``, ``"cuda"`` or ``None``).

    Returns:
        The resolved precision, or ``None`` to leave Lightning's own setting alone.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISION_CHOICES`.
    """
    if precision is None or trainer_precision is not None:
        return None
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"--precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
    device = accelerator if isinstance(accelerator, str) and accelerator != "mps" else "auto"
    return resolve_precision(precision, device, training=True)


def trainer_auto_to_precision(argv: list[str] | None) -> list[str] | None:
    """Accept ``--trainer.precision auto``: Lightning refuses ``auto``, so it is rewritten as ``--precision auto``.

    Args:
        argv: Command-line arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The arguments with ``--trainer.precision auto`` / ``--trainer.precision=auto`` rewritten.
    """
    import sys

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
