"""Segmentation NAS vs the hand-designed baseline, on the same per-model training budget.

python tests/benchmarks/segmentation.py [--trials 12] [--seeds 3] [extra overrides...]

1. The default sweep (``pipelines/segmentation.py -m``: regularized evolution over the
   Auto-DeepLab space, every trial trained with ``conf/segmentation.yaml``'s budget); the
   winner is picked by validation mIoU and reported with its held-out test mIoU.
2. The hand-designed baseline (``conf/model/autodeeplab.yaml``: DeepLabv3's output-stride-16
   path, a ResNet basic block as the cell, ASPP, the skip decoder), trained with the same budget
   for ``--seeds`` seeds.
3. A 1-layer network (one 3x3 convolution per pixel) with the same budget: how far from
   saturating the data a model without a receptive field is.

The table (Markdown) gives val/test mIoU, per-class test IoU, parameters and wall time.
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
    """(best trial by val_miou, every trial's val_miou, wall seconds) of one default sweep."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        argv = [sys.executable, str(REPO / "pipelines" / "segmentation.py"), "-m", *QUIET]
        argv += [f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.mlflow.experiment=s", *extra]
        proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = client.get_experiment_by_name("s")
        runs = [
            r
            for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get("nas.status") == "ok"
        ]
    best = max(runs, key=lambda r: r.data.metrics["val_miou"])
    row = {
        **best.data.metrics,
        "arch": {k: v for k, v in best.data.params.items() if k.startswith("model.")},
    }
    return row, sorted(r.data.metrics["val_miou"] for r in runs), wall


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("segmentation", overrides=[*QUIET, *overrides])


def baseline(seeds: int, extra: list[str]) -> tuple[list[dict], float]:
    from nas_plugin.tasks.segmentation import run_segmentation_trial

    start = time.perf_counter()
    rows = [run_segmentation_trial(compose([f"seed={s}", *extra])) for s in range(seeds)]
    return rows, time.perf_counter() - start


def one_layer(extra: list[str]) -> tuple[dict, float]:
    """A single 3x3 convolution from the normalised pixels to the class logits, trained and
    scored with the segmentation trial's own loop."""
    from torch import nn

    from nas_plugin.tasks.segmentation import (
        EVAL_BATCH_SIZE,
        SegmentationModel,
        channel_stats,
        evaluate,
        train,
    )
    from nas_plugin.tasks.segmentation_data import load_segmentation_data
    from nas_plugin.tasks.training import seed_everything
    from nas_plugin.tasks.vision import Preprocess

    cfg = compose(extra)
    seed_everything(0)
    start = time.perf_counter()
    data = load_segmentation_data(cfg.task)
    mean, std = channel_stats(data)
    net = nn.Conv2d(data.in_chans, data.num_classes, 3, padding=1)
    model = SegmentationModel(Preprocess(int(cfg.task.resolution), mean, std), net)
    _, val, _ = train(model, data, cfg.train, 0)
    test = evaluate(model, data.loader(data.test, EVAL_BATCH_SIZE), data)
    row = {f"val_{k}": v for k, v in val.items()} | {f"test_{k}": v for k, v in test.items()}
    row["params"] = float(sum(p.numel() for p in net.parameters()))
    return row, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    args, extra = parser.parse_known_args()

    import torch

    torch.set_num_threads(1)
    from nas_plugin.tasks.segmentation_data import SCENE_CLASSES

    best, all_val, search_wall = search(args.trials, extra)
    base_rows, base_wall = baseline(args.seeds, extra)
    tiny, tiny_wall = one_layer(extra)

    def cells(row: dict) -> str:
        ious = " / ".join(f"{row.get(f'test_iou_{c}', float('nan')):.2f}" for c in SCENE_CLASSES)
        return f"{ious} | {row['params']:,.0f}"

    mean = {k: statistics.mean(r[k] for r in base_rows) for k in ("val_miou", "test_miou")}
    spread = statistics.pstdev(r["test_miou"] for r in base_rows)
    classes = "/".join(SCENE_CLASSES)
    print(f"| model | val mIoU | test mIoU | test IoU {classes} | params | wall |")
    print("|---|---|---|---|---|---|")
    print(
        f"| search: best of {args.trials} (by val) | {best['val_miou']:.3f} | "
        f"{best['test_miou']:.3f} | {cells(best)} | {search_wall:.0f} s (sweep) |"
    )
    for seed, row in enumerate(base_rows):
        print(
            f"| baseline, seed {seed} | {row['val_miou']:.3f} | {row['test_miou']:.3f} | "
            f"{cells(row)} | {base_wall / len(base_rows):.0f} s |"
        )
    print(
        f"| baseline, mean of {len(base_rows)} | {mean['val_miou']:.3f} | "
        f"{mean['test_miou']:.3f} ± {spread:.3f} | | | |"
    )
    print(
        f"| 1-layer (one 3x3 conv) | {tiny['val_miou']:.3f} | {tiny['test_miou']:.3f} | "
        f"{cells(tiny)} | {tiny_wall:.0f} s |"
    )
    print()
    print("winner:", " ".join(f"{k.removeprefix('model.')}={v}" for k, v in best["arch"].items()))
    print("every trial's val mIoU:", ", ".join(f"{v:.3f}" for v in all_val))


if __name__ == "__main__":
    main()
