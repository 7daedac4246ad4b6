"""Zero-cost proxies on the dense tasks: do they rank segmentation and detection networks?

python tests/benchmarks/dense_proxies.py [--task segmentation|detection|both] [--archs 24]
    [--seed 0] [extra overrides...]

Draws ``--archs`` architectures uniformly from the pipeline's search space (seeded), scores
each untrained network with every proxy (one minibatch of 64 training images, our factory
``nas_plugin.tasks.proxy_factory:proxy_inputs``, as ``estimator=zero_cost`` and the pre-screen
do), then trains it with the pipeline's own budget (``conf/segmentation.yaml``,
``conf/detection.yaml``) and reads its validation objective (``val_miou``, ``val_map_50``).

The table gives each proxy's Spearman rho and Kendall tau with the trained objective, and what
a pre-screen keeping the proxy's top quarter would have trained: the mean objective of that
quarter against the mean of all the networks (a random pick's expectation), and the best of it
against the best of all.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QUIET = ["log_model=false", "hardware.measure=false"]
TASKS = {
    "segmentation": ("autodeeplab", "val_miou"),
    "detection": ("spinenet", "val_map_50"),
}


def sample_archs(space_name: str, count: int, seed: int) -> list[list[str]]:
    """``count`` distinct architectures of the search space, as Hydra overrides."""
    from omegaconf import OmegaConf

    space_file = REPO / "conf" / "plugin" / "hydra" / "sweeper" / "search_space"
    params = OmegaConf.to_container(OmegaConf.load(space_file / f"{space_name}.yaml"))["params"]
    rng, seen, archs = random.Random(seed), set(), []
    while len(archs) < count:
        arch = tuple(f"{key}={rng.choice(values)}" for key, values in params.items())
        if arch not in seen:
            seen.add(arch)
            archs.append(list(arch))
    return archs


def measure(task: str, count: int, seed: int, extra: list[str]) -> tuple[list[dict], float]:
    from hydra import compose, initialize_config_dir

    from nas_plugin.proxies import PROXIES, score
    from nas_plugin.tasks.detection import run_detection_trial
    from nas_plugin.tasks.proxy_factory import proxy_inputs
    from nas_plugin.tasks.segmentation import run_segmentation_trial

    run_trial = run_segmentation_trial if task == "segmentation" else run_detection_trial
    space_name, objective = TASKS[task]
    rows, start = [], time.perf_counter()
    for arch in sample_archs(space_name, count, seed):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose(task, overrides=[*QUIET, *arch, *extra])
        model, inputs, targets = proxy_inputs(cfg, 64, 1, 0)
        scores = score(model, inputs, targets, list(PROXIES), seed=0)
        trained = run_trial(cfg)
        rows.append({**scores, "objective": trained[objective]})
        print(f"{task} {len(rows)}/{count}: {objective} {trained[objective]:.3f}", flush=True)
    return rows, time.perf_counter() - start


def table(task: str, rows: list[dict], wall: float) -> None:
    from scipy.stats import kendalltau, spearmanr

    from nas_plugin.proxies import PROXIES

    objective = TASKS[task][1]
    values = [r["objective"] for r in rows]
    quarter = max(1, len(rows) // 4)
    print(
        f"\n{task}: {len(rows)} architectures, {objective}: mean {statistics.mean(values):.3f}, "
        f"best {max(values):.3f}; {wall:.0f} s"
    )
    print(f"| proxy | Spearman rho | Kendall tau | top quarter mean {objective} | its best |")
    print("|---|---|---|---|---|")
    for name in PROXIES:
        proxy = [r[name] for r in rows]
        rho = spearmanr(proxy, values).statistic
        tau = kendalltau(proxy, values).statistic
        top = sorted(rows, key=lambda r: -r[name])[:quarter]
        kept = [r["objective"] for r in top]
        print(f"| {name} | {rho:.2f} | {tau:.2f} | {statistics.mean(kept):.3f} | {max(kept):.3f} |")
    print(f"| (all, random pick) | | | {statistics.mean(values):.3f} | {max(values):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=[*TASKS, "both"], default="both")
    parser.add_argument("--archs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args, extra = parser.parse_known_args()

    import torch

    torch.set_num_threads(1)
    for task in TASKS if args.task == "both" else [args.task]:
        rows, wall = measure(task, args.archs, args.seed, extra)
        table(task, rows, wall)


if __name__ == "__main__":
    main()
