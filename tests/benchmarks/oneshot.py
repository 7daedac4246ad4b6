"""One-shot NAS on NB201/digits: how good are inherited weights, and what do the searches find?

Measures, on scikit-learn's digits with the NB201 cell space (C channels, N=1 cell per stage):

1. Kendall tau (and Spearman rho) between the accuracy of ``--archs`` random cells with weights
   inherited from one SPOS supernet (BatchNorm re-estimated, no fine-tuning: what
   ``estimator=supernet`` returns; and again after ``--finetune-steps`` steps of fine-tuning)
   and the same cells trained stand-alone, every one with the same budget (``--epochs``
   epochs, AdamW, seed 0), on the validation split.
2. Search cost of SPOS (supernet training + scoring every cell), DARTS (1st and 2nd order),
   GDAS (FBNet latency loss) and ProxylessNAS (latency term), in wall time relative to training
   one architecture stand-alone (mean over the ``--archs`` cells).
3. DARTS (1st order) over ``--seeds`` seeds: the derived cell trained stand-alone with the same
   budget vs the best of the first ``--random`` random cells; how many seeds collapse to skip
   connections (a derived cell with no convolution left, or 4+ of 6 edges skip_connect).

    nice -n 10 python tests/benchmarks/oneshot.py --out oneshot.json   # ~15 min on 1 CPU core

Single-threaded (``torch.set_num_threads(1)``), for a fair wall-time comparison.
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
from omegaconf import OmegaConf
from scipy.stats import kendalltau, spearmanr

from nas_plugin.oneshot.data import vision_data
from nas_plugin.oneshot.search import SearchSettings, search
from nas_plugin.oneshot.spos import evaluate_path, train_spos
from nas_plugin.space.nb201 import EDGE_KEYS, to_arch_str
from nas_plugin.supernets.nb201 import NB201Supernet, sample_path
from nas_plugin.tasks.vision import run_vision_trial
from nas_plugin.tasks.vision_data import task_key

TASK = {
    "name": "digits",
    "dataset": "digits",
    "resolution": 16,
    "val_fraction": 0.15,
    "test_fraction": 0.15,
    "split_seed": 0,
}
CONVS = ("nor_conv_1x1", "nor_conv_3x3")


def train_standalone(
    ops: tuple[str, ...], channels: int, epochs: int
) -> tuple[float, float, float]:
    """(val accuracy, wall seconds, CPU seconds) of the cell trained from scratch by the vision
    trial's own loop."""
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "task": TASK,
            "model": {
                "kind": "nb201",
                "channels": channels,
                "cells_per_stage": 1,
                "cell": dict(zip(EDGE_KEYS, ops, strict=True)),
            },
            "train": {
                "epochs": epochs,
                "batch_size": 64,
                "lr": 0.005,
                "weight_decay": 1e-4,
                "optimizer": "adamw",
                "num_threads": 1,
                "bn_recalibration_images": 2048,
            },
            "hardware": {"measure": False},
        }
    )
    start, cpu = time.perf_counter(), time.process_time()
    result = run_vision_trial(cfg)
    return result["val_accuracy"], time.perf_counter() - start, time.process_time() - cpu


