"""Hierarchical evolution (Liu et al., 2018) on digits, beside random search of the same space.

python tests/benchmarks/hierarchical.py [--trials 16] [extra overrides...]

Each strategy runs one real sweep (``model=hierarchical search_space=hierarchical``, 1 epoch,
C=8, 2 cells) and the table gives its best and median validation accuracy, s/trial and, for
evolution, how many of its children differ from a trained network in exactly one edge.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "model=hierarchical",
    "hydra/sweeper/search_space=hierarchical",
    "model.channels=8",
    "model.cells=2",
    "train.epochs=1",
    "log_model=false",
    "hydra.sweeper.registry.enabled=false",
    "hardware.latency_repeats=5",
]


def sweep(strategy: list[str], trials: int, extra: list[str]) -> tuple[list[dict], float]:
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        argv = [sys.executable, str(REPO / "pipelines" / "vision.py"), "-m", *SMALL, *strategy]
        argv += [f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.mlflow.experiment=h", *extra]
        proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = client.get_experiment_by_name("h")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        trials_ = [r for r in runs if r.data.tags.get("nas.status") == "ok"]
        trials_.sort(key=lambda r: int(r.data.tags["nas.trial"]))
        rows = [
            {
                "arch": {k: v for k, v in r.data.params.items() if k.startswith("model.")},
                "val": r.data.metrics["val_accuracy"],
                "seconds": r.data.metrics["trial_seconds"],
            }
            for r in trials_
        ]
    return rows, wall


def one_edge_children(rows: list[dict]) -> int:
    """Trials that differ from an earlier trial in exactly one shared key (one edge)."""
    count = 0
    for index, row in enumerate(rows):
        child = row["arch"]
        for earlier in rows[:index]:
            shared = [k for k in child if k in earlier["arch"]]
            if sum(child[k] != earlier["arch"][k] for k in shared) == 1:
                count += 1
                break
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=16)
    args, extra = parser.parse_known_args()
    strategies = {
        "evolution (population 8, tournament 3)": ["hydra/sweeper/strategy=evolution"],
        "random": ["hydra/sweeper/strategy=random"],
    }
    print(f"\nHierarchical space on digits: {args.trials} trials, 1 epoch, C=8, 2 cells\n")
    print("| strategy | best val_acc | median val_acc | s/trial | one-edge children | wall (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, overrides in strategies.items():
        rows, wall = sweep(overrides, args.trials, extra)
        values = [r["val"] for r in rows]
        seconds = statistics.mean(r["seconds"] for r in rows)
        print(
            f"| {name} | {max(values):.4f} | {statistics.median(values):.4f} | {seconds:.1f} | "
            f"{one_edge_children(rows)} | {wall:.0f} |"
        )


if __name__ == "__main__":
    main()
