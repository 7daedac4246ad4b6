"""HAT on the embedded text set: the latency predictor's error and inherited vs stand-alone ranking.

1. Sandwich-train the elastic transformer supernet of conf/hat.yaml (``--epochs``).
2. Time ``--latency-samples`` distinct sub-transformers on this machine (extracted BERTs, one
   text of ``model.max_length`` tokens, batch 1, 1 thread), fit the MLP latency predictor on
   75 % of them, report its held-out RMSE and the fraction within +-10 %.
3. Score ``--archs`` sub-transformers (the smallest, the largest and random ones) on inherited
   weights, train each from scratch with the text task (``--standalone-epochs``), and report
   Kendall's tau between the two rankings.

    python tests/benchmarks/hat.py                 # ~5 min on 2 CPU cores
    python tests/benchmarks/hat.py --distill 1.0   # with KL distillation from the largest
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from scipy.stats import kendalltau, spearmanr

from nas_plugin.supernets.elastic_transformer import SandwichSettings, train_sandwich
from nas_plugin.supernets.hat import (
    build_supernet,
    fit_latency_predictor,
    inherited_scores,
    load_text_bundle,
    space_of,
)
from nas_plugin.tasks.text import run_text_trial

CONF = Path(__file__).resolve().parents[2] / "conf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="supernet sandwich epochs")
    parser.add_argument("--distill", type=float, default=0.0)
    parser.add_argument("--archs", type=int, default=20)
    parser.add_argument("--standalone-epochs", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-ranking", action="store_true", help="only the latency predictor")
    parser.add_argument("--size", type=int, default=3000, help="embedded reviews")
    args = parser.parse_args()
    torch.set_num_threads(1)
    common = [f"task.embedded.size={args.size}", "seed=0"]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "hat",
            [
                *common,
                f"train.epochs={args.epochs}",
                f"train.distill={args.distill}",
                f"latency.samples={args.latency_samples}",
                f"latency.repeats={args.repeats}",
                f"latency.rounds={args.rounds}",
                "latency.holdout=0.25",
            ],
        )
        text_cfg = compose(
            "text",
            [
                *common,
                f"train.epochs={args.standalone_epochs}",
                "hardware.measure=false",
                "log_model=false",
            ],
        )
    space = space_of(cfg)
    bundle = load_text_bundle(cfg.task, 1.0, 0, int(space.base["max_length"]))
    torch.manual_seed(0)
    supernet = build_supernet(space, bundle)
    if not args.skip_ranking:  # latency does not depend on the weights
        settings = SandwichSettings.of(dict(cfg.train))
        trained = train_sandwich(supernet, bundle.splits["train"], bundle.pad_id, settings, 0)
        print(
            f"supernet: {args.epochs} sandwich epochs (distill {args.distill}) in "
            f"{trained['supernet_train_seconds']:.0f} s, largest's final loss "
            f"{trained['supernet_train_loss']:.3f}"
        )

    start = time.perf_counter()
    _, error, rows = fit_latency_predictor(supernet, cfg, 0)
    ms = [r["latency_ms"] for r in rows]
    print(
        f"\nlatency predictor ({int(error['train_samples'])} train / "
        f"{int(error['heldout_samples'])} held-out sub-transformers, measured in "
        f"{time.perf_counter() - start:.0f} s; latencies {min(ms):.2f}-{max(ms):.2f} ms)"
    )
    print("| held-out RMSE (ms) | relative RMSE | within +-10 % |")
    print("|---|---|---|")
    print(
        f"| {error['rmse_ms']:.3f} | {error['relative_rmse']:.3f} | {error['within_10pct']:.2f} |"
    )

    if args.skip_ranking:
        return
    pool = space.all_values()
    random.Random(1).shuffle(pool)
    ends = [space.smallest(), space.largest()]
    chosen = ends + [v for v in pool if v not in ends][: args.archs - 2]
    inherited, standalone = [], []
    print(f"\n{len(chosen)} sub-transformers: inherited vs stand-alone val accuracy")
    print("| layers | hidden | heads | ffn | inherited | stand-alone |")
    print("|---|---|---|---|---|---|")
    start = time.perf_counter()
    for values in chosen:
        arch = space.arch_of(values)
        inherited.append(inherited_scores(supernet, values, bundle)["accuracy"])
        trial_cfg = text_cfg.copy()
        for key, value in space.model_config(values).items():
            trial_cfg.model[key] = value
        standalone.append(run_text_trial(trial_cfg)["val_accuracy"])
        print(
            f"| {arch.num_layers} | {arch.hidden_size} | {arch.num_heads} | "
            f"{arch.intermediate_size} | {inherited[-1]:.3f} | {standalone[-1]:.3f} |"
        )
    tau = kendalltau(inherited, standalone).statistic
    rho = spearmanr(inherited, standalone).statistic
    print(
        f"\nKendall tau {tau:.3f}, Spearman {rho:.3f} over {len(chosen)} sub-transformers "
        f"(stand-alone: {args.standalone_epochs} epochs each, "
        f"{time.perf_counter() - start:.0f} s in all)"
    )


if __name__ == "__main__":
    main()
