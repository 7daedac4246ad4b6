"""Trial throughput with 2 joblib workers vs 1, on CPU-bound trials pinned to one thread each.

python tests/benchmarks/throughput.py [--trials 12] [--work 300000000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = """
import os

os.environ["OMP_NUM_THREADS"] = "1"
import hydra


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    total, x = 0, int(cfg.x)  # read the config once: OmegaConf access is slow in a hot loop
    for i in range(int(cfg.work)):  # pure-Python CPU work: one core, no threads
        total += (i * x) % 7
    return {"score": float(total % 1000)}


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - override hydra/launcher: joblib
  - _self_
x: 1
work: {work}
hydra:
  sweeper:
    objective: {{metric: score}}
    registry: {{enabled: false}}
    params:
      x: {{low: 1, high: 1000}}
"""


def sweep(cwd: Path, workers: int, trials: int) -> float:
    for leftover in ("mlflow.db", "mlruns", "multirun"):
        subprocess.run(["rm", "-rf", str(cwd / leftover)], check=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "app.py",
            "-m",
            f"hydra.launcher.n_jobs={workers}",
            f"hydra.sweeper.batch_size={workers}",
            f"hydra.sweeper.n_trials={trials}",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--work", type=int, default=300_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "app.py").write_text(APP)
        (cwd / "config.yaml").write_text(CONFIG.format(work=args.work))
        one = sweep(cwd, 1, args.trials)
        two = sweep(cwd, 2, args.trials)
    print(f"\nThroughput, {args.trials} CPU-bound trials (joblib launcher, 1 thread each)\n")
    print("| workers | wall (s) | trials/min | speed-up |")
    print("| ---: | ---: | ---: | ---: |")
    print(f"| 1 | {one:.1f} | {60 * args.trials / one:.1f} | 1.00 |")
    print(f"| 2 | {two:.1f} | {60 * args.trials / two:.1f} | {one / two:.2f} |")
    print("\n(target: >= 1.7x with 2 workers on this 2-core machine)")


if __name__ == "__main__":
    main()
