"""EfficientNet compound scaling on digits: the grid at phi = 1, then the best scaled up.

python tests/benchmarks/compound.py [extra overrides...]   (default: 2 epochs per trial)

One real sweep (``model=compound search_space=compound strategy=compound``); the table lists
every trial: alpha, beta, gamma, phi, the resulting multipliers, params, FLOPs, val_accuracy.
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

    from nas_plugin.tracking.scaling import scaling_points

    argv = [
        sys.executable,
        str(REPO / "pipelines" / "vision.py"),
        "-m",
        "model=compound",
        "hydra/sweeper/search_space=compound",
        "hydra/sweeper/strategy=compound",
        "hydra.sweeper.mlflow.experiment=compound",
        "hydra.sweeper.registry.enabled=false",
        "log_model=false",
        "train.epochs=2",
        *sys.argv[1:],
    ]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = client.get_experiment_by_name("compound")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        parent = next(r for r in runs if r.data.tags.get("nas.sweep") == "parent")
        points = scaling_points(client, parent.info.run_id, "val_accuracy")
        found = [float(parent.data.params[f"scaling.{c}"]) for c in ("alpha", "beta", "gamma")]
    print(f"\nCompound scaling on digits: {len(points)} trials in {wall:.0f} s; found {found}\n")
    header = "| trial | alpha | beta | gamma | phi | depth x | width x | res x | params | MFLOPs |"
    print(header + " val_acc |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for p in points:
        phi = p["phi"]
        print(
            f"| {p['trial']} | {p['alpha']:g} | {p['beta']:g} | {p['gamma']:g} | {phi:g} | "
            f"{p['alpha'] ** phi:.2f} | {p['beta'] ** phi:.2f} | {p['gamma'] ** phi:.2f} | "
            f"{int(p['params']):,} | {p['flops'] / 1e6:.2f} | {p['value']:.4f} |"
        )


if __name__ == "__main__":
    main()
