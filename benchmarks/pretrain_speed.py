"""Training throughput of SimCLR + NT-Xent vs SimCLR + FALSE vs MoCo v2 vs MoCo + FALSE on the CPU preset.

A step is one full optimisation step (forward of both views, loss, backward, optimiser step; for MoCo also the
momentum update and the enqueue) on synthetic normalised views of the CPU preset's shape (ResNet-18, batch 64,
96 px views, 512-wide projection head), so data loading and augmentation are not part of the figures.
``images/s`` counts images (pairs of views) per second.

Three measurements, printed in one run:

1. Throughput: each method is its own model; methods are timed round-robin, step by step, so that bursts of
   load from other processes hit all of them alike. Best (least disturbed) and median step times.
2. FALSE overhead, paired: one SimCLR (and one MoCo) model whose loss is swapped between NT-Xent and FALSE on
   consecutive steps; the median over rounds of the step-time ratio. Backbone, weights and memory are shared, so
   the ratio isolates the loss. Target: FALSE adds <= 5 % to the SimCLR step time.
3. The loss alone (forward + backward on fixed projections), best of 20.

With ``--section precision`` it measures instead, on the real preset (``--preset``, default
configs/pretrain/cpu_simclr_false.yaml: its model, its Dubai data, its augmentation on batches), in one process:

4. fp32 vs bf16 autocast: two copies of the preset's model from the same initialisation take turns on the same
   augmented batches; median step times, their ratio (target >= 1.4x), and both loss curves (max difference).
5. Loader only: images/s of the preset's DataLoader (its worker setting) plus the view augmentation, against the
   training images/s of both precisions (target: loader >= 3x training).

With ``--section bare`` it measures the product against the bare model, at each precision and memory format
(``--configs``, default all four):

6. The product's pretraining step, as ``falsecl pretrain`` runs it (the preset's SimCLR task inside Lightning's
   Trainer: autocast, LARS, schedule, logging to TensorBoard and CSV, the non-finite check), timed from batch start
   to batch end by a callback, against a bare torchvision ResNet-18 + the same projection head, plain NT-Xent and
   SGD, in the same precision and memory format. The bare step runs in the same callback right after each product
   step, so load from other processes hits both alike. Median step times and their ratio (target: <= 1.1x).

Usage::

    python benchmarks/pretrain_speed.py [--batch-size 64] [--crop 96] [--steps 6] [--pairs 8] [--threads 2]
    python benchmarks/pretrain_speed.py --section precision [--curve-steps 200] [--loader-batches 20]
    python benchmarks/pretrain_speed.py --section bare [--steps 12] [--configs fp32 bf16 fp32+cl bf16+cl]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from falsecl.losses.false import FALSELoss
from falsecl.losses.moco_false import MoCoFALSELoss
from falsecl.tasks.base import PretrainTask
from falsecl.tasks.moco import MoCo
from falsecl.tasks.simclr import SimCLR

#: name -> (task class, task arguments); the shapes follow configs/pretrain/cpu_*.yaml.
METHODS: dict[str, tuple[Callable[..., PretrainTask], dict[str, Any]]] = {
    "SimCLR + NT-Xent": (SimCLR, {"loss": "ntxent"}),
    "SimCLR + FALSE (per_anchor)": (SimCLR, {"loss": "false", "selection": "per_anchor"}),
    "SimCLR + FALSE (official)": (SimCLR, {"loss": "false", "selection": "official"}),
    "MoCo v2": (MoCo, {"loss": "ntxent", "queue_size": 4096, "temperature": 0.2}),
    "MoCo v2 + FALSE": (MoCo, {"loss": "false", "queue_size": 4096, "temperature": 0.2}),
}


def build(name: str, arch: str, hidden_dim: int) -> tuple[PretrainTask, torch.optim.Optimizer]:
    cls, kwargs = METHODS[name]
    torch.manual_seed(0)
    model = cls(arch=arch, in_channels=3, hidden_dim=hidden_dim, output_dim=128, **kwargs)
    model.train()
    return model, model.build_optimizer()


def step(model: PretrainTask, optimizer: torch.optim.Optimizer, v0: torch.Tensor, v1: torch.Tensor) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss, _ = model.pretrain_loss(v0, v1)
    torch.autograd.backward(loss)
    optimizer.step()
    return time.perf_counter() - start


def paired_overhead(
    model: PretrainTask,
    optimizer: torch.optim.Optimizer,
    losses: dict[str, nn.Module],
    v0: torch.Tensor,
    v1: torch.Tensor,
    pairs: int,
) -> dict[str, float]:
    """Median over rounds of (step time with each loss) / (step time with the first loss), in percent."""
    names = list(losses)
    ratios: dict[str, list[float]] = {name: [] for name in names[1:]}
    for round_ in range(pairs):
        order = names if round_ % 2 == 0 else names[::-1]  # alternate the order: no loss always runs first
        seconds = {}
        for name in order:
            model.criterion = losses[name]
            seconds[name] = step(model, optimizer, v0, v1)
        for name in names[1:]:
            ratios[name].append(seconds[name] / seconds[names[0]])
    return {name: 100 * (statistics.median(r) - 1) for name, r in ratios.items()}


def loss_times(
    built: dict[str, tuple[PretrainTask, torch.optim.Optimizer]], v0: torch.Tensor, v1: torch.Tensor, reps: int
) -> dict[str, float]:
    """Best-of-``reps`` milliseconds of forward + backward of each method's loss on fixed projections."""
    with torch.no_grad():
        z0, z1 = cast(SimCLR, built["SimCLR + NT-Xent"][0]).project(torch.cat([v0, v1])).chunk(2)
    g = torch.Generator().manual_seed(1)
    queue = nn.functional.normalize(torch.randn(4096, z0.shape[1], generator=g), dim=1)
    out: dict[str, float] = {}
    for name, (model, _) in built.items():
        criterion = cast(nn.Module, model.criterion)
        samples = []
        for _ in range(reps):
            a, b = z0.clone().requires_grad_(), z1.clone().requires_grad_()
            start = time.perf_counter()
            loss = criterion(a, b) if isinstance(model, SimCLR) else criterion(a, b.detach(), queue)
            torch.autograd.backward(loss)
            samples.append(time.perf_counter() - start)
        out[name] = 1000 * min(samples)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--hidden-dim", type=int, default=512)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per method (throughput table)")
    parser.add_argument("--pairs", type=int, default=8, help="rounds of the paired overhead measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--section", choices=["throughput", "precision", "bare"], default="throughput")
    parser.add_argument("--configs", nargs="+", default=["fp32", "bf16", "fp32+cl", "bf16+cl"],
                        help="precision + memory format of the bare comparison")
    parser.add_argument("--preset", default="configs/pretrain/cpu_simclr_false.yaml")
    parser.add_argument("--curve-steps", type=int, default=200, help="steps of each loss curve (precision)")
    parser.add_argument("--loader-batches", type=int, default=20, help="batches timed for the loader (precision)")
    parser.add_argument("--csv", default="", help="write the two loss curves here (precision)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.section == "precision":
        precision_and_loader(args)
        return
    if args.section == "bare":
        product_against_bare(args)
        return

    g = torch.Generator().manual_seed(0)
    base = torch.randn(args.batch_size, 3, args.crop, args.crop, generator=g)
    v0 = base + 0.1 * torch.randn(base.shape, generator=g)
    v1 = base + 0.1 * torch.randn(base.shape, generator=g)

    # 1. throughput, round-robin
    built = {name: build(name, args.arch, args.hidden_dim) for name in METHODS}
    for model, optimizer in built.values():  # warm-up: allocator, first-call overheads
        step(model, optimizer, v0, v1)
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    for _ in range(args.steps):
        for name, (model, optimizer) in built.items():
            times[name].append(step(model, optimizer, v0, v1))
    best = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}

    # 2. paired overhead: the same model, the loss swapped step by step
    simclr, simclr_opt = built["SimCLR + NT-Xent"]
    simclr_losses: dict[str, nn.Module] = {
        "NT-Xent": cast(nn.Module, simclr.criterion),
        "FALSE (per_anchor)": FALSELoss(0.5, 1.0, 0.9, "per_anchor", gather_distributed=True),
        "FALSE (official)": FALSELoss(0.5, 1.0, 0.9, "official", gather_distributed=True),
    }
    simclr_overhead = paired_overhead(simclr, simclr_opt, simclr_losses, v0, v1, args.pairs)
    moco, moco_opt = built["MoCo v2"]
    moco_losses: dict[str, nn.Module] = {
        "InfoNCE": cast(nn.Module, moco.criterion),
        "FALSE": MoCoFALSELoss(0.2, 1.0, 0.9),
    }
    moco_overhead = paired_overhead(moco, moco_opt, moco_losses, v0, v1, args.pairs)

    # 3. the loss alone
    loss_ms = loss_times(built, v0, v1, reps=20)

    print(
        f"{args.arch}, batch {args.batch_size}, {args.crop} px views, head {args.hidden_dim}, "
        f"{torch.get_num_threads()} threads; {args.steps} steps per method (round-robin), {args.pairs} paired rounds"
    )
    print(
        f"{'method':<30} {'best ms':>9} {'median ms':>10} {'images/s':>9} {'vs NT-Xent':>11} "
        f"{'vs MoCo v2':>11} {'loss ms':>8}"
    )
    for name in METHODS:
        print(
            f"{name:<30} {1000 * best[name]:>9.1f} {1000 * median[name]:>10.1f} "
            f"{args.batch_size / best[name]:>9.1f} {best[name] / best['SimCLR + NT-Xent']:>10.3f}x "
            f"{best[name] / best['MoCo v2']:>10.3f}x {loss_ms[name]:>8.2f}"
        )
    print("paired step-time overhead (same model, loss swapped step by step; median ratio):")
    for name, percent in simclr_overhead.items():
        verdict = "meets" if percent <= 5 else "MISSES"
        print(f"  SimCLR + {name}: {percent:+.1f} % over SimCLR + NT-Xent ({verdict} the <= 5 % target)")
    for name, percent in moco_overhead.items():
        print(f"  MoCo v2 + {name}: {percent:+.1f} % over MoCo v2")


