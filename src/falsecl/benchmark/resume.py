"""Which benchmark cells to run: reruns from scratch, configuration hashes, and published cells reused.

A cell already in the published results (committed) is not rerun when its resolved configuration hash is the
current one and its commit's ``src/`` and ``configs/`` equal the checkout's (:mod:`falsecl.benchmark.provenance`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from falsecl.benchmark.cells import Cell, Method, load_cell_result
from falsecl.benchmark.provenance import config_hash, same_code


def repro_cells(repro: list[dict[str, Any]], by_name: dict[str, Method], cells: list[Cell]) -> list[Cell]:
    """The probe cells of each ``{"method", "pretrain_seed"}`` to rerun from scratch (``repro=True``)."""
    out = []
    for entry in repro:
        name, p = str(entry.get("method")), int(entry.get("pretrain_seed", 0))
        if name not in by_name or by_name[name].pretrain_config is None:
            raise ValueError(f"repro: {name!r} is not a pretrained method of the benchmark; name one of "
                             f"{[m.name for m in by_name.values() if m.pretrain_config]}")
        out += [Cell(c.method, c.label_fraction, c.finetune_seed, c.pretrain_seed, c.protocol, True) for c in cells
                if c.method == name and c.pretrain_seed == p and c.protocol == "probe"]
    return out


def cell_config_hash(cell: Cell, method: Method, settings: dict[str, Any]) -> str:
    """The cell's resolved configuration hash (what a published cell must match to be reused)."""
    own = {k: v for k, v in vars(method).items() if k != "priority"}
    resolved: dict[str, Any] = {
        "method": own, "protocol": cell.protocol,
        "pretrain_config": None if method.pretrain_config is None else {"file": method.pretrain_config},
        "pretrain_args": settings["pretrain_args"], "data": settings["data"],
    }
    if cell.protocol == "probe":
        resolved.update(probe_window=settings["probe_window"], probe_steps=settings["probe_steps"])
    else:
        resolved.update(finetune_config={"file": settings["finetune_config"]},
                        finetune_args=settings["finetune_args"], evaluate_args=settings["evaluate_args"])
    return config_hash(resolved)


def cell_id(r: dict[str, Any]) -> tuple[str, str, float, int, int, bool]:
    """(method, protocol, fraction, pretraining seed, fine-tuning seed, repro) of a result row."""
    return (str(r["method"]), str(r.get("protocol", "finetune")), float(r["label_fraction"]),
            int(r.get("pretrain_seed") or 0), int(r.get("finetune_seed") or 0), bool(r.get("repro")))


def published_cells(path: Path, cells: list[Cell], hashes: dict[Cell, str], out: Path) -> int:
    """Copy the published results of planned, not yet finished cells into ``out`` when they may be reused.

    A published cell is reused when its ``config_hash`` is the cell's current one and its commit's code
    (``src/``, ``configs/``) equals the checkout's; otherwise it is rerun, and the reason printed.

    Returns:
        The number of cells reused.
    """
    if not path.is_file():
        return 0
    published = {cell_id(r): r for r in json.loads(path.read_text()) if isinstance(r, dict) and "method" in r}
    reused, refused = 0, []
    checked: dict[str, bool] = {}
    for cell in cells:
        r = published.get((cell.method, cell.protocol, cell.label_fraction, cell.pretrain_seed,
                           cell.finetune_seed, cell.repro))
        if r is None or load_cell_result(out / cell.slug) is not None:
            continue
        commit = r.get("git_commit")
        if commit and commit not in checked:
            checked[commit] = same_code(str(commit))
        if r.get("config_hash") != hashes[cell] or not commit or r.get("git_dirty") or not checked[str(commit)]:
            refused.append(cell.slug)
            continue
        cell_dir = out / cell.slug
        cell_dir.mkdir(parents=True, exist_ok=True)
        tmp = cell_dir / "result.json.tmp"
        tmp.write_text(json.dumps({**r, "resumed_from": str(path)}, indent=2) + "\n")
        tmp.replace(cell_dir / "result.json")
        reused += 1
    print(f"resumed {reused} cells from {path}" + (f"; {len(refused)} published cells rerun (another configuration "
          f"or code version), e.g. {refused[0]}" if refused else ""), flush=True)
    return reused
