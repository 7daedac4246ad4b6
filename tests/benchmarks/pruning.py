"""Pruning value: the same real digits sweep with ASHA and without pruning, side by side.

python tests/benchmarks/pruning.py [--trials 16] [--epochs 27] [--asha JSON] [overrides...]

Both sweeps run ``pipelines/vision.py -m`` (mbconv space, digits, the pipeline's defaults:
hardware cost measured, models logged) with the same strategy and seed, one after the other.
With ``random`` the two sweeps draw the same candidates, so the comparison is between training
all of them to the budget and letting ASHA (by default rungs at 3 and 9 of 27 epochs, eta 3)
stop the trailing ones (about 13 minutes on 2 lightly loaded CPU cores). Prints wall time, CPU
time, best validation accuracy (of a fully trained trial), its test accuracy, the trials pruned
and the epochs trained, and the ratios.

Then a replay: with the basic launcher trials run one after the other and training is seeded,
so what a rule would have done is fixed by the unpruned sweep's per-epoch curves. Each rule in
``--replay`` is run on those curves exactly as the channel runs it (each trial judged against
the trials before it, as far as they got); the replay of the measured ASHA setting is checked
against the real ASHA sweep.
"""

from __future__ import annotations

import argparse
import json
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
        trials = sorted(
            (r for r in runs if "nas.trial" in r.data.tags),
            key=lambda r: int(r.data.tags["nas.trial"]),
        )
        curves = [
            sorted(
                (m.step, m.value) for m in client.get_metric_history(r.info.run_id, "val_accuracy")
            )
            for r in trials
        ]
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
            # Per-epoch values only (a final value logged after the last epoch is dropped).
            "curves": [[p for p in c if p[0] <= args.epochs] for c in curves],
            "stops": [
                int(r.data.tags["nas.pruned_step"]) if "nas.pruned_step" in r.data.tags else None
                for r in trials
            ],
        }


def replay(config: dict, curves: list[list[tuple[int, float]]], epochs: int) -> dict:
    """What ``config`` would have pruned in a sequential sweep with these full curves."""
    from nas_plugin.pruning import make_rule

    rule = make_rule(config)
    done: list[list[tuple[int, float]]] = []
    stops: list[int | None] = []
    for curve in curves:
        own: list[tuple[int, float]] = []
        stop = None
        for point in curve:
            own.append(point)
            if rule.decide(own, done, epochs).stop:
                stop = point[0]
                break
        done.append(own)
        stops.append(stop)
    full = [c[-1][1] for c, stop in zip(curves, stops, strict=True) if stop is None]
    return {
        "stops": stops,
        "pruned": sum(stop is not None for stop in stops),
        "epochs": sum(len(c) for c in done),
        "best_val": max(full),
    }


def _children_cpu() -> float:
    """CPU seconds (user + system) of finished child processes: the sweep's own work, far
    less sensitive than wall time to other jobs on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--strategy", default="random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--asha", default='{"name": "asha", "min_step": 3, "eta": 3}', help="the measured pruner"
    )
    parser.add_argument(
        "--replay",
        nargs="*",
        default=[
            '{"name": "asha", "min_step": 1, "eta": 3}',
            '{"name": "asha", "min_step": 1, "eta": 2}',
            '{"name": "asha", "min_step": 2, "eta": 2}',
            '{"name": "asha", "min_step": 3, "eta": 3}',
            '{"name": "median", "warmup_steps": 1, "min_trials": 2}',
            '{"name": "median", "warmup_steps": 2, "min_trials": 2}',
            '{"name": "curve", "min_points": 3, "margin": 0.0}',
            '{"name": "curve", "min_points": 3, "margin": 0.01}',
        ],
        help="pruner configs (JSON) replayed on the unpruned sweep's curves",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both sweeps")
    args = parser.parse_args()

    measured = json.loads(args.asha)
    rows = [
        sweep("none", ["hydra/sweeper/pruner=none"], args),
        sweep(
            "asha",
            ["hydra/sweeper/pruner=asha"]
            + [f"hydra.sweeper.pruner.{k}={v}" for k, v in measured.items() if k != "name"],
            args,
        ),
    ]
    plain, asha = rows
    print(
        f"\nPruning: pipelines/vision.py -m, digits, mbconv space, {args.strategy} strategy, "
        f"{args.trials} trials x {args.epochs} epochs, seed {args.seed}; ASHA {measured}\n"
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

    epochs = sum(len(c) for c in plain["curves"])
    print(
        f"\nReplay on the unpruned sweep's curves ({epochs} epochs, "
        f"best {plain['best_val']:.4f}):\n"
    )
    print("| pruner | pruned | epochs trained | epoch ratio | best val_acc | points lost |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for text in args.replay:
        config = json.loads(text)
        result = replay(config, plain["curves"], args.epochs)
        label = ", ".join(f"{k}={v}" for k, v in config.items())
        print(
            f"| {label} | {result['pruned']} | {result['epochs']} | "
            f"{epochs / result['epochs']:.2f}x | {result['best_val']:.4f} | "
            f"{100 * (plain['best_val'] - result['best_val']):.2f} |"
        )
    same = replay(measured, plain["curves"], args.epochs)["stops"] == asha["stops"]
    print(f"\nThe replay of {measured} matches the real ASHA sweep's stops: {same}")


if __name__ == "__main__":
    main()