def collapsed(ops: tuple[str, ...]) -> bool:
    return not any(op in CONVS for op in ops) or sum(op == "skip_connect" for op in ops) >= 4


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=50)
    parser.add_argument("--random", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3, help="stand-alone training epochs")
    parser.add_argument("--supernet-epochs", type=int, default=15)
    parser.add_argument("--search-epochs", type=int, default=20)
    parser.add_argument(
        "--finetune-steps",
        type=int,
        nargs="*",
        default=[20],
        help="also rank the cells after this many fine-tuning steps of the inherited weights",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out: dict[str, Any] = {"settings": vars(args)}

    rng = random.Random(0)
    archs: list[tuple[str, ...]] = []
    while len(archs) < args.archs:
        cell = sample_path(rng)
        if cell not in archs:
            archs.append(cell)

    # 1. Stand-alone training of every cell, same budget.
    standalone, seconds, cpu_seconds = [], [], []
    for i, cell in enumerate(archs):
        acc, sec, cpu = train_standalone(cell, args.channels, args.epochs)
        standalone.append(acc)
        seconds.append(sec)
        cpu_seconds.append(cpu)
        print(f"[standalone {i + 1}/{len(archs)}] {to_arch_str(cell)} {acc:.4f} {sec:.1f}s")
    arch_seconds, arch_cpu = statistics.mean(seconds), statistics.mean(cpu_seconds)

    # 2. SPOS supernet, inherited-weight accuracy of the same cells.
    data, preprocess = vision_data(task_key(TASK), 1.0, 0)
    torch.manual_seed(0)
    supernet = NB201Supernet(args.channels, 1, data.num_classes, data.in_chans)
    cpu = time.process_time()
    spos = train_spos(supernet, preprocess, data, args.supernet_epochs, 64, 0.005, 0)
    spos_cpu = time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    inherited = [
        evaluate_path(supernet, preprocess, data, cell, seed=0)[1]["val_accuracy"] for cell in archs
    ]
    eval_seconds, eval_cpu = time.perf_counter() - start, time.process_time() - cpu
    tau, tau_p = kendalltau(inherited, standalone)
    rho, _ = spearmanr(inherited, standalone)
    # Cells that learn at all (stand-alone > 0.2): the degenerate ones are easy to rank.
    keep = [i for i, acc in enumerate(standalone) if acc > 0.2]
    tau_kept, _ = kendalltau([inherited[i] for i in keep], [standalone[i] for i in keep])
    out["ranking"] = {
        "kendall_tau": tau,
        "kendall_p": tau_p,
        "spearman_rho": rho,
        "kendall_tau_nondegenerate": tau_kept,
        "nondegenerate_archs": len(keep),
        "archs": [
            {"arch": to_arch_str(c), "standalone": s, "inherited": h}
            for c, s, h in zip(archs, standalone, inherited, strict=True)
        ],
    }
    # Wall time on a shared machine is noisy: CPU time (one thread) is reported beside it.
    out["costs"] = {
        "arch_train_seconds_mean": arch_seconds,
        "arch_train_cpu_seconds_mean": arch_cpu,
        "spos_train_seconds": spos["supernet_train_seconds"],
        "spos_train_cpu_seconds": spos_cpu,
        "spos_eval_seconds_per_arch": eval_seconds / len(archs),
        "spos_eval_cpu_seconds_per_arch": eval_cpu / len(archs),
    }
    print(f"Kendall tau {tau:.3f} (p={tau_p:.2g}), Spearman {rho:.3f}, over {len(archs)} cells")
    # The same ranking after a few fine-tuning steps of each extracted cell (OFA/SPOS-style).
    out["ranking_finetuned"] = {}
    for steps in args.finetune_steps:
        start, cpu = time.perf_counter(), time.process_time()
        tuned = [
            evaluate_path(supernet, preprocess, data, cell, seed=0, finetune_steps=steps)[1][
                "val_accuracy"
            ]
            for cell in archs
        ]
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        tau_ft, p_ft = kendalltau(tuned, standalone)
        out["ranking_finetuned"][str(steps)] = {
            "kendall_tau": tau_ft,
            "kendall_p": p_ft,
            "spearman_rho": spearmanr(tuned, standalone)[0],
            "eval_seconds_per_arch": wall / len(archs),
            "eval_cpu_seconds_per_arch": cpu / len(archs),
            "accuracies": tuned,
        }
        print(f"{steps} fine-tuning steps: Kendall tau {tau_ft:.3f} (p={p_ft:.2g})")

    # 3. Gradient-based searches; the derived cells trained stand-alone with the same budget.
    runs = [("darts", 1, 0.0, seed) for seed in range(args.seeds)]
    runs += [("darts", 2, 0.0, 0), ("gdas", 1, 0.2, 0), ("proxyless", 1, 0.1, 0)]
    searches = []
    for method, order, latency_weight, seed in runs:
        settings = SearchSettings(
            method=method, order=order, epochs=args.search_epochs, latency_weight=latency_weight
        )
        start, cpu = time.perf_counter(), time.process_time()
        result = search(settings, data, preprocess, args.channels, 1, 16, seed)
        search_seconds, search_cpu = time.perf_counter() - start, time.process_time() - cpu
        acc, _, _ = train_standalone(result.ops, args.channels, args.epochs)
        entry = {
            "method": method if method != "darts" else f"darts-{order}",
            "seed": seed,
            "latency_weight": latency_weight,
            "arch": result.arch_str,
            "search_seconds": search_seconds,
            "relative_cost": search_seconds / arch_seconds,
            "search_cpu_seconds": search_cpu,
            "relative_cpu_cost": search_cpu / arch_cpu,
            "standalone_accuracy": acc,
            "skip_edges": sum(op == "skip_connect" for op in result.ops),
            "collapsed": collapsed(result.ops),
            "expected_latency_us": result.metrics.get("search_expected_latency_us"),
        }
        searches.append(entry)
        print(f"[search] {json.dumps(entry)}")
    out["searches"] = searches
    best_random = max(standalone[: args.random])
    darts = [s for s in searches if s["method"] == "darts-1"]
    out["darts_vs_random"] = {
        "best_of_random": best_random,
        "random_archs": args.random,
        "darts_accuracies": [s["standalone_accuracy"] for s in darts],
        "darts_beats_best_random": sum(s["standalone_accuracy"] >= best_random for s in darts),
        "collapsed_seeds": sum(s["collapsed"] for s in darts),
        "seeds": len(darts),
    }
    spos_total = spos["supernet_train_seconds"] + eval_seconds
    out["costs"]["spos_total_relative"] = spos_total / arch_seconds
    out["costs"]["spos_total_relative_cpu"] = (spos_cpu + eval_cpu) / arch_cpu
    print(json.dumps({k: v for k, v in out.items() if not k.startswith("ranking")}, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(out, handle, indent=2)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
