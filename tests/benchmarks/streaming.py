"""Streaming image folders: read speed with 0 vs 2 DataLoader workers, and peak memory as the
folder grows.

    python tests/benchmarks/streaming.py [--sizes 2000 20000] [--workers 0 2]

Writes a folder of 32x32 PNGs (10 classes) per size, then, per (size, workers), reads one epoch
of the training split through the vision task's DataLoader (``VisionData.loader``, with the
``crop_flip`` augmentation, batches of 256) in a fresh subprocess, and prints images/s and that
process's peak resident memory (its own, and the largest of its worker processes). Memory must
stay flat as the folder grows: the task holds paths, not pixels. The last column is what an
in-memory uint8 copy of the folder would take.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = 10
SIDE = 32

READER = r"""
import json, resource, sys, time
from nas_plugin.tasks.vision_data import load_vision_data
root, workers = sys.argv[1], int(sys.argv[2])
task = {"name": "image_folder", "dataset": "image_folder", "root": root, "resolution": 32,
        "in_chans": 3, "val_fraction": 0.1, "test_fraction": 0.1, "split_seed": 0,
        "augment": "crop_flip", "num_workers": workers}
data = load_vision_data(task)
loader = data.loader(data.augmented_train, 256, shuffle=True, seed=0)
start, seen = time.perf_counter(), 0
for images, _ in loader:
    seen += len(images)
seconds = time.perf_counter() - start
del loader  # joins the workers, so their peak memory is counted below
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"images": seen, "seconds": seconds, "rss_mb": own, "worker_rss_mb": child}))
"""


def write_folder(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for label in range(CLASSES):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"class{i % CLASSES}" / f"{i}.png")


def read(root: Path, workers: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", READER, str(root), str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            root = Path(tmp) / f"folder{size}"
            write_folder(root, size)
            for workers in args.workers:
                result = read(root, workers)
                rows.append((size, workers, result))

    print("\nStreaming image folder (32x32 PNGs, crop_flip, batch 256, one epoch of train)")
    header = (
        f"{'images':>7} {'workers':>7} {'images/s':>9} {'vs 0 workers':>12} "
        f"{'peak RSS MB':>11} {'worker RSS MB':>13} {'in-memory copy MB':>17}"
    )
    print(header)
    print("-" * len(header))
    base = {size: r["images"] / r["seconds"] for size, w, r in rows if w == args.workers[0]}
    for size, workers, result in rows:
        speed = result["images"] / result["seconds"]
        copy_mb = size * 3 * SIDE * SIDE / 2**20
        worker_rss = f"{result['worker_rss_mb']:.0f}" if workers else "-"
        print(
            f"{size:>7} {workers:>7} {speed:>9.0f} {speed / base[size]:>11.2f}x "
            f"{result['rss_mb']:>11.0f} {worker_rss:>13} {copy_mb:>17.1f}"
        )
    small, large = min(args.sizes), max(args.sizes)
    for workers in args.workers:
        rss = {s: r["rss_mb"] for s, w, r in rows if w == workers}
        if small != large:
            print(
                f"peak RSS with {workers} workers: {rss[small]:.0f} MB at {small} images -> "
                f"{rss[large]:.0f} MB at {large} images ({rss[large] / rss[small]:.2f}x "
                f"for {large / small:.0f}x the images)"
            )


if __name__ == "__main__":
    main()
