"""FALSE's false-negative diagnostics on the Dubai training tiles: rows changed and precision per selection.

Loads a SimCLR pretraining checkpoint (its backbone and projection head), draws augmented two-view batches from
the Dubai training tiles with each patch's majority class (the labels serve this measurement only), and prints,
averaged over batches, the share of rows each FALSE selection changes and the precision of the accepted
candidates (same majority class as the anchor), next to a random negative (chance) and the hardest negative.
Without ``--checkpoint`` the network is randomly initialised (a reference, labelled as such).

Usage::

    python benchmarks/false_diagnostics.py --checkpoint runs/x/checkpoints/last.ckpt [--crop 64] [--batch-size 128]
        [--batches 10] [--temperature 0.5] [--threshold 0.9]
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from falsecl.datamodules import SSLDataModule
from falsecl.losses.diagnostics import false_negative_diagnostics
from falsecl.tasks.simclr import SimCLR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--root", default="data/dubai_aerial")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = SSLDataModule(
        dataset="dubai", root=args.root, patch_size=args.patch_size, crop_size=args.crop,
        batch_size=args.batch_size, crop_scale=(0.45, 0.85),
    )
    data.setup("fit")
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        hp = dict(state["hyper_parameters"])
        hp.pop("_instantiator", None)
        hp["in_channels"] = data.in_channels
        model = SimCLR(**{k: v for k, v in hp.items() if not k.startswith("_") and k != "class_path"})
        model.load_state_dict(state["state_dict"], strict=False)
        source = args.checkpoint
    else:
        model = SimCLR(arch="resnet18", in_channels=data.in_channels, hidden_dim=512, output_dim=128)
        source = "random initialisation (reference only)"
    model.eval()
    rows: dict[str, list[float]] = {}
    loader = iter(data.train_dataloader())
    for b in range(args.batches):
        batch = next(loader)
        v0, v1 = data.make_views(batch["image"])
        with torch.no_grad():
            z0, z1 = model.project(torch.cat([v0, v1])).chunk(2)
        out = false_negative_diagnostics(z0, z1, batch["majority"], args.temperature, args.threshold, seed=b)
        for k, v in out.items():
            rows.setdefault(k, []).append(v)

    def mean(key: str) -> str:
        values = [v for v in rows[key] if not math.isnan(v)]
        return f"{statistics.mean(values):.3f}" if values else "n/a"

    print(
        f"{source}; Dubai training tiles, {args.crop} px views, batch {args.batch_size}, tau {args.temperature}, "
        f"T {args.threshold}, {args.batches} batches (mean over batches; n/a = nothing accepted)"
    )
    print(f"{'selection':<18} {'rows changed':>13} {'precision':>10}")
    for name in ("official", "per_anchor", "mutual"):
        print(f"{name:<18} {mean(name + '_rows'):>13} {mean(name + '_precision'):>10}")
    print(f"{'chance':<18} {'-':>13} {mean('chance_precision'):>10}")
    print(f"{'hardest negative':<18} {'-':>13} {mean('hardest_precision'):>10}")
    print(f"{'hardest, gated':<18} {mean('per_anchor_rows'):>13} {mean('hardest_gated_precision'):>10}")


if __name__ == "__main__":
    main()
