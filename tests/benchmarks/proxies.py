"""Zero-cost proxies against trained accuracy on NAS-Bench-201 cells, and what a pre-screen saves.

    python tests/benchmarks/proxies.py [--archs 200] [--workers 2] [--search-seeds 50]
                                       [--epochs 3] [--train-seeds 3] [--set KEY=VALUE ...]

1. **Train** ``--archs`` distinct random NB201 cells on digits, in process: each config is
   composed from ``conf/nb201.yaml`` with Hydra's compose API and handed to
   ``run_vision_trial`` (no sweep, no MLflow). Budget (``BUDGET``; ``--set`` changes or adds
   an override): C=16 channels, N=1 cell per stage, the digits at their native 8x8 resolution,
   ``task.val_fraction=0.5`` (899 val, 628 train, 270 test images), 3 epochs of AdamW (lr
   0.002, batch 64), BatchNorm re-estimated on 512 images; a cell's accuracy is its val
   accuracy averaged over ``TRAIN_SEEDS`` (3) training seeds, about 1.3 s a run on one core.
   The budget was chosen for a ground truth that ranks cells reproducibly, judged by the
   "noise ceiling" (rho between two training seeds' rankings of the same cells) alone, never
   by the proxies' correlations. Ceilings on the first 40 cells, 2 seeds each (all 3 epochs,
   lr 0.005, C=8, 270 val images unless said): as before 0.12 (0.40 on all 200 with 3 seeds,
   193 of 200 cells above 0.95); 1 epoch 0.24; 899 val images 0.24, with 1 epoch 0.26, with
   lr 0.002 0.31; C=16 0.06; C=16 and 899 val images 0.61, with lr 0.002 0.66 (this budget;
   0.81 on the first 80 cells, where the earlier budget has 0.38), with 1 epoch 0.45, lr 0.002
   and 6 epochs 0.60 at twice the cost; C=32 and 899 val images 0.52 at twice the cost.
   More val images resolve the small accuracy differences, and the wider network trains
   more reproducibly. Results are cached in a JSON file in the temp dir, keyed by the budget,
   so a rerun only redoes the proxy step. Printed: the noise ceiling, the reliability of the
   seeds' mean, and how saturated the accuracies are.
2. **Score** every cell's untrained network with each proxy, as ``estimator=zero_cost`` does
   (the vision factory, one batch of 64 training images, seed 0, one torch thread), and report
   Spearman's rho and Kendall's tau with the trained accuracy, CPU and wall seconds per
   architecture, and for reference rho with the packaged NB201 CIFAR-10 table's accuracy of
   the same cells (the published anchors are measured against that table).
3. **Pre-screen**: trials that regularized evolution (shipped options) needs to train a cell in
   the top 5% of the trained set, with and without a pre-screen that asks K=10 candidates per
   step and trains only the proxy's favourite. The trained set is the table: a candidate the
   strategy proposes in the full space stands for its nearest trained cell (fewest differing
   edges, ties broken at random), whose accuracy and proxy scores it gets (a 1-nearest-
   neighbour surrogate of the space); a trial is the first training of a cell (a cell met
   again is looked up for free). Mean ± std over ``--search-seeds`` seeds.
4. Optionally (``--anchor-cells N``, about 4 s a cell), a check of the implementations against
   the published NB201 CIFAR-10 correlations: N cells at the benchmark's own size (C=16, N=5,
   3 x 32 x 32 inputs, 10 classes) scored on one batch of random CIFAR-shaped images, against
   the table's CIFAR-10 accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nas_plugin import config_dir
from nas_plugin.bench.harness import default_options
from nas_plugin.space import nb201

BUDGET = {
    "model.channels": 16,
    "model.cells_per_stage": 1,
    "task.resolution": 8,
    "task.val_fraction": 0.5,
    "train.epochs": 3,
    "train.batch_size": 64,
    "train.lr": 0.002,
    "train.bn_recalibration_images": 512,
    "hardware.measure": False,
    "log_model": False,
}
TRAIN_SEEDS = (0, 1, 2)
PROXY_BATCH, PROXY_SEED = 64, 0
TOP_FRACTION = 0.05
K_CANDIDATES = 10
LIVE_ACCURACY = 0.2  # digits has 10 classes: a cell that learns nothing scores about 0.1
MAX_ASKS = 20_000  # per simulated search; a search that has not hit the top by then fails


# -- 1. training -----------------------------------------------------------------------------


def compose(arch: str, seed: int = 0, budget: dict[str, Any] | None = None) -> Any:
    """The trial config of cell ``arch`` under ``budget`` (``BUDGET``), as the pipeline
    composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    ops = nb201.from_arch_str(arch)
    budget = BUDGET if budget is None else budget
    overrides = [f"{key}={value}" for key, value in budget.items()] + [f"seed={seed}"]
    overrides += [f"model.cell.{key}={op}" for key, op in zip(nb201.EDGE_KEYS, ops, strict=True)]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return hydra_compose("nb201", overrides=overrides)


