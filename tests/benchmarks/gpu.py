"""Images/s of one vision trial on the CPU and on a CUDA GPU, and 8 trials one per GPU.

One table from one run, on a generated folder of 32x32 PNGs (10 classes; 20,000 by default) and
the mbconv demo space's default model (model=mbconv):

- one trial each for CPU 1 thread, CPU 2 threads, CUDA fp32 and CUDA bf16, run in this process
  through ``nas_plugin.tasks.vision.run_vision_trial`` on a config composed from
  conf/vision.yaml; images/s = training images x epochs / the trial's ``train_seconds``;
- the wall time of ``python pipelines/vision.py -m`` with 8 trials, ``gpus_per_trial=1`` and
  the joblib launcher with ``n_jobs`` = the number of GPUs.

Rows that need CUDA print ``n/a (no CUDA)`` on a machine without it. Smoke run on a CPU:

    python tests/benchmarks/gpu.py --images 500 --rows cpu1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CLASSES = 10
ROWS = ("cpu1", "cpu2", "cuda32", "cudabf16", "sweep")
# (label, device, precision, torch threads, loader workers) of each single-trial row.
TRIALS = {
    "cpu1": ("CPU, 1 thread", "cpu", "32", 1, 1),
    "cpu2": ("CPU, 2 threads", "cpu", "32", 2, 1),
    "cuda32": ("CUDA fp32", "cuda", "32", 1, min(8, os.cpu_count() or 1)),
    "cudabf16": ("CUDA bf16", "cuda", "bf16", 1, min(8, os.cpu_count() or 1)),
}


def write_folder(root: Path, images: int, seed: int = 0) -> None:
    """``images`` 32x32 RGB PNGs in ``root/class_k/``: each class a noisy colour of its own, so
    the network has something to learn."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(CLASSES, 3))
    for k in range(CLASSES):
        (root / f"class_{k}").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        k = i % CLASSES
        pixels = np.clip(colours[k] + rng.normal(0, 40, size=(32, 32, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(root / f"class_{k}" / f"{i:05d}.png")


def trial_config(root: Path, device: str, precision: str, threads: int, workers: int, epochs: int):
    # ++: the keys exist once the vision task is device-aware; forced so that composing never
    # depends on it.
    overrides = [
        "task=image_folder",
        f"task.root={root}",
        f"++task.num_workers={workers}",
        f"++train.device={device}",
        f"++train.precision={precision}",
        f"train.num_threads={threads}",
        f"train.epochs={epochs}",
        "log_model=false",
        "hardware.measure=false",
    ]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("vision", overrides=overrides)


def train_images(cfg, images: int) -> int:
    """Training split size: what the validation and test fractions leave (stratified per class,
    so within a few images)."""
    held_out = float(cfg.task.val_fraction) + float(cfg.task.test_fraction)
    return round(images * (1.0 - held_out) * float(cfg.train.get("train_fraction", 1.0)))


def run_trial(root: Path, images: int, row: str, epochs: int) -> tuple[str, str]:
    from nas_plugin.tasks.vision import run_vision_trial

    label, device, precision, threads, workers = TRIALS[row]
    if device == "cuda" and not torch.cuda.is_available():
        return label, "n/a (no CUDA)"
    cfg = trial_config(root, device, precision, threads, workers, epochs)
    result = run_vision_trial(cfg)
    rate = train_images(cfg, images) * epochs / result["train_seconds"]
    return label, f"{rate:,.0f} images/s (val acc {result['val_accuracy']:.3f}, {workers} workers)"


def run_sweep(root: Path, trials: int, epochs: int, work: Path) -> tuple[str, str]:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    label = f"{trials} trials, gpus_per_trial=1, joblib n_jobs={gpus or 'n/a'}"
    if not gpus:
        return label, "n/a (no CUDA)"
    command = [
        sys.executable,
        str(REPO / "pipelines" / "vision.py"),
        "-m",
        "task=image_folder",
        f"task.root={root}",
        "train.device=cuda",
        f"train.epochs={epochs}",
        "log_model=false",
        "hardware.measure=false",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={gpus}",
        f"hydra.sweeper.batch_size={gpus}",
        "hydra.sweeper.gpus_per_trial=1",
        f"hydra.sweeper.n_trials={trials}",
        "hydra/sweeper/strategy=random",
        f"hydra.sweeper.mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        f"hydra.sweep.dir={work / 'multirun'}",
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return label, f"failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
    return label, f"{seconds:.1f} s wall ({seconds / trials:.1f} s per trial)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000, help="PNGs in the folder")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--trials", type=int, default=8, help="trials of the one-per-GPU sweep")
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}"
    )
    args = parser.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"--rows: unknown {unknown}; allowed: {list(ROWS)}")

    with tempfile.TemporaryDirectory(prefix="nas-gpu-bench-") as tmp:
        work = Path(tmp)
        root = work / "images"
        start = time.perf_counter()
        write_folder(root, args.images)
        print(f"Wrote {args.images} 32x32 PNGs in {time.perf_counter() - start:.0f} s", flush=True)
        table = []
        for row in rows:
            if row == "sweep":
                table.append(run_sweep(root, args.trials, args.epochs, work))
            else:
                table.append(run_trial(root, args.images, row, args.epochs))
            print(f"  {table[-1][0]}: {table[-1][1]}", flush=True)

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(
        f"\nVision trial throughput: mbconv, {args.images} 32x32 PNGs (10 classes), "
        f"{args.epochs} epoch(s); CPU cores {os.cpu_count()}, GPU {gpu}"
    )
    width = max(len(label) for label, _ in table)
    print(f"| {'run'.ljust(width)} | result |")
    print(f"| {'-' * width} | ------ |")
    for label, value in table:
        print(f"| {label.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
