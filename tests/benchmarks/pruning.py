"""Pruning value: the same real digits sweep with ASHA and without pruning, side by side.

python tests/benchmarks/pruning.py [--trials 16] [--epochs 9] [--strategy random] [overrides...]

Both sweeps run ``pipelines/vision.py -m`` (mbconv space, digits, the pipeline's defaults:
hardware cost measured, models logged) with the same strategy and seed, one after the other.
With ``random`` the two sweeps draw the same candidates, so the comparison is between training
all of them to the budget and letting ASHA (rungs at 1 and 3 epochs, eta 3) stop the trailing
ones. Prints wall time, best validation accuracy (of a fully trained trial), its test accuracy,
the trials pruned and the epochs trained, and the ratios.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def sweep(label: str, pruner: list[str], args: argparse.Namespace) -> dict[str, float | str]:
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            str(REPO / "pipelines" / "vision.py"),
            "-m",
            f"hydra/sweeper/strategy={args.strategy}",
            f"hydra.sweeper.n_trials={args.trials}",
            f"train.epochs={args.epochs}",
            f"seed={args.seed}",
            *pruner,
            *args.overrides,
        ]
        load_before = os.getloadavg()[0]
        cpu_before = _children_cpu()
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        cpu = _children_cpu() - cpu_before
        if proc.returncode != 0:
            raise SystemExit(f"{label} sweep failed:\n{proc.stderr[-3000:]}")
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = client.get_experiment_by_name("nas-vision-digits")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        trials = [r for r in runs if "nas.trial" in r.data.tags]
        full = [r for r in trials if r.data.tags.get("nas.status") == "ok"]
        pruned = [r for r in trials if r.data.tags.get("nas.status") == "pruned"]
        best = max(full, key=lambda r: r.data.metrics["val_accuracy"])
        # The best of every candidate as it stood when it stopped (pruned ones included).
        return {
            "label": label,
            "wall": wall,
            "cpu": cpu,
            "load": (load_before + os.getloadavg()[0]) / 2,
            "trials": len(trials),
            "pruned": len(pruned),
            "epochs": sum(r.data.metrics["epochs"] for r in trials),
            "best_val": best.data.metrics["val_accuracy"],
            "best_test": best.data.metrics["test_accuracy"],
            "best_trial": best.data.tags["nas.trial"],
        }


def _children_cpu() -> float:
    """CPU seconds (user + system) of finished child processes: the sweep's own work, far
    less sensitive than wall time to other jobs on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--strategy", default="random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both sweeps")
    args = parser.parse_args()

    rows = [
        sweep("none", ["hydra/sweeper/pruner=none"], args),
        sweep("asha", ["hydra/sweeper/pruner=asha"], args),
    ]
    plain, asha = rows
    print(
        f"\nPruning: pipelines/vision.py -m, digits, mbconv space, {args.strategy} strategy, "
        f"{args.trials} trials x {args.epochs} epochs, seed {args.seed}; ASHA min_step 1, eta 3\n"
    )
    print(
        "| pruner | wall time (s) | CPU time (s) | load avg | trials | pruned | epochs trained "
        "| best val_acc | its test_acc | best trial |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['label']} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['load']:.1f} | "
            f"{r['trials']} | {r['pruned']} | "
            f"{r['epochs']:.0f} | {r['best_val']:.4f} | {r['best_test']:.4f} | "
            f"{r['best_trial']} |"
        )
    delta = 100 * (asha["best_val"] - plain["best_val"])
    print(
        f"\nASHA: {plain['wall'] / asha['wall']:.2f}x less wall time (target >= 2x), "
        f"{plain['cpu'] / asha['cpu']:.2f}x less CPU time, best val_acc {delta:+.2f} points "
        "(target within +-0.5). Load avg: the machine's 1-minute load, mean of start and end."
    )


if __name__ == "__main__":
    main()
