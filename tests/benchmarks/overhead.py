"""Per-trial overhead of the NAS sweeper (with its MLflow logging) vs Hydra's basic sweeper.

Both run the same trivial task function as real multiruns in subprocesses. The per-trial time is
the slope between a short and a long sweep, (t(long) - t(short)) / (long - short), which cancels
start-up costs (imports, creating the SQLite store). Each pair of sweeps runs side by side in
the same round, several rounds, and the table reports medians: this machine is noisy.

    python tests/benchmarks/overhead.py [--short 10] [--long 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = """
import hydra

@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    return float(cfg.x)

if __name__ == "__main__":
    main()
"""
CONFIG = "x: 0\nhydra:\n  job: {chdir: false}\n"


def wall(cwd: Path, args: list[str]) -> float:
    for leftover in ("mlflow.db", "mlruns", "multirun"):
        subprocess.run(["rm", "-rf", str(cwd / leftover)], check=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "app.py", "-m", *args], cwd=cwd, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed: {args}\n{proc.stderr[-3000:]}")
    return elapsed


def sweeps(n: int) -> dict[str, list[str]]:
    return {
        "hydra basic sweeper": [f"x=range(0,{n})"],
        "nas sweeper + MLflow": [
            "hydra/sweeper=nas",
            f"x=range(0,{n})",
            f"hydra.sweeper.n_trials={n}",
            "hydra/sweeper/strategy=grid",
            "hydra.sweeper.registry.enabled=false",
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--long", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "app.py").write_text(APP)
        (cwd / "config.yaml").write_text(CONFIG)
        per_trial: dict[str, list[float]] = {name: [] for name in sweeps(1)}
        for _ in range(args.rounds):
            short, long = sweeps(args.short), sweeps(args.long)
            for name in per_trial:
                t_short, t_long = wall(cwd, short[name]), wall(cwd, long[name])
                per_trial[name].append((t_long - t_short) / (args.long - args.short))
    base = statistics.median(per_trial["hydra basic sweeper"])
    ours = statistics.median(per_trial["nas sweeper + MLflow"])
    print(
        f"\nPer-trial time, trivial task, median of {args.rounds} rounds "
        f"(slope between {args.short} and {args.long} trials)\n"
    )
    print("| sweeper | ms per trial | ratio to basic |")
    print("| --- | ---: | ---: |")
    print(f"| hydra basic sweeper | {base * 1000:.1f} | 1.00 |")
    print(f"| nas sweeper + MLflow | {ours * 1000:.1f} | {ours / base:.2f} |")
    print(
        f"\nadded per trial: {(ours - base) * 1000:.1f} ms (targets: ratio <= 1.5, added < 100 ms)"
    )


if __name__ == "__main__":
    main()