def train_one(job: tuple[str, int, dict[str, Any]]) -> tuple[str, dict[str, float]]:
    from nas_plugin.tasks.vision import run_vision_trial

    # The budget travels with the job: spawned workers do not see main()'s settings.
    arch, seed, budget = job
    result = run_vision_trial(compose(arch, seed, budget))
    keep = ("val_accuracy", "val_loss", "test_accuracy", "train_seconds", "params")
    return f"{arch}|{seed}", {key: float(result[key]) for key in keep}


def cache_path() -> Path:
    # The seeds' count stays out of the key (each run is cached by its seed): more seeds for
    # the same budget reuse the runs already trained.
    key = json.dumps({"budget": BUDGET, "seeds": [0, 1, 2]}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "nas_plugin_bench" / f"proxies-{digest}.json"


def train_all(archs: Sequence[str], workers: int) -> dict[str, list[dict[str, float]]]:
    """``{arch: [metrics of each training seed]}``, trained or read from the cache."""
    path = cache_path()
    results: dict[str, dict[str, float]] = {}
    if path.is_file():
        results = json.loads(path.read_text())["results"]
    jobs = [
        (a, seed, BUDGET) for seed in TRAIN_SEEDS for a in archs if f"{a}|{seed}" not in results
    ]
    print(f"training: {len(results)} runs cached in {path}, {len(jobs)} to run")
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # spawn: fresh workers, one torch thread each (run_vision_trial sets it from the config).
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for done, (key, metrics) in enumerate(pool.imap_unordered(train_one, jobs), start=1):
            results[key] = metrics
            # Saved after every run: an interrupted benchmark resumes where it stopped.
            path.write_text(json.dumps({"budget": BUDGET, "results": results}))
            if done % 100 == 0 or done == len(jobs):
                print(f"  {done}/{len(jobs)} trained, {time.perf_counter() - start:.0f} s")
    return {a: [results[f"{a}|{seed}"] for seed in TRAIN_SEEDS] for a in archs}


def noise_ceiling(archs: Sequence[str], runs: dict[str, list[dict[str, float]]]) -> str:
    """How well the training seeds agree on the ranking: no proxy can rank the cells much
    better than training itself does."""
    seeds = len(TRAIN_SEEDS)
    if seeds < 2:
        return "noise ceiling: needs at least 2 training seeds"
    per_seed = [[runs[a][i]["val_accuracy"] for a in archs] for i in range(seeds)]
    pairs = [
        correlations(per_seed[i], per_seed[j])[0] for i in range(seeds) for j in range(i + 1, seeds)
    ]
    single = statistics.mean(pairs)
    # Spearman-Brown: the reliability of the mean of `seeds` runs, from one run's.
    mean = seeds * single / (1 + (seeds - 1) * single)
    return (
        f"noise ceiling: rho between two seeds' rankings {single:.3f} (pairs "
        f"{', '.join(f'{p:.3f}' for p in pairs)}); the mean of {seeds} seeds ~{mean:.3f} "
        "(Spearman-Brown)"
    )


def saturation(accuracy: Sequence[float]) -> str:
    values = np.asarray(accuracy)
    best = values.max()
    return (
        f"saturation: {np.mean(values > 0.95):.0%} of cells above 0.95, "
        f"{np.mean(values >= best - 0.02):.0%} within 2 points of the best"
    )


# -- 2. proxies ------------------------------------------------------------------------------


def score_all(archs: Sequence[str], proxies: Sequence[str]) -> tuple[list[dict], dict[str, float]]:
    """(per-cell scores, CPU seconds per cell of each proxy and of building model + batch)."""
    import torch

    from nas_plugin.proxies import score
    from nas_plugin.tasks.vision_proxy import proxy_inputs

    torch.set_num_threads(1)
    seconds = dict.fromkeys([*proxies, "factory"], 0.0)
    wall = dict.fromkeys(proxies, 0.0)
    scores = []
    for arch in archs:
        cfg = compose(arch, TRAIN_SEEDS[0])
        started = time.thread_time()
        model, inputs, targets = proxy_inputs(cfg, PROXY_BATCH, 1, PROXY_SEED)
        seconds["factory"] += time.thread_time() - started
        row = {}
        for proxy in proxies:
            started, wall_start = time.thread_time(), time.perf_counter()
            row.update(score(model, inputs, targets, [proxy], seed=PROXY_SEED))
            seconds[proxy] += time.thread_time() - started
            wall[proxy] += time.perf_counter() - wall_start
        scores.append(row)
    per_arch = {k: v / len(archs) for k, v in seconds.items()}
    per_arch.update({f"{k}_wall": v / len(archs) for k, v in wall.items()})
    return scores, per_arch


def correlations(values: Sequence[float], truth: Sequence[float]) -> tuple[float, float]:
    """(Spearman rho, Kendall tau), a NaN score ranking last (as the report computes them)."""
    from nas_plugin.proxies.report import rank_correlation

    rho, _, tau, _ = rank_correlation(values, truth)
    return rho, tau


# -- 3. pre-screen ---------------------------------------------------------------------------


class TrainedSet:
    """The trained cells as a table; any cell maps to its nearest trained one."""

    def __init__(self, archs: Sequence[str], accuracy: Sequence[float]) -> None:
        self.archs = list(archs)
        self.accuracy = np.asarray(accuracy, dtype=float)
        ops = [nb201.from_arch_str(a) for a in archs]
        self.codes = np.array([[nb201.OPS.index(op) for op in cell] for cell in ops])
        count = max(1, math.ceil(TOP_FRACTION * len(archs)))
        threshold = np.sort(self.accuracy)[::-1][count - 1]
        self.top = {i for i, acc in enumerate(self.accuracy) if acc >= threshold}

    def nearest(self, encoding: Any, rng: random.Random) -> int:
        values = dict(encoding)
        code = np.array([nb201.OPS.index(values[f"model.cell.{k}"]) for k in nb201.EDGE_KEYS])
        distance = (self.codes != code).sum(axis=1)
        return rng.choice(np.flatnonzero(distance == distance.min()).tolist())


def trials_to_top(
    table: TrainedSet,
    seed: int,
    prescreen: Callable[[list[int]], list[float]] | None,
) -> int:
    """Trained cells until one in the top 5%; ``prescreen`` scores K candidates per step."""
    from nas_plugin.strategies import RegularizedEvolution

    strategy = RegularizedEvolution(
        nb201.search_space(prefix="model.cell"), seed=seed, **default_options("evolution")
    )
    rng = random.Random(seed)
    trained: set[int] = set()
    for _ in range(MAX_ASKS):
        asks = K_CANDIDATES if prescreen is not None else 1
        candidates = [c for c in (strategy.ask() for _ in range(asks)) if c is not None]
        if not candidates:
            break
        picks = [table.nearest(c, rng) for c in candidates]
        chosen = 0
        if prescreen is not None:
            values = prescreen(picks)
            # The proxy's favourite among cells not trained yet (all trained: the favourite).
            fresh = [i for i, p in enumerate(picks) if p not in trained] or list(range(len(picks)))
            chosen = max(fresh, key=lambda i: values[i])
        pick = picks[chosen]
        trained.add(pick)
        if pick in table.top:
            return len(trained)
        strategy.tell(candidates[chosen], float(table.accuracy[pick]))
    return len(table.archs)  # never reached the top: as bad as training everything


def prescreen_table(
    table: TrainedSet, scores: list[dict], proxies: Sequence[str], seeds: int
) -> list[tuple[str, float, float, float]]:
    from nas_plugin.proxies import DEFAULT_ENSEMBLE, ensemble_ranks

    def by_proxy(proxy: str) -> Callable[[list[int]], list[float]]:
        return lambda picks: [scores[i][proxy] for i in picks]

    def by_ensemble(picks: list[int]) -> list[float]:
        return ensemble_ranks([scores[i] for i in picks], DEFAULT_ENSEMBLE)

    arms: list[tuple[str, Callable[[list[int]], list[float]] | None]] = [("none", None)]
    arms += [(proxy, by_proxy(proxy)) for proxy in proxies]
    arms.append(("ensemble", by_ensemble))
    rows = []
    for name, prescreen in arms:
        counts = [trials_to_top(table, seed, prescreen) for seed in range(seeds)]
        rows.append(
            (name, statistics.mean(counts), statistics.stdev(counts), statistics.median(counts))
        )
    return rows


# -- 4. implementation check against published anchors ---------------------------------


def anchor_check(count: int, proxies: Sequence[str]) -> None:
    import torch

    from nas_plugin.benchmark_table import BenchmarkTable
    from nas_plugin.models.nb201 import NB201Network
    from nas_plugin.proxies import score

    torch.set_num_threads(1)
    archs = random.Random(1).sample(list(nb201.all_arch_strs()), count)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(PROXY_BATCH, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (PROXY_BATCH,), generator=generator)
    scores = []
    for arch in archs:
        torch.manual_seed(0)
        model = NB201Network(nb201.from_arch_str(arch), 16, 5, num_classes=10, in_chans=3)
        scores.append(score(model, images, labels, proxies, seed=PROXY_SEED))
    table = BenchmarkTable.load("nb201_cifar10")
    cifar = [table.lookup(a)["cifar10_test_acc"] for a in archs]
    print(f"\nanchor check: {count} cells at C=16, N=5 on random 3x32x32 images vs the table")
    for proxy in proxies:
        print(f"{proxy:<10} {correlations([s[proxy] for s in scores], cifar)[0]:>7.3f}")


# -- report ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    global TRAIN_SEEDS  # --train-seeds sets it (the budget travels with each training job)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", type=int, default=200, help="cells to train (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="training processes")
    parser.add_argument("--search-seeds", type=int, default=50, help="pre-screen simulations")
    parser.add_argument(
        "--anchor-cells", type=int, default=0, help="cells for the anchor check (default: off)"
    )
    parser.add_argument(
        "--epochs", type=int, default=BUDGET["train.epochs"], help="training epochs per run"
    )
    parser.add_argument(
        "--train-seeds", type=int, default=len(TRAIN_SEEDS), help="training runs per cell"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change or add a training-budget override, e.g. model.channels=8 (repeatable)",
    )
    args = parser.parse_args(argv)
    BUDGET["train.epochs"] = args.epochs
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set {item!r}: expected KEY=VALUE, e.g. model.channels=8")
        BUDGET[key] = yaml.safe_load(value)  # typed as the YAML would be: 0.5, 16, true
    TRAIN_SEEDS = tuple(range(args.train_seeds))

    from nas_plugin.benchmark_table import BenchmarkTable
    from nas_plugin.proxies import DEFAULT_ENSEMBLE, PROXIES, ensemble_ranks

    started = time.perf_counter()
    archs = random.Random(0).sample(list(nb201.all_arch_strs()), args.archs)
    runs = train_all(archs, args.workers)
    accuracy = [statistics.mean(r["val_accuracy"] for r in runs[a]) for a in archs]
    seconds = statistics.mean(r["train_seconds"] for a in archs for r in runs[a])
    print(f"budget: {json.dumps(BUDGET)}, mean over training seeds {list(TRAIN_SEEDS)}")
    print(f"  {seconds:.2f} s of training per run, {len(TRAIN_SEEDS)} runs per cell")
    print(
        f"  mean val accuracy: min {min(accuracy):.3f}, median {statistics.median(accuracy):.3f},"
        f" max {max(accuracy):.3f}; {saturation(accuracy)}"
    )
    print(f"  {noise_ceiling(archs, runs)}")
    # Cells that learn nothing (no path through the cell: chance accuracy) are easy to rank.
    live = [i for i, acc in enumerate(accuracy) if acc >= LIVE_ACCURACY]
    print(f"  {len(live)} cells learn (mean val accuracy >= {LIVE_ACCURACY}): 'rho live' below")

    proxies = list(PROXIES)
    scores, per_arch = score_all(archs, proxies)
    table = BenchmarkTable.load("nb201_cifar10")
    cifar = [table.lookup(a)["cifar10_test_acc"] for a in archs]
    print(f"  rho(trained accuracy, NB201 CIFAR-10 table) = {correlations(accuracy, cifar)[0]:.3f}")
    print(f"  building a model and its batch: {per_arch['factory']:.3f} CPU s per cell\n")

    header = (
        f"{'proxy':<10} {'rho':>7} {'tau':>7} {'rho live':>8} {'rho C10':>8} {'CPU s':>7}"
        f" {'wall s':>7}"
    )
    print(header + "\n" + "-" * len(header))
    ensemble = ensemble_ranks(scores, DEFAULT_ENSEMBLE)
    for name in [*proxies, "ensemble"]:
        values = ensemble if name == "ensemble" else [s[name] for s in scores]
        members = DEFAULT_ENSEMBLE if name == "ensemble" else (name,)
        rho, tau = correlations(values, accuracy)
        rho_c10, _ = correlations(values, cifar)
        rho_live, _ = correlations([values[i] for i in live], [accuracy[i] for i in live])
        cpu = sum(per_arch[m] for m in members)
        wall = sum(per_arch[f"{m}_wall"] for m in members)
        print(
            f"{name:<10} {rho:>7.3f} {tau:>7.3f} {rho_live:>8.3f} {rho_c10:>8.3f} {cpu:>7.3f}"
            f" {wall:>7.3f}"
        )
    print(f"(ensemble: mean rank of {', '.join(DEFAULT_ENSEMBLE)}; seconds per architecture)")

    print(
        f"\npre-screen: trained cells until one in the top {TOP_FRACTION:.0%} of the "
        f"{len(archs)}, regularized evolution {default_options('evolution')}, K="
        f"{K_CANDIDATES}, {args.search_seeds} seeds"
    )
    trained_set = TrainedSet(archs, accuracy)
    rows = prescreen_table(trained_set, scores, proxies, args.search_seeds)
    baseline = rows[0][1]
    print(f"{'pre-screen':<10} {'mean':>7} {'std':>7} {'median':>7} {'fewer':>7}")
    for name, mean, std, median in rows:
        print(f"{name:<10} {mean:>7.1f} {std:>7.1f} {median:>7.1f} {baseline / mean:>6.2f}x")
    if args.anchor_cells:
        anchor_check(args.anchor_cells, proxies)
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
