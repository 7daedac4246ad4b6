"""Build ``nas_plugin/data/nb201_zero_cost.csv.gz``: zero-cost proxy scores of every NB201 cell.

The benchmark's zero-cost warm-up (``nas-plugin bench nb201 --proxy COL``) ranks a random pool
by a proxy before any query. NAS-Bench-201 ships no proxy scores, so this script computes them
with our own proxies (``nas_plugin.proxies``) on each untrained cell: C=16, N=1 (one cell per
stage, to keep the 15,625 networks cheap), one random 3x16x16 batch of 64 with seeded labels,
proxy seed 0. About 0.1 s a cell on one core::

    python -m nas_plugin.bench.zero_cost_table [--workers 2] [--out PATH]

Deterministic: the same torch version gives the same scores.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
import multiprocessing
from collections.abc import Sequence
from pathlib import Path

from nas_plugin.benchmark_table import DATA_DIR
from nas_plugin.space import nb201

PROXIES: tuple[str, ...] = ("synflow", "naswot")
OUT = DATA_DIR / "nb201_zero_cost.csv.gz"
CHANNELS, CELLS, SIDE, BATCH = 16, 1, 16, 64


def _score_chunk(archs: Sequence[str]) -> list[dict[str, float]]:
    import torch

    from nas_plugin.models.nb201 import NB201Network
    from nas_plugin.proxies import score

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, SIDE, SIDE, generator=generator)
    labels = torch.randint(0, 10, (BATCH,), generator=generator)
    rows = []
    for arch in archs:
        torch.manual_seed(0)  # the untrained weights: one draw per cell, the same every run
        model = NB201Network(nb201.from_arch_str(arch), CHANNELS, CELLS, num_classes=10)
        scores = score(model, images, labels, PROXIES, seed=0)
        rows.append({f"zc_{name}": value for name, value in scores.items()})
    return rows


def build(out: Path = OUT, workers: int = 1) -> Path:
    archs = list(nb201.all_arch_strs())
    chunks = [archs[i : i + 250] for i in range(0, len(archs), 250)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        scored = [row for chunk in pool.map(_score_chunk, chunks) for row in chunk]
    columns = ["arch_str", *(f"zc_{name}" for name in PROXIES)]
    with gzip.open(out, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for arch, row in zip(archs, scored, strict=True):
            values = [row[c] for c in columns[1:]]
            writer.writerow([arch, *(f"{v:.6g}" if math.isfinite(v) else "" for v in values)])
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    print(build(args.out, args.workers))


if __name__ == "__main__":
    main()
