"""``--precision auto``: measure which precision and memory format is faster for *this* model on *this* machine.

Whether bf16 mixed precision pays on a CPU depends on the CPU: on one AMD EPYC with AVX-512 BF16 (2 cores) a
SimCLR step ran 1.93x faster in bf16, on another CPU with the same flag bf16 training ran at 0.59x of fp32 (its
bf16 convolution backward kernels were slower). Flags cannot tell these apart, so ``auto`` measures:

- CPUs: a short calibration runs a few steps of the actual model (the task's own module, a throwaway copy) at the
  run's batch and input size, in fp32 and bf16 mixed precision, each with contiguous and channels-last memory,
  round-robin so that load from other processes hits all alike, the first round excluded as warm-up, the best
  step of each kept. The fastest wins; bf16 and channels-last must each beat the simpler choice by more than 5 %
  (:data:`TIE`), else fp32 and contiguous memory are kept. Training times forward + backward; inference
  (``evaluate``, ``predict``) the forward pass alone. A CPU without native bf16 (no ``avx512_bf16``/``amx_bf16``)
  only measures channels-last in fp32.
- The result is cached in ``$XDG_CACHE_HOME/falsecl/precision.json`` (``~/.cache/...``; the environment variable
  ``FALSECL_PRECISION_CACHE`` names another file), keyed by CPU model and bf16-relevant flags, torch version,
  threads, model, input shape, batch and training vs inference; later runs reuse it without measuring. A
  measurement disturbed by other load (steps of one configuration more than :data:`UNSTEADY` apart) is used but
  not cached. Delete the file to measure again.
- GPUs: ``bf16-mixed`` where supported, not measured.

One line says what was chosen and why. ``--precision bf16-mixed`` / ``32-true`` force a precision (contiguous
memory). The contrastive losses compute their similarities in fp32 whatever the precision
(:mod:`falsecl.losses.fp32`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from falsecl.precision import (
    PRECISION_CHOICES,
    Precision,
    PrecisionChoice,
    Workload,
    as_device,
    cpu_description,
    cpu_supports_bf16,
    resolve_precision,
    to_memory_format,
)

#: bf16 or channels-last must be this much faster than the simpler choice to be picked (noise margin).
TIE = 1.05
#: A measurement whose steps of one configuration varied more than this was disturbed: used, not cached.
UNSTEADY = 1.5
#: Environment variable naming the cache file (tests, shared machines).
CACHE_ENV = "FALSECL_PRECISION_CACHE"
#: (precision, channels_last) pairs measured, simplest first.
CONFIGS: tuple[tuple[Precision, bool], ...] = (
    ("32-true", False), ("bf16-mixed", False), ("32-true", True), ("bf16-mixed", True)
)

def cache_path() -> Path:
    """``$FALSECL_PRECISION_CACHE``, else ``$XDG_CACHE_HOME/falsecl/precision.json`` (``~/.cache`` by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "falsecl" / "precision.json"


def calibration_key(workload: Workload, training: bool) -> dict[str, Any]:
    """What a measurement depends on: CPU, torch, threads, model, input shapes, training vs inference."""
    return {
        **cpu_description(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": workload.name,
        "inputs": [list(x.shape) for x in workload.inputs if x.dim() == 4 and x.is_floating_point()],
        "mode": "training" if training else "inference",
    }


def _load_cache(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            raise ValueError("no 'entries' table")
        return dict(data["entries"])
    except (OSError, ValueError) as err:  # JSONDecodeError is a ValueError
        warnings.warn(f"precision cache {path} is unreadable ({err}); measuring again and rewriting it", stacklevel=3)
        return {}


def _save_cache(path: Path, entries: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": 1, "entries": entries}, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file
    except OSError as err:
        warnings.warn(f"could not write the precision cache {path} ({err}); set {CACHE_ENV}", stacklevel=3)


def time_step(workload: Workload, precision: str, channels_last: bool, training: bool) -> float:
    """Seconds of one step (forward + backward when ``training``, else forward) in one configuration."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    module = workload.module.to(memory_format=fmt)
    inputs = [to_memory_format(x, channels_last) for x in workload.inputs]
    bf16 = precision == "bf16-mixed"
    start = time.perf_counter()
    if training:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = workload.step(module, *inputs)
        torch.autograd.backward(out.float().sum())
        module.zero_grad(set_to_none=True)
    else:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            workload.step(module, *inputs)
    return time.perf_counter() - start


def measure(
    workload: Workload,
    training: bool,
    configs: Sequence[tuple[Precision, bool]] = CONFIGS,
    min_rounds: int = 3,
    max_rounds: int = 6,
    budget_s: float = 8.0,
) -> tuple[dict[str, float], float]:
    """Best seconds per step of each configuration, timed round-robin; the first round is warm-up.

    Rounds continue past ``min_rounds`` while the measurement has taken less than ``budget_s``. The best (least
    disturbed) step is kept rather than the median: other processes on the machine only ever add time, and a
    median of few steps can catch a burst of their load in one configuration only.

    Returns:
        ``({"fp32": s, "bf16": s, "fp32+cl": s, "bf16+cl": s}, spread)``: the best step of each configuration
        measured, and the largest ratio of slowest to fastest timed step of one configuration (how disturbed the
        measurement was).
    """
    workload.module.train(training)
    times: dict[str, list[float]] = {_label(p, cl): [] for p, cl in configs}
    start = time.perf_counter()
    for round_ in range(max_rounds):
        if round_ >= min_rounds and time.perf_counter() - start > budget_s:
            break
        order = list(configs) if round_ % 2 == 0 else list(configs)[::-1]  # nobody always runs first
        for precision, channels_last in order:
            seconds = time_step(workload, precision, channels_last, training)
            if round_ > 0:
                times[_label(precision, channels_last)].append(seconds)
    workload.module.to(memory_format=torch.contiguous_format)
    spread = max(max(t) / min(t) for t in times.values())
    return {label: min(t) for label, t in times.items()}, spread


def _label(precision: str, channels_last: bool) -> str:
    return ("bf16" if precision == "bf16-mixed" else "fp32") + ("+cl" if channels_last else "")


def pick(seconds: dict[str, float]) -> tuple[Precision, bool]:
    """The fastest configuration; bf16 and channels-last must each win by more than :data:`TIE`."""
    best = {p: min(v for k, v in seconds.items() if k.startswith(p)) for p in ("fp32", "bf16") if p in seconds}
    bf16 = "bf16" in best and best["fp32"] > TIE * best["bf16"]
    name = "bf16" if bf16 else "fp32"
    channels_last = f"{name}+cl" in seconds and seconds[name] > TIE * seconds[f"{name}+cl"]
    return ("bf16-mixed" if bf16 else "32-true"), channels_last


def describe(entry: dict[str, Any], path: Path, cached: bool) -> str:
    """The one line ``auto`` prints: choice, measured step times and ratios, where it is cached."""
    s, key = entry["seconds"], entry["key"]
    choice = entry["precision"] + (" + channels-last" if entry["channels_last"] else "")
    shape = "x".join(str(v) for v in key["inputs"][0]) if key["inputs"] else "?"
    what = f"{key['mode']}, {key['model']}, input {shape}"
    if "bf16" in s:
        ratio = f"bf16 {s['fp32'] / s['bf16']:.2f}x of fp32 ({s['bf16']:.3g} s vs {s['fp32']:.3g} s per step)"
    else:
        ratio = f"fp32 ({s['fp32']:.3g} s per step; no native bf16 on this CPU, not measured)"
    name = "bf16" if entry["precision"] == "bf16-mixed" else "fp32"
    if f"{name}+cl" in s:
        ratio += f", channels-last {s[name] / s[f'{name}+cl']:.2f}x in {name}"
    if entry.get("spread", 1.0) > UNSTEADY:
        where = f"steps varied up to {entry['spread']:.1f}x under other load: not cached, measured again next run"
    else:
        where = f"{'measured earlier, cached in' if cached else 'cached in'} {path}"
    return f"precision auto: {choice} ({what}: {ratio}; {where})"


def choose_precision(
    requested: str,
    device: torch.device | str,
    training: bool,
    workload: Callable[[], Workload | None] | None = None,
    stream: Any = None,
) -> PrecisionChoice:
    """Resolve ``--precision``: ``auto`` is measured on CPUs (cached), bf16 on GPUs that have it.

    Args:
        requested: ``"auto"``, ``"bf16-mixed"`` or ``"32-true"`` (others pass unchanged).
        device: Where the model runs (``"cpu"``, ``"cuda"``, ``"gpu"``, ``"auto"``).
        training: Measure forward + backward (training) or the forward pass (inference).
        workload: Builds the model's :class:`Workload` (on CPUs only: its name and input shapes are part of the
            cache key; it is run on a cache miss); ``None`` or a ``None`` result: no measurement,
            :func:`resolve_precision`'s fallback.
        stream: Where the line goes (default ``sys.stderr``).

    Returns:
        The choice; its line has been printed when ``requested`` is ``auto``.
    """
    if requested != "auto":
        return PrecisionChoice(requested)
    stream = sys.stderr if stream is None else stream
    dev = as_device(device)
    mode = "training" if training else "inference"
    built = workload() if workload is not None and dev.type == "cpu" else None
    if built is None:
        precision = resolve_precision("auto", dev, training)
        if dev.type == "cuda":
            why = "GPU with bf16" if precision == "bf16-mixed" else "GPU without bf16"
        else:
            why = f"{dev.type}, no model to measure"
        line = f"precision auto: {precision} ({mode}; {why}; not measured)"
        print(line, file=stream, flush=True)
        return PrecisionChoice(precision, False, line)
    key = calibration_key(built, training)
    key_text = json.dumps(key, sort_keys=True)
    path = cache_path()
    entries = _load_cache(path)
    entry: dict[str, Any] = entries.get(key_text) or {}
    cached = _valid(entry)
    if not cached:
        configs = CONFIGS if cpu_supports_bf16() else tuple(c for c in CONFIGS if c[0] == "32-true")
        print(f"precision auto: measuring {', '.join(_label(*c) for c in configs)} on {built.name} ({mode}; once "
              "per CPU, model and size)", file=stream, flush=True)
        seconds, spread = measure(built, training, configs)
        precision, channels_last = pick(seconds)
        entry = {"key": key, "seconds": seconds, "precision": precision, "channels_last": channels_last,
                 "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "spread": round(spread, 3)}
        if spread <= UNSTEADY:
            entries[key_text] = entry
            _save_cache(path, entries)
    line = describe(entry, path, cached)
    print(line, file=stream, flush=True)
    return PrecisionChoice(str(entry["precision"]), bool(entry["channels_last"]), line)


def _valid(entry: Any) -> bool:
    try:
        return (entry["precision"] in ("32-true", "bf16-mixed") and isinstance(entry["channels_last"], bool)
                and float(entry["seconds"]["fp32"]) > 0)
    except (KeyError, TypeError, ValueError):
        return False


def trainer_precision(
    precision: str | None, trainer_precision: Any, accelerator: Any, task: Any = None, data: Any = None
) -> str | None:
    """The precision to give Lightning's Trainer from falsecl's ``--precision`` and ``--trainer.precision``.

    With ``auto`` on a CPU, ``task.calibration_workload(data)`` is measured (:func:`choose_precision`) and a
    channels-last choice is set on the task (``task.channels_last``), which converts itself at fit start.

    Args:
        precision: falsecl's ``--precision`` (``"auto"``, ``"bf16-mixed"``, ``"32-true"`` or ``None``).
        trainer_precision: ``--trainer.precision`` as configured (``None`` when not set); it wins when set.
        accelerator: ``--trainer.accelerator`` (``"auto"``, ``"cpu"``, ``"gpu"``, ``"cuda"`` or ``None``).
        task: The LightningModule (a falsecl task); ``None``: no measurement.
        data: The datamodule (batch size, crop size and bands of the run).

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
    build = getattr(task, "calibration_workload", None)
    choice = choose_precision(precision, device, True, (lambda: build(data)) if callable(build) else None)
    if choice.channels_last and task is not None:
        task.channels_last = True
    return choice.precision


