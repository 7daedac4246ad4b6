"""The README's demo as a benchmark: its wall time and what it found, as a table.

python tests/benchmarks/demo.py [extra overrides...]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(REPO / "pipelines" / "vision.py"), "-m", *sys.argv[1:]],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = client.get_experiment_by_name("nas-vision-digits")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        trials = [r for r in runs if r.data.tags.get("nas.status") == "ok"]
        best = max(trials, key=lambda r: r.data.metrics["val_accuracy"])
        worst = min(trials, key=lambda r: r.data.metrics["val_accuracy"])
        seconds = [r.data.metrics["trial_seconds"] for r in trials]
    m = best.data.metrics
    print("\nDemo: python pipelines/vision.py -m (digits, mbconv space, evolution)\n")
    print(
        "| trials | wall time (s) | mean s/trial | best val_acc | its test_acc | "
        "its params | its latency (ms) | worst val_acc |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {len(trials)} | {wall:.1f} | {sum(seconds) / len(seconds):.1f} | "
        f"{m['val_accuracy']:.4f} | {m['test_accuracy']:.4f} | {int(m['params']):,} | "
        f"{m['latency_ms']:.2f} | {worst.data.metrics['val_accuracy']:.4f} |"
    )


if __name__ == "__main__":
    main()
