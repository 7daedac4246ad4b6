"""The zero-cost warm-up in a real sweep: NB201 cells looked up in the packaged CIFAR-10 table.

python tests/benchmarks/warmup_sweep.py [--seeds 5] [--trials 50] [--pool 1000]

Each row runs ``pipelines/vision.py --config-name nb201 -m`` (the tabular estimator: a trial
is a look-up, so what is measured is which cells the sweep picks) once per seed with ``bo``,
without and with ``hydra/sweeper/prescreen=warmup``. The warm-up scores ``--pool`` random
cells' untrained networks live, as a user's sweep does (the nb201 config's network on digits
minibatches, not the packaged scores of ``nas-plugin bench nb201``), and the best 10 are the
first trials. Prints the best test accuracy found after 25 and ``--trials`` trials (mean ± std ·
median · p10 over the seeds), the warm-up's seconds and the sweep's wall time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
METRIC = "cifar10_test_acc"


def sweep(extra: list[str], seed: int, trials: int) -> dict[str, object]:
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            str(REPO / "pipelines" / "vision.py"),
            "--config-name",
            "nb201",
            "-m",
            "hydra/sweeper/strategy=bo",
            f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.seed={seed}",
            "hydra.sweeper.leaderboard_columns=[]",
            *extra,
        ]
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"sweep {extra} seed {seed} failed:\n{proc.stderr[-3000:]}")
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        experiment = client.get_experiment_by_name("nas-nb201-tabular")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        parent = next(r for r in runs if "nas.trial" not in r.data.tags)
        ordered = sorted(
            (r for r in runs if "nas.trial" in r.data.tags),
            key=lambda r: int(r.data.tags["nas.trial"]),
        )
        values = [r.data.metrics.get(METRIC, float("-inf")) for r in ordered]
        return {
            "best": np.maximum.accumulate(values),
            "warmup_s": parent.data.metrics.get("prescreen_seconds", 0.0),
            "wall": wall,
        }


def summary(values: list[float]) -> str:
    p10 = float(np.percentile(values, 10, method="lower"))
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    mean, median = statistics.mean(values), statistics.median(values)
    return f"{mean:.2f} ± {spread:.2f} · {median:.2f} · {p10:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--pool", type=int, default=1000)
    args = parser.parse_args()
    warmup = ["hydra/sweeper/prescreen=warmup", f"hydra.sweeper.prescreen.warmup_pool={args.pool}"]
    rows = {
        "bo": [],
        "bo + warmup (synflow)": warmup,
        "bo + warmup (ensemble synflow, naswot)": [
            *warmup,
            "hydra.sweeper.prescreen.proxy=ensemble",
            "hydra.sweeper.prescreen.ensemble=[synflow,naswot]",
        ],
    }
    checkpoints = sorted({min(25, args.trials), args.trials})
    print(f"| sweep | {' | '.join(f'@{c}' for c in checkpoints)} | warm-up s | wall s |")
    print(f"|---|{'---|' * len(checkpoints)}---|---|")
    for label, extra in rows.items():
        results = [sweep(extra, seed, args.trials) for seed in range(args.seeds)]
        cells = [summary([float(r["best"][c - 1]) for r in results]) for c in checkpoints]
        warm = statistics.mean(float(r["warmup_s"]) for r in results)
        wall = statistics.mean(float(r["wall"]) for r in results)
        print(f"| {label} | {' | '.join(cells)} | {warm:.0f} | {wall:.0f} |", flush=True)


if __name__ == "__main__":
    main()
