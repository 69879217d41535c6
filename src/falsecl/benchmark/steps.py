"""One training step of the benchmark (``falsecl pretrain``/``finetune`` in its own process), restartable.

A finished step is marked by ``DONE`` (with its wall time) and skipped; an interrupted one resumes from
``checkpoints/last.ckpt``; a step whose ``LOCK`` names another live process (a second runner) is waited for.
Each resume is noted in ``RESUMED`` (the checkpoint's step) and ``DONE`` lists them: a resumed training is a valid
run but not reproducible from its seed alone, since the random streams restart.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from falsecl.benchmark.provenance import pretrain_record

#: Runs ``falsecl <args>`` and returns its exit code (a subprocess in the product, a fake in tests).
Runner = Callable[[list[str]], int]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _wait_for_lock(run_dir: Path, poll_s: float = 10.0) -> None:
    """Wait while another live process holds ``run_dir/LOCK`` and the step is not done."""
    lock = run_dir / "LOCK"
    while lock.is_file() and not (run_dir / "DONE").is_file():
        try:
            pid = int(lock.read_text().split()[0])
        except (ValueError, IndexError):
            return
        if pid == os.getpid() or not _pid_alive(pid):
            return
        time.sleep(poll_s)


def _done_wall(run_dir: Path) -> float | None:
    """Wall seconds recorded in ``DONE`` (``None`` for the older plain-timestamp marker)."""
    try:
        return float(json.loads((run_dir / "DONE").read_text())["wall_s"])
    except (ValueError, KeyError, TypeError, OSError):
        return None


def train_step(cmd: str, config: str, run_dir: Path, extra: Sequence[str], run: Runner) -> float | None:
    """Run a training sub-command unless done; resume it when a last checkpoint exists. Returns its wall time."""
    _wait_for_lock(run_dir)
    if (run_dir / "DONE").is_file():
        return _done_wall(run_dir)
    args = [cmd, "--config", config, "--trainer.default_root_dir", str(run_dir), *extra]
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        args += ["--ckpt_path", str(last)]
        note = {"step": pretrain_record(run_dir)["pretrain_steps"], "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with (run_dir / "RESUMED").open("a") as f:
            f.write(json.dumps(note) + "\n")
    start = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "LOCK").write_text(f"{os.getpid()}\n")
    try:
        code = run(args)
    finally:
        (run_dir / "LOCK").unlink(missing_ok=True)
    if code != 0:
        raise RuntimeError(f"'falsecl {cmd}' failed with exit code {code} for {run_dir}; fix it and rerun the "
                           "benchmark: finished steps are kept and this one resumes")
    wall = time.perf_counter() - start
    (run_dir / "DONE").write_text(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "wall_s": wall,
                                              "resumed_at_steps": resumed_steps(run_dir)}))
    return wall


def resumed_steps(run_dir: Path) -> list[int | None]:
    """The steps a training was resumed from (``[]``: it ran in one go), read from ``RESUMED``."""
    path = run_dir / "RESUMED"
    if not path.is_file():
        return []
    steps: list[int | None] = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line).get("step"))
        except (ValueError, AttributeError):
            steps.append(None)  # a half-written line still counts as a resume
    return steps