def precision_and_loader(args: argparse.Namespace) -> None:
    """Sections 4 and 5 of the module docstring, on the preset's model and data."""
    import yaml

    from falsecl.datamodules import SSLDataModule
    from falsecl.precision import cpu_supports_bf16

    preset = yaml.safe_load(open(args.preset))
    init = dict(preset["model"]["init_args"])
    data = SSLDataModule(**preset["data"])
    data.setup("fit")
    models = {}
    for name in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = SimCLR(**init, in_channels=data.in_channels)
        model.train()
        models[name] = (model, model.build_optimizer())
    warmup = max(1, int(float(init.get("warmup_fraction", 0.1)) * args.curve_steps))
    batches = iter(data.train_dataloader())
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    curves: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(args.curve_steps):
        try:
            raw = next(batches)["image"]
        except StopIteration:
            batches = iter(data.train_dataloader())
            raw = next(batches)["image"]
        torch.manual_seed(1000 + i)
        v0, v1 = data.make_views(raw)
        order = ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")
        for name in order:
            model, optimizer = models[name]
            for group in optimizer.param_groups:  # the preset's linear warm-up
                group["lr"] = float(init["lr"]) * min(1.0, (i + 1) / warmup)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                loss, _ = model.pretrain_loss(v0, v1)
            torch.autograd.backward(loss)
            optimizer.step()
            times[name].append(time.perf_counter() - start)
            curves[name].append(float(loss.detach()))
    skip = min(2, args.curve_steps - 1)  # first steps: allocator and kernel selection
    med = {name: statistics.median(t[skip:]) for name, t in times.items()}
    # Loader only: the preset's DataLoader (workers as configured) plus both augmented views.
    loader = data.train_dataloader()
    start, images = time.perf_counter(), 0
    for j, batch in enumerate(loader):
        if j == args.loader_batches:
            break
        data.make_views(batch["image"])
        images += batch["image"].shape[0]
    loader_rate = images / (time.perf_counter() - start)
    batch_size = int(preset["data"]["batch_size"])
    print(
        f"preset {args.preset}: {init.get('arch')}, batch {batch_size}, {preset['data']['crop_size']} px views, "
        f"{torch.get_num_threads()} threads, native bf16: {cpu_supports_bf16()}, {args.curve_steps} steps each"
    )
    print(f"{'precision':<10} {'median step s':>14} {'images/s':>9} {'speed-up':>9}")
    for name in ("fp32", "bf16"):
        print(
            f"{name:<10} {med[name]:>14.3f} {batch_size / med[name]:>9.1f} {med['fp32'] / med[name]:>8.2f}x"
        )
    verdict = "meets" if med["fp32"] / med["bf16"] >= 1.4 else "MISSES"
    print(f"bf16 speed-up {med['fp32'] / med['bf16']:.2f}x ({verdict} the >= 1.4x target)")
    diffs = [abs(a - b) for a, b in zip(curves["fp32"], curves["bf16"], strict=True)]
    marks = sorted({0, len(diffs) // 4, len(diffs) // 2, 3 * len(diffs) // 4, len(diffs) - 1})
    print("loss curves (step: fp32 / bf16): " + ", ".join(
        f"{k + 1}: {curves['fp32'][k]:.4f} / {curves['bf16'][k]:.4f}" for k in marks
    ))
    print(f"max |fp32 - bf16| loss over the curve: {max(diffs):.4f}; last: {diffs[-1]:.4f}")
    train_rate = batch_size / med["bf16"]
    verdict = "meets" if loader_rate >= 3 * train_rate else "MISSES"
    print(
        f"loader only (num_workers={preset['data'].get('num_workers', 0)}, views included): {loader_rate:.1f} "
        f"images/s = {loader_rate / train_rate:.1f}x bf16 training, {loader_rate * med['fp32'] / batch_size:.1f}x "
        f"fp32 training ({verdict} the >= 3x target)"
    )
    if args.csv:
        with open(args.csv, "w") as out:
            out.write("step,fp32_loss,bf16_loss,fp32_s,bf16_s\n")
            for k in range(args.curve_steps):
                out.write(
                    f"{k + 1},{curves['fp32'][k]},{curves['bf16'][k]},{times['fp32'][k]},{times['bf16'][k]}\n"
                )


def bare_model(hidden_dim: int, output_dim: int) -> nn.Module:
    """A torchvision ResNet-18 (no classifier) + SimCLR projection head (Linear-BN-ReLU-Linear-BN), as the preset."""
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    resnet.fc = nn.Identity()
    head = nn.Sequential(
        nn.Linear(512, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, output_dim, bias=False), nn.BatchNorm1d(output_dim),
    )
    return nn.Sequential(resnet, head)


def ntxent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Plain NT-Xent of ``z = cat(z0, z1)`` ``(2N, D)``, similarities in fp32."""
    z = nn.functional.normalize(z.float(), dim=1)
    n = z.shape[0] // 2
    sim = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return nn.functional.cross_entropy(sim, target)


def product_against_bare(args: argparse.Namespace) -> None:
    """Section 6 of the module docstring."""
    import tempfile

    import yaml
    from lightning.pytorch import Callback, Trainer
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from torch.utils.data import DataLoader, Dataset

    from falsecl.precision import cpu_description, to_memory_format

    preset = yaml.safe_load(open(args.preset))
    init = dict(preset["model"]["init_args"])
    batch, crop = int(preset["data"]["batch_size"]), int(preset["data"]["crop_size"])

    class Views(Dataset[dict[str, list[torch.Tensor]]]):
        """Fixed random normalised views: the step is timed, not the augmentation."""

        def __init__(self, count: int) -> None:
            g = torch.Generator().manual_seed(0)
            self.views = [torch.randn(count, 3, crop, crop, generator=g) for _ in range(2)]

        def __len__(self) -> int:
            return self.views[0].shape[0]

        def __getitem__(self, i: int) -> dict[str, list[torch.Tensor]]:
            return {"views": [self.views[0][i], self.views[1][i]]}

    class Timer(Callback):
        """Times each product step, then runs and times one bare step in the same precision and format."""

        def __init__(self, bf16: bool, channels_last: bool) -> None:
            torch.manual_seed(0)
            self.bf16, self.channels_last = bf16, channels_last
            self.bare = bare_model(int(init["hidden_dim"]), int(init["output_dim"]))
            if channels_last:
                self.bare = self.bare.to(memory_format=torch.channels_last)
            self.opt = torch.optim.SGD(self.bare.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6)
            self.product: list[float] = []
            self.bare_s: list[float] = []
            self.start = 0.0

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.product.append(time.perf_counter() - self.start)
            v0, v1 = (to_memory_format(v, self.channels_last) for v in batch["views"])
            start = time.perf_counter()
            self.opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                z = self.bare(torch.cat([v0, v1]))
            loss = ntxent(z, float(init.get("temperature", 0.5)))
            torch.autograd.backward(loss)
            self.opt.step()
            self.bare_s.append(time.perf_counter() - start)

    cpu = cpu_description()
    print(f"product ({args.preset}) vs bare ResNet-18 + projection; batch {batch}, {crop} px views, "
          f"{torch.get_num_threads()} threads, CPU {cpu['cpu']} ({' '.join(cpu['flags'])}), {args.steps} steps "
          "each, the first 2 excluded; load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"{'config':<9} {'product median s':>17} {'bare median s':>14} {'product / bare':>15}")
    for config in args.configs:
        bf16, channels_last = config.startswith("bf16"), config.endswith("+cl")
        torch.manual_seed(0)
        task = SimCLR(**init, in_channels=3)
        task.channels_last = channels_last
        timer = Timer(bf16, channels_last)
        with tempfile.TemporaryDirectory() as root:
            trainer = Trainer(
                accelerator="cpu", devices=1, max_steps=args.steps, precision="bf16-mixed" if bf16 else "32-true",
                logger=[TensorBoardLogger(root, name="tb", version=""), CSVLogger(root, name="csv", version="")],
                log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, callbacks=[timer], default_root_dir=root,
            )
            loader = DataLoader(Views(batch * args.steps), batch_size=batch, shuffle=False, num_workers=0)
            trainer.fit(task, train_dataloaders=loader)
        product, bare = statistics.median(timer.product[2:]), statistics.median(timer.bare_s[2:])
        verdict = "meets" if product <= 1.1 * bare else "MISSES"
        print(f"{config:<9} {product:>17.3f} {bare:>14.3f} {product / bare:>14.2f}x ({verdict} <= 1.1x)",
              flush=True)
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
