"""What each benchmark cell was computed with: code version, resolved configuration, pretraining length.

Every cell records

- ``git_commit`` and ``git_dirty`` of the falsecl source it ran (dirty: uncommitted edits under ``src/`` or
  ``configs/``; results and documentation written by the run itself do not count);
- ``code_version``: the git tree ids of ``src/`` and ``configs/`` at that commit (``+dirty`` when edited), the same
  for two commits that differ only in results or documentation, so a matrix finished over several sessions (each
  committing its cells) still counts as one code version;
- ``config_hash``: a hash of everything resolved for the cell (the method, its pretraining YAML's text, the shared
  arguments, the probe settings and dataset);
- ``pretrain_steps``, ``pretrain_epochs`` and FALSE's ``fire_rate`` over the second half of pretraining;
- ``pretrain_resumed_at``: the steps an interrupted pretraining was resumed from (``[]`` when it ran in one go).
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

#: Folders whose content determines a cell's result.
CODE_PATHS = ("src", "configs")


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30,
                             check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state(repo: str | Path | None = None) -> dict[str, Any]:
    """``{"git_commit", "git_dirty", "code_version"}`` of the repository holding the falsecl source.

    Args:
        repo: A folder inside the repository (default: the folder of the imported ``falsecl`` package).

    Returns:
        The three values; ``None`` each outside a git checkout (an installed wheel).
    """
    if repo is None:
        import falsecl

        repo = Path(falsecl.__file__).resolve().parent
    top = _git(Path(repo), "rev-parse", "--show-toplevel")
    if top is None:
        return {"git_commit": None, "git_dirty": None, "code_version": None}
    root = Path(top)
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    dirty = bool(status) if status is not None else None
    trees = [_git(root, "rev-parse", f"HEAD:{p}") or "-" for p in CODE_PATHS]
    version = hashlib.sha256(" ".join(trees).encode()).hexdigest()[:12] + ("+dirty" if dirty else "")
    return {"git_commit": commit, "git_dirty": dirty, "code_version": version}


def same_code(commit: str, repo: str | Path | None = None) -> bool:
    """Whether ``src/`` and ``configs/`` at ``commit`` equal the checkout's (committed and clean)."""
    state = git_state(repo)
    if state["git_commit"] is None or state["git_dirty"]:
        return False
    if repo is None:
        import falsecl

        repo = Path(falsecl.__file__).resolve().parent
    return _git(Path(repo), "diff", "--quiet", commit, "HEAD", "--", *CODE_PATHS) is not None


def config_hash(resolved: dict[str, Any]) -> str:
    """SHA-256 (16 hex digits) of a cell's resolved configuration; config files are hashed by content.

    Args:
        resolved: JSON-serialisable settings; a value ``{"file": path}`` is replaced by the file's text.
    """

    def expand(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"file"}:
            path = Path(str(value["file"]))
            return path.read_text() if path.is_file() else f"missing:{path}"
        if isinstance(value, dict):
            return {str(k): expand(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [expand(v) for v in value]
        return value

    text = json.dumps(expand(resolved), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pretrain_record(run_dir: str | Path) -> dict[str, Any]:
    """Steps, epochs and FALSE's fire rate of a finished pretraining run (``None`` where not found).

    Steps and epochs come from ``checkpoints/last.ckpt`` (Lightning's loop counters); the fire rate is the mean of
    ``train/false/fire_rate`` over the second half of the logged steps in ``csv/metrics.csv``; the steps the run
    was resumed from (``[]``: none) from ``DONE`` (:func:`falsecl.benchmark.steps.train_step`).
    """
    run = Path(run_dir)
    out: dict[str, Any] = {"pretrain_steps": None, "pretrain_epochs": None, "fire_rate": None,
                           "pretrain_resumed_at": None}
    try:  # None: a run finished before resumes were recorded
        out["pretrain_resumed_at"] = json.loads((run / "DONE").read_text())["resumed_at_steps"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    ckpt = run / "checkpoints" / "last.ckpt"
    if ckpt.is_file():
        import torch

        try:
            payload = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
            steps = int(payload["global_step"])
            fit = payload.get("loops", {}).get("fit_loop", {})
            done = int(fit["epoch_progress"]["current"]["completed"])
            current = int(fit["epoch_loop.batch_progress"]["current"]["completed"])
            out["pretrain_steps"] = steps
            if done >= 1 and steps > current:
                # Whole steps an epoch: after a resume Lightning's count of the last epoch's batches can be one
                # short, which made the epoch 68.14 steps long instead of 68.
                per_epoch = round((steps - current) / done)
                out["pretrain_epochs"] = round(steps / per_epoch, 3)
        except (KeyError, TypeError, ValueError, RuntimeError, OSError):
            pass
    log = run / "csv" / "metrics.csv"
    if log.is_file():
        series: list[tuple[int, float]] = []
        with log.open(newline="") as f:
            for row in csv.DictReader(f):
                value = next((v for k, v in row.items() if k and k.endswith("false/fire_rate") and v), None)
                if value is not None:
                    series.append((int(float(row.get("step") or 0)), float(value)))
        if series:
            last = max(s for s, _ in series)
            half = [v for s, v in series if s >= last / 2]
            out["fire_rate"] = sum(half) / len(half)
    return out
