"""ENAS on NB201/digits: the derived cell trained stand-alone vs the best of 20 random cells vs
DARTS, at the same small budget; and whether ENAS collapses.

Digits, NB201 cell with C channels and N=1 cell per stage, every cell trained stand-alone by the
vision trial's own loop (``--epochs`` epochs, AdamW, seed 0) as in ``tests/benchmarks/oneshot.py``
(the same first ``--random`` random cells). Each search (ENAS with its defaults, ENAS with the
controller lr ``--fast-arch-lr``, DARTS 1st order) runs ``--search-epochs`` epochs per seed.
Collapsed: the derived cell has no convolution, or 4+ of 6 edges ``skip_connect``/``none``.

    python tests/benchmarks/enas.py --seeds 3     # ~6 min on 2 shared CPU cores
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from typing import Any

import torch
from oneshot import TASK, train_standalone  # tests/benchmarks/oneshot.py (the script's folder)

from nas_plugin.oneshot.data import vision_data
from nas_plugin.oneshot.enas import collapse_metrics
from nas_plugin.oneshot.search import SearchSettings, search
from nas_plugin.space.nb201 import from_arch_str
from nas_plugin.supernets.nb201 import sample_path
from nas_plugin.tasks.vision_data import task_key


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3, help="stand-alone training epochs")
    parser.add_argument("--search-epochs", type=int, default=20)
    parser.add_argument("--fast-arch-lr", type=float, default=0.03)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out: dict[str, Any] = {"settings": vars(args)}

    rng = random.Random(0)  # the same cells as tests/benchmarks/oneshot.py
    archs: list[tuple[str, ...]] = []
    while len(archs) < args.random:
        cell = sample_path(rng)
        if cell not in archs:
            archs.append(cell)
    random_acc = [train_standalone(cell, args.channels, args.epochs)[0] for cell in archs]
    best_random = max(random_acc)
    out["random"] = {"best": best_random, "mean": statistics.mean(random_acc)}
    print(f"best of {args.random} random cells: {best_random:.4f}")

    data, preprocess = vision_data(task_key(TASK), 1.0, 0)
    methods = {
        "enas": {"method": "enas"},
        f"enas arch_lr={args.fast_arch_lr}": {"method": "enas", "arch_lr": args.fast_arch_lr},
        "darts-1": {"method": "darts"},
    }
    rows = []
    for label, options in methods.items():
        for seed in range(args.seeds):
            settings = SearchSettings(epochs=args.search_epochs, **options)
            start = time.perf_counter()
            result = search(settings, data, preprocess, args.channels, 1, 16, seed)
            seconds = time.perf_counter() - start
            acc = train_standalone(result.ops, args.channels, args.epochs)[0]
            row = {
                "method": label,
                "seed": seed,
                "arch": result.arch_str,
                "standalone_accuracy": acc,
                "inherited_accuracy": result.metrics["search_derived_val_accuracy"],
                "search_seconds": seconds,
                "controller_entropy": result.metrics.get("search_controller_entropy"),
                **collapse_metrics(result.ops),
            }
            rows.append(row)
            print(f"[search] {json.dumps(row)}")
    out["searches"] = rows

    print(
        f"\nDigits, NB201 C={args.channels} N=1, stand-alone {args.epochs} epochs; best of "
        f"{args.random} random cells: {best_random:.3f}"
    )
    print(
        "| method | seed | derived cell | stand-alone val acc | beats best random | "
        "skip+none edges | collapsed | controller entropy | search s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        beats = r["standalone_accuracy"] >= best_random
        entropy = "" if r["controller_entropy"] is None else f"{r['controller_entropy']:.2f}"
        print(
            f"| {r['method']} | {r['seed']} | {_short(r['arch'])} | "
            f"{r['standalone_accuracy']:.3f} | {'yes' if beats else 'no'} | "
            f"{int(r['search_skip_edges'] + r['search_none_edges'])}/6 | "
            f"{'yes' if r['search_collapsed'] else 'no'} | {entropy} | {r['search_seconds']:.0f} |"
        )
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(out, handle, indent=2)
    return out


SHORT = {"none": "none", "skip_connect": "skip", "nor_conv_1x1": "c1", "nor_conv_3x3": "c3",
         "avg_pool_3x3": "pool"}  # fmt: skip


def _short(arch: str) -> str:
    """The cell, edge by edge (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2), without the ``|`` of the
    NB201 string (a markdown table's separator)."""
    return " ".join(SHORT[op] for op in from_arch_str(arch))


if __name__ == "__main__":
    main(sys.argv[1:])
