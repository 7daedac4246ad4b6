"""Detection NAS vs the hand-designed baseline, on the same per-model training budget.

python tests/benchmarks/detection.py [--trials 8] [--seeds 3] [extra overrides...]

1. The default sweep (``pipelines/detection.py -m``: regularized evolution over the SpineNet
   space, every trial trained with ``conf/detection.yaml``'s budget); the winner is picked by
   validation mAP@0.5 and reported with its held-out test mAP.
2. The hand-designed baseline (``conf/model/spinenet.yaml``: a plain ResNet-like chain of basic
   blocks at 1/4, 1/8, 1/16 and a standard top-down FPN, the same FCOS head), trained with the
   same budget for ``--seeds`` seeds.

The table (Markdown) gives val/test mAP@0.5 and mAP@[.5:.95], per-class test AP, parameters,
latency and wall time.
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
QUIET = ["log_model=false", "hydra.sweeper.registry.enabled=false", "hardware.latency_repeats=5"]


def search(trials: int, extra: list[str]) -> tuple[dict, list[float], float]:
    """(best trial by val_map_50, every trial's val_map_50, wall seconds) of one default sweep."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        argv = [sys.executable, str(REPO / "pipelines" / "detection.py"), "-m", *QUIET]
        argv += [f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.mlflow.experiment=d", *extra]
        proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = client.get_experiment_by_name("d")
        runs = [
            r
            for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get("nas.status") == "ok"
        ]
    best = max(runs, key=lambda r: r.data.metrics["val_map_50"])
    row = {
        **best.data.metrics,
        "arch": {k: v for k, v in best.data.params.items() if k.startswith("model.")},
    }
    return row, sorted(r.data.metrics["val_map_50"] for r in runs), wall


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("detection", overrides=[*QUIET, *overrides])


def baseline(seeds: int, extra: list[str]) -> tuple[list[dict], float]:
    from nas_plugin.tasks.detection import run_detection_trial

    start = time.perf_counter()
    rows = [run_detection_trial(compose([f"seed={s}", *extra])) for s in range(seeds)]
    return rows, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    args, extra = parser.parse_known_args()

    import torch

    torch.set_num_threads(1)
    from nas_plugin.tasks.detection_data import SHAPE_CLASSES

    best, all_val, search_wall = search(args.trials, extra)
    base_rows, base_wall = baseline(args.seeds, extra)

    def cells(row: dict) -> str:
        aps = " / ".join(f"{row.get(f'test_ap_{c}', float('nan')):.2f}" for c in SHAPE_CLASSES)
        return f"{aps} | {row['params']:,.0f} | {row['latency_ms']:.1f}"

    def scores(row: dict) -> str:
        return (
            f"{row['val_map_50']:.3f} | {row['test_map_50']:.3f} | {row['val_map']:.3f} | "
            f"{row['test_map']:.3f}"
        )

    keys = ("val_map_50", "test_map_50", "val_map", "test_map")
    mean = {k: statistics.mean(r[k] for r in base_rows) for k in keys}
    spread = {k: statistics.pstdev(r[k] for r in base_rows) for k in keys}
    classes = "/".join(SHAPE_CLASSES)
    print(
        "| model | val mAP@.5 | test mAP@.5 | val mAP | test mAP | "
        f"test AP {classes} | params | latency ms | wall |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| search: best of {args.trials} (by val mAP@.5) | {scores(best)} | {cells(best)} | "
        f"{search_wall:.0f} s (sweep) |"
    )
    for seed, row in enumerate(base_rows):
        print(
            f"| baseline, seed {seed} | {scores(row)} | {cells(row)} | "
            f"{base_wall / len(base_rows):.0f} s |"
        )
    print(
        f"| baseline, mean of {len(base_rows)} | {mean['val_map_50']:.3f} | "
        f"{mean['test_map_50']:.3f} ± {spread['test_map_50']:.3f} | {mean['val_map']:.3f} | "
        f"{mean['test_map']:.3f} ± {spread['test_map']:.3f} | | | | |"
    )
    print()
    print("winner:", " ".join(f"{k.removeprefix('model.')}={v}" for k, v in best["arch"].items()))
    print("every trial's val mAP@.5:", ", ".join(f"{v:.3f}" for v in all_val))


if __name__ == "__main__":
    main()
