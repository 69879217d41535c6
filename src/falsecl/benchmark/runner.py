"""Run the experiment matrix: pretraining seeds x methods, then a linear probe and/or fine-tuning per cell, report.

Every cell is identified by (method, protocol, label fraction, pretraining seed, fine-tuning seed):
- each (method, pretraining seed) is pretrained once, and that backbone serves every fraction and protocol;
- at a given (fraction, fine-tuning seed) every method trains on the same labelled patches (the subset is drawn by
  :func:`falsecl.datasets.subsets.label_fraction_subset` from that seed; the ids are written to
  ``<output_dir>/subsets/`` for the record);
- ``probe``: the frozen backbone's linear segmentation probe (:mod:`falsecl.benchmark.probe`); ``finetune``:
  DeepLabv3+ fine-tuned with ``falsecl finetune`` and scored with ``falsecl evaluate``.

Training steps are ``falsecl`` sub-commands in their own process, so a failure or a kill never corrupts another
cell. The runner is restartable: a finished step is marked by ``DONE`` (or a cell's ``metrics.json``) and skipped,
an interrupted training resumes from ``checkpoints/last.ckpt``, and a step whose ``LOCK`` names a live process
(another runner) is waited for. ``results.json`` and the report are rewritten after every cell.

The matrix can be finished over several sessions and machines: a cell already in the published results
(``<publish_dir>/<publish_name>_results.json``, committed) is not rerun when its resolved configuration hash is
the current one and its commit's ``src/`` and ``configs/`` equal the checkout's. Every cell records its
provenance (:mod:`falsecl.benchmark.provenance`). ``repro`` reruns chosen (method, pretraining seed) pairs from
scratch (pretraining and probes) into ``repro/``: their spread against the original cells is the report's
reproducibility figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from falsecl.benchmark.cells import (
    Cell,
    Method,
    eta_seconds,
    load_cell_result,
    panel_methods,
    plan_cells,
    progress_line,
    save_cell_result,
)
from falsecl.benchmark.provenance import git_state, pretrain_record
from falsecl.benchmark.report import write_report
from falsecl.benchmark.resume import cell_config_hash, published_cells, repro_cells
from falsecl.benchmark.steps import train_step

__all__ = ["Cell", "Method", "plan_cells", "run_benchmark"]


def _subprocess_runner(args: list[str]) -> int:
    print("$ falsecl " + " ".join(args), flush=True)
    return subprocess.call([sys.executable, "-m", "falsecl.cli", *args])


def _finetune_data(config: str) -> dict[str, Any]:
    """The ``data`` section of the fine-tuning YAML (dataset, root, patch size ...), empty when unreadable."""
    import yaml

    try:
        data = yaml.safe_load(Path(config).read_text()).get("data", {})
    except (OSError, AttributeError, yaml.YAMLError):
        return {}
    return dict(data) if isinstance(data, dict) else {}


def _narrow(values: list[Any], keep: Sequence[Any] | None, what: str) -> list[Any]:
    if keep is None:
        return values
    unknown = [v for v in keep if v not in values]
    if unknown:
        raise ValueError(f"--{what} {unknown} not in the configured {what} {values}")
    return [v for v in values if v in keep]


@dataclass
class _State:
    """What the loop accumulates: results, the planned cells and pretraining folders (for the ETA)."""

    cells: list[Cell]
    pretrain_dirs: list[Path]
    results: list[dict[str, Any]] = field(default_factory=list)
    reported: float = 0.0
    start: float = field(default_factory=time.perf_counter)


def run_benchmark(
    methods: list[Method],
    finetune_config: str = "configs/finetune/cpu_quick.yaml",
    label_fractions: list[float] | None = None,
    seeds: list[int] | None = None,
    pretrain_seeds: list[int] | None = None,
    probe_fractions: list[float] | None = None,
    output_dir: str = "runs/benchmark",
    pretrain_args: list[str] | None = None,
    finetune_args: list[str] | None = None,
    evaluate_args: list[str] | None = None,
    probe_window: int = 256,
    probe_steps: int = 300,
    title: str = "falsecl benchmark",
    select_methods: list[str] | None = None,
    select_fractions: list[float] | None = None,
    select_seeds: list[int] | None = None,
    intro: str = "",
    headline_protocol: str | None = None,
    publish_dir: str | None = None,
    publish_name: str = "benchmark",
    report_only: bool = False,
    dry_run: bool = False,
    primary_endpoint: dict[str, Any] | None = None,
    repro: list[dict[str, Any]] | None = None,
    allow_mixed_versions: bool = False,
    resume_published: bool = True,
) -> list[dict[str, Any]]:
    """Run (or resume) the matrix and write ``results.json``, ``report.md``, ``report.html`` and PNGs.

    Args:
        methods: Pretraining methods; one without ``pretrain_config`` is the random-initialisation baseline.
        finetune_config: ``falsecl finetune`` YAML shared by all fine-tuning cells (its ``data`` section also
            sets the probe's dataset, root and patch size).
        label_fractions: Fine-tuning label fractions (default ``[0.01, 0.1, 1.0]``; ``[]``: no fine-tuning).
        seeds: Fine-tuning seeds: the label subset, the probe head and the fine-tuning run.
        pretrain_seeds: Pretraining seeds (also the random initialisation's seed); default ``[0]``.
        probe_fractions: Label fractions of the frozen-encoder linear probe (default none).
        output_dir: Root of all runs of the benchmark.
        pretrain_args: Extra arguments for every pretraining (e.g. ``--trainer.max_epochs 1``).
        finetune_args: Extra arguments for every fine-tuning (a method's own ``finetune_args`` come after).
        evaluate_args: Extra arguments for every evaluation (e.g. ``--split test --window 256``).
        probe_window: Sliding-window side of the probe's evaluation.
        probe_steps: Training steps of each probe head.
        title: Heading of the report.
        select_methods: Run only these methods (``--methods a,b``).
        select_fractions: Run only these fractions (``--fractions 0.01,0.05``).
        select_seeds: Run only cells whose pretraining and fine-tuning seeds are in this list (``--seeds 0,1``).
        intro: Markdown-lite text under the report's heading: what ran and why. The status, the findings and
            the wall time are computed from the cells and follow it.
        headline_protocol: The protocol whose paired differences the report spells out (``probe`` or
            ``finetune``; default: the first one run).
        publish_dir: Also copy the report, its figures and ``results.json`` here (e.g. ``docs/results``) as
            ``<publish_name>.md`` ... when the run ends or with ``report_only``.
        publish_name: Stem of the published files.
        report_only: Run nothing: rebuild the report (and publish it) from the cells finished so far, e.g.
            while another process still runs the matrix.
        dry_run: Print the plan and exit.
        primary_endpoint: The pre-registered primary endpoint, ``{"method", "reference", "protocol",
            "fractions"}`` (:func:`falsecl.benchmark.stats.primary_endpoint`), reported first.
        repro: ``[{"method", "pretrain_seed"}]``: pairs rerun from scratch after the first priority tier.
        allow_mixed_versions: Let the report combine cells of different code versions (it lists them).
        resume_published: Reuse the cells of the published results (see the module docstring).

    Returns:
        The results of the finished cells.
    """
    by_name = {m.name: m for m in methods}
    chosen = [by_name[n] for n in _narrow(list(by_name), select_methods, "methods")]
    ft_fr = _narrow(list(label_fractions if label_fractions is not None else [0.01, 0.1, 1.0]),
                    select_fractions and [f for f in select_fractions if f in (label_fractions or [])], "fractions")
    pr_fr = _narrow(list(probe_fractions or []),
                    select_fractions and [f for f in select_fractions if f in (probe_fractions or [])], "fractions")
    ft_seeds = _narrow(list(seeds if seeds is not None else [0]), select_seeds and
                       [s for s in select_seeds if s in (seeds or [0])], "seeds")
    pre_seeds = _narrow(list(pretrain_seeds if pretrain_seeds is not None else [0]), select_seeds and
                        [s for s in select_seeds if s in (pretrain_seeds or [0])], "seeds")
    cells = plan_cells(chosen, ft_fr, ft_seeds, pre_seeds, pr_fr)
    reruns = repro_cells(repro or [], by_name, cells)
    out = Path(output_dir)
    if dry_run:
        for cell in [*cells, *reruns]:
            method = by_name[cell.method]
            print(f"{cell.slug}: pretrain={method.pretrain_config or 'none (random init)'}")
        pretrainings = {(c.method, c.pretrain_seed, c.repro) for c in [*cells, *reruns]
                        if by_name[c.method].pretrain_config is not None}
        print(f"{len(cells) + len(reruns)} cells, {len(pretrainings)} pretrainings")
        return []
    out.mkdir(parents=True, exist_ok=True)
    data = _finetune_data(finetune_config)
    state = _State([*cells, *reruns],
                   [out / m.name / f"pretrain_seed{p}" for m in chosen if m.pretrain_config is not None
                    for p in sorted({c.pretrain_seed for c in cells if c.method == m.name})]
                   + [out / "repro" / c.method / f"pretrain_seed{c.pretrain_seed}"
                      for c in dict.fromkeys(Cell(c.method, 0, 0, c.pretrain_seed, "probe", True)
                                             for c in reruns)])
    record = {
        "arguments": {"methods": [vars(m) for m in methods], "finetune_config": finetune_config,
                      "finetune_data": data, "label_fractions": ft_fr, "probe_fractions": pr_fr,
                      "finetune_seeds": ft_seeds, "pretrain_seeds": pre_seeds, "pretrain_args": pretrain_args,
                      "finetune_args": finetune_args, "evaluate_args": evaluate_args, "probe_window": probe_window,
                      "probe_steps": probe_steps, "repro": repro or []},
        "primary_endpoint": primary_endpoint,
        "allow_mixed_versions": allow_mixed_versions,
        "intro": intro,
        "headline_protocol": headline_protocol,
        "planned_cells": {p: sum(c.protocol == p for c in cells) for p in dict.fromkeys(c.protocol for c in cells)},
        "method_info": [m.info() for m in methods],
    }
    all_cells = [*cells, *reruns]
    if report_only:
        results = [r for r in (load_cell_result(out / c.slug) for c in all_cells) if r is not None]
        _finish(out, record, data, results, chosen, title, publish_dir, publish_name)
        return results
    _write_args(out, record)
    version = git_state()
    settings = {"finetune_config": finetune_config, "data": data, "pretrain_args": pretrain_args,
                "finetune_args": finetune_args, "evaluate_args": evaluate_args, "probe_window": probe_window,
                "probe_steps": probe_steps}
    hashes = {c: cell_config_hash(c, by_name[c.method], settings) for c in all_cells}
    if resume_published and publish_dir is not None:
        published_cells(Path(publish_dir) / f"{publish_name}_results.json", all_cells, hashes, out)
    backbones: dict[tuple[str, int, bool], tuple[str | None, float | None]] = {}

    def backbone_of(method: Method, p: int, rerun: bool = False) -> tuple[str | None, float | None]:
        """Pretrain (method, seed) unless done: the backbone file (None: random init) and its wall time."""
        if (method.name, p, rerun) not in backbones:
            pre_dir = out / ("repro" if rerun else ".") / method.name / f"pretrain_seed{p}"
            if method.pretrain_config is None and method.bn_recalibration:
                from falsecl.benchmark.frozen import recalibrated_random_backbone
                from falsecl.benchmark.panel import probe_data_module

                start = time.perf_counter()
                path = recalibrated_random_backbone(pre_dir / "backbone.pt", probe_data_module(data, out), p)
                backbones[(method.name, p, rerun)] = (str(path), time.perf_counter() - start)
            elif method.pretrain_config is None:
                backbones[(method.name, p, rerun)] = (None, None)
            else:
                print(f"pretraining {method.name} seed {p}" + (" (reproduction)" if rerun else ""), flush=True)
                wall = train_step("pretrain", method.pretrain_config, pre_dir,
                                   [*(pretrain_args or []), *method.pretrain_args, "--seed_everything", str(p)],
                                   _subprocess_runner)
                backbones[(method.name, p, rerun)] = (str(pre_dir / "backbone.pt"), wall)
        return backbones[(method.name, p, rerun)]

    def provenance(cell: Cell, backbone: str | None) -> dict[str, Any]:
        pre = pretrain_record(Path(backbone).parent) if backbone and by_name[cell.method].pretrain_config else {}
        return {**version, "config_hash": hashes[cell], **pre,
                "bn_recalibration": by_name[cell.method].bn_recalibration}

    first_tier = min((m.priority for m in chosen), default=1)
    for tier in sorted({m.priority for m in chosen}):
        mine = [c for c in cells if by_name[c.method].priority == tier]
        # Phase 1: every backbone and its probes; phase 2: the fine-tuning cells (see plan_cells for the order).
        for p in pre_seeds:
            for method in (m for m in chosen if m.priority == tier):
                probe_cells = [c for c in mine if c.method == method.name and c.pretrain_seed == p
                               and c.protocol == "probe"]
                _run_probe_cells(probe_cells, partial(backbone_of, method, p), p, data, out,
                                 probe_window, probe_steps, state, provenance)
                _report_now_and_then(state, out, title)
        for cell in (c for c in mine if c.protocol == "finetune"):
            method = by_name[cell.method]
            _run_finetune_cell(cell, method, partial(backbone_of, method, cell.pretrain_seed),
                               finetune_config, data, finetune_args, evaluate_args, out, state, provenance)
            _report_now_and_then(state, out, title)
        if tier == first_tier:
            for m, p in dict.fromkeys((c.method, c.pretrain_seed) for c in reruns):
                mine_r = [c for c in reruns if (c.method, c.pretrain_seed) == (m, p)]
                _run_probe_cells(mine_r, partial(backbone_of, by_name[m], p, True), p, data, out,
                                 probe_window, probe_steps, state, provenance)
                _report_now_and_then(state, out, title)
    record["wall_time"] = f"{time.perf_counter() - state.start:.0f} s in this run"
    _finish(out, record, data, state.results, chosen, title, publish_dir, publish_name)
    return state.results


def _finish(out: Path, record: dict[str, Any], data: dict[str, Any], results: list[dict[str, Any]],
            chosen: list[Method], title: str, publish_dir: str | None, publish_name: str) -> None:
    """Draw the prediction panel, write the report and publish it."""
    if any(r.get("protocol") == "probe" for r in results):
        from falsecl.benchmark.panel import write_panel

        caption = write_panel(out, data, results, panel_methods(chosen))
        if caption:
            record["panel_caption"] = caption
    _write_args(out, record)
    write_report(results, out, title=title)
    print(f"report: {out / 'report.html'}")
    if publish_dir is not None:
        from falsecl.benchmark.publish import publish_report

        for path in publish_report(out, publish_dir, publish_name):
            print(f"published: {path}")


def _report_now_and_then(state: _State, out: Path, title: str, every_s: float = 120.0) -> None:
    """Rewrite the report when ``every_s`` have passed since the last one (plotting costs seconds)."""
    now = time.perf_counter()
    if now - state.reported >= every_s:
        try:
            write_report(state.results, out, title=title)
        except (ValueError, OSError) as err:  # a report problem must not stop the matrix; the final one raises
            print(f"report not written: {err}", flush=True)
        state.reported = now


def _write_args(out: Path, record: dict[str, Any]) -> None:
    tmp = out / "benchmark_args.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(out / "benchmark_args.json")


def _record(state: _State, out: Path, result: dict[str, Any]) -> None:
    state.results.append(result)
    remaining: dict[str, int] = {}
    for c in state.cells:
        remaining[c.protocol] = remaining.get(c.protocol, 0) + 1
    for r in state.results:
        remaining[str(r["protocol"])] -= 1
    eta = eta_seconds(state.results, remaining, sum(not (d / "DONE").is_file() for d in state.pretrain_dirs))
    print(progress_line(len(state.results), len(state.cells), time.perf_counter() - state.start, eta) + " "
          + f"{result['method']} {result['protocol']} {100 * result['label_fraction']:g} % "
          f"pre{result['pretrain_seed']} ft{result['finetune_seed']}: mIoU {result['mIoU']}", flush=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(state.results, indent=2) + "\n")
    tmp.replace(out / "results.json")


Backbone = Callable[[], tuple[str | None, float | None]]
Provenance = Callable[[Cell, str | None], dict[str, Any]]


def _run_probe_cells(cells: list[Cell], backbone_of: Backbone, pretrain_seed: int, data: dict[str, Any], out: Path,
                     window: int, steps: int, state: _State, provenance: Provenance) -> None:
    """Probe one backbone at all its cells that are not done yet (one feature extraction, one test pass).

    The backbone is pretrained (``backbone_of``) only when a cell is left to run.
    """
    todo = [c for c in cells if load_cell_result(out / c.slug) is None]
    if todo:
        backbone, pre_wall = backbone_of()
        import torch

        from falsecl.benchmark.panel import probe_data_module
        from falsecl.benchmark.probe import ProbeSchedule, probe_backbone
        from falsecl.datasets.subsets import label_fraction_subset, save_ids

        start = time.perf_counter()
        dm = probe_data_module(data, out)
        if dm.train_full is None:
            raise RuntimeError("the probe's training patches could not be indexed")
        patches, ids = dm.train_full.patches, dm.train_full.patch_ids
        subsets = {}
        for c in todo:
            subsets[(c.label_fraction, c.finetune_seed)] = label_fraction_subset(patches, c.label_fraction,
                                                                                 c.finetune_seed)
            name = f"labels{100 * c.label_fraction:g}pct_seed{c.finetune_seed}.txt"
            if not (out / "subsets" / name).is_file():
                save_ids([ids[i] for i in subsets[(c.label_fraction, c.finetune_seed)]], out / "subsets" / name)
        metrics, heads = probe_backbone(backbone, [(c.label_fraction, c.finetune_seed) for c in todo], subsets, dm,
                                 out / "probe_cache", backbone_seed=pretrain_seed,
                                 schedule=ProbeSchedule(steps=steps), window=window)
        wall = (time.perf_counter() - start) / len(todo)
        for c, m, head in zip(todo, metrics, heads, strict=True):
            (out / c.slug).mkdir(parents=True, exist_ok=True)
            torch.save(head.state_dict(), out / c.slug / "head.pt")
            save_cell_result(out / c.slug, c, m, wall_s=wall, pretrain_wall_s=pre_wall,
                             extra={"backbone": backbone or f"random init (seed {pretrain_seed})",
                                    **provenance(c, backbone)})
    for c in cells:
        result = load_cell_result(out / c.slug)
        if result is not None:
            _record(state, out, result)


def _run_finetune_cell(cell: Cell, method: Method, backbone_of: Backbone, config: str, data: dict[str, Any],
                       finetune_args: list[str] | None, evaluate_args: list[str] | None, out: Path,
                       state: _State, provenance: Provenance) -> None:
    """Fine-tune and evaluate one cell unless it is done."""
    cell_dir = out / cell.slug
    result = load_cell_result(cell_dir)
    if result is None:
        backbone, pre_wall = backbone_of()
        start = time.perf_counter()
        extra = [*(finetune_args or []), *method.finetune_args]
        if backbone is not None:
            extra += ["--model.backbone_weights", backbone]
        # The subset depends on (fraction, fine-tuning seed) only; training noise also on the pretraining seed,
        # so that random initialisation varies over the pretraining seeds too.
        extra += ["--data.label_fraction", str(cell.label_fraction), "--data.seed", str(cell.finetune_seed),
                  "--seed_everything", str(cell.finetune_seed + 1000 * cell.pretrain_seed)]
        train_step("finetune", config, cell_dir, extra, _subprocess_runner)
        metrics_path = cell_dir / "eval" / "metrics.json"
        if not metrics_path.is_file():
            data_args = [a for k in ("dataset", "root") if k in data for a in (f"--{k}", str(data[k]))]
            code = _subprocess_runner(["evaluate", "--checkpoint", str(cell_dir), "--output_dir",
                                       str(cell_dir / "eval"), *data_args, *(evaluate_args or [])])
            if code != 0 or not metrics_path.is_file():
                raise RuntimeError(f"'falsecl evaluate' failed (exit code {code}) for {cell_dir}")
        save_cell_result(cell_dir, cell, json.loads(metrics_path.read_text()), wall_s=time.perf_counter() - start,
                         pretrain_wall_s=pre_wall, extra={"backbone": backbone or "random init",
                                                          **provenance(cell, backbone)})
        result = load_cell_result(cell_dir)
    if result is not None:
        _record(state, out, result)
