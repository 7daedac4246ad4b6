"""Weight-sharing detection search (``estimator=supernet`` on the SpineNet space) vs training
every candidate.

python tests/benchmarks/detection_supernet.py [--trials 24] [--epochs 10] [--retrain 3]
    [extra overrides...]

1. One sweep of ``pipelines/detection.py -m hydra/sweeper/estimator=supernet`` (regularized
   evolution, ``--trials`` candidates scored on inherited weights of one supernet trained for
   ``--epochs`` epochs by single-path sampling, batch 32 and lr 0.01 like the trials).
2. The best ``--retrain`` candidates by inherited val mAP@0.5, each trained from scratch with
   the pipeline's own trial budget (``conf/detection.yaml``) and scored on val and test.

Compare with ``tests/benchmarks/detection.py`` (every candidate trained: best of 8 and the
hand-designed baseline) in the docs' table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QUIET = ["log_model=false", "hydra.sweeper.registry.enabled=false", "hardware.measure=false"]


def sweep(trials: int, epochs: int, extra: list[str]) -> tuple[list[dict], float, float]:
    """(every trial's params and metrics, the supernet's training seconds, wall seconds)."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, str(REPO / "pipelines" / "detection.py"), "-m", *QUIET]
        argv += [
            "hydra/sweeper/estimator=supernet",
            f"hydra.sweeper.estimator.epochs={epochs}",
            "hydra.sweeper.estimator.batch_size=32",
            "hydra.sweeper.estimator.lr=0.01",
            f"hydra.sweeper.estimator.cache_dir={tmp}/cache",
            f"hydra.sweeper.n_trials={trials}",
            "hydra.sweeper.mlflow.experiment=ws",
            *extra,
        ]
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = client.get_experiment_by_name("ws")
        runs = [
            r
            for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get("nas.status") == "ok"
        ]
    rows = [{"params": r.data.params, **r.data.metrics} for r in runs]
    trained = sum(r.get("supernet_train_seconds", 0.0) for r in rows)
    return rows, trained, wall


def retrain(params: dict, extra: list[str]) -> tuple[dict, float]:
    from hydra import compose, initialize_config_dir

    from nas_plugin.tasks.detection import run_detection_trial

    arch = [f"{k}={v}" for k, v in params.items() if k.startswith("model.")]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("detection", overrides=[*QUIET, *arch, *extra])
    start = time.perf_counter()
    return run_detection_trial(cfg), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--retrain", type=int, default=3)
    args, extra = parser.parse_known_args()

    import torch

    torch.set_num_threads(1)
    rows, supernet_seconds, wall = sweep(args.trials, args.epochs, extra)
    ranked = sorted(rows, key=lambda r: -r["val_map_50"])
    print(
        f"weight-sharing sweep: {len(rows)} candidates, supernet trained {args.epochs} epochs in "
        f"{supernet_seconds:.0f} s, sweep wall {wall:.0f} s "
        f"({(wall - supernet_seconds) / max(1, len(rows)):.1f} s per candidate after it)"
    )
    print(
        "| rank by inherited val mAP@.5 | inherited val mAP@.5 | retrained val mAP@.5 | "
        "retrained test mAP@.5 | retrained test mAP | retrain wall |"
    )
    print("|---|---|---|---|---|---|")
    for rank, row in enumerate(ranked[: args.retrain], start=1):
        scores, seconds = retrain(row["params"], extra)
        print(
            f"| {rank} | {row['val_map_50']:.3f} | {scores['val_map_50']:.3f} | "
            f"{scores['test_map_50']:.3f} | {scores['test_map']:.3f} | {seconds:.0f} s |",
            flush=True,
        )
    print(
        "\nwinner: "
        + " ".join(
            f"{k.removeprefix('model.')}={v}"
            for k, v in sorted(ranked[0]["params"].items())
            if k.startswith("model.")
        )
    )


if __name__ == "__main__":
    main()
