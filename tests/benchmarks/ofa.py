"""Once-for-All on digits: extracted subnets vs the same subnets trained from scratch.

One elastic mbconv supernet is trained by progressive shrinking; for three latency budgets
(fractions of the way from the smallest to the largest subnet's measured CPU latency) the best
subnet is searched with the supernet's inherited validation accuracy (regularized evolution).
Each winner's test accuracy is then reported:

- inherited: extracted, BatchNorm recalibrated, no training;
- fine-tuned: inherited + ``--finetune`` epochs (lr 0.001);
- scratch, same epochs as the fine-tune: the same architecture from random init;
- scratch, full budget: from random init for as many epochs as the supernet trained in total
  (every phase counted, even though a shrinking step trains ``subnets_per_step`` subnets).

Scratch runs use the vision trial's training loop (AdamW lr 0.005, cosine, batch 64); each is
repeated over ``--seeds`` seeds (mean +- std).

nice -n 10 python tests/benchmarks/ofa.py [--full 10 --kernel 5 --depth 5 --expand 5 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", type=int, default=10)
    parser.add_argument("--kernel", type=int, default=5)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--expand", type=int, default=5)
    parser.add_argument("--finetune", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=40, help="evaluated per budget")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.03, 0.1, 0.4])
    parser.add_argument("--seeds", type=int, default=3, help="scratch runs per architecture")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    import torch
    from omegaconf import OmegaConf

    from nas_plugin.models.mbconv import build_mbconv
    from nas_plugin.supernets.elastic_mbconv import ElasticMBConv, ElasticSpace
    from nas_plugin.supernets.ofa_targets import SubnetEvaluator, resolve_budgets, search_budget
    from nas_plugin.supernets.ofa_training import (
        score_on_test,
        score_subnet,
        train_progressive_shrinking,
        wrap,
    )
    from nas_plugin.tasks.training import seed_everything
    from nas_plugin.tasks.vision import Preprocess, channel_stats, train
    from nas_plugin.tasks.vision_data import load_vision_data

    torch.set_num_threads(1)
    cfg = OmegaConf.load(REPO / "conf" / "ofa.yaml")
    task = OmegaConf.load(REPO / "conf" / "task" / "digits.yaml")
    model_cfg = OmegaConf.load(REPO / "conf" / "model" / "mbconv.yaml")
    epochs = {"full": args.full, "kernel": args.kernel, "depth": args.depth, "expand": args.expand}
    train_cfg = OmegaConf.merge(cfg.train, {"epochs": epochs})
    seed = 0
    data = load_vision_data(task, 1.0, seed)

    space = ElasticSpace(
        model_cfg, cfg.supernet.kernels, cfg.supernet.expansions, cfg.supernet.depths
    )
    torch.manual_seed(seed)
    supernet = ElasticMBConv(space, data.num_classes, data.in_chans)
    model = wrap(supernet, data, int(task.resolution))
    start = time.perf_counter()
    phase_seconds = train_progressive_shrinking(
        model, data, train_cfg, seed, lambda p, e, loss: _progress(f"{p} epoch {e}: {loss:.3f}")
    )
    supernet_seconds = time.perf_counter() - start
    total_epochs = sum(epochs.values())

    evaluate = SubnetEvaluator(model, data, int(train_cfg.bn_recalibration_images), seed)
    search_space = space.search_space()
    smallest = evaluate(search_space.encode(space.smallest())).metrics
    largest = evaluate(search_space.encode(space.largest())).metrics
    budgets = resolve_budgets(
        args.budgets, "fraction", smallest[evaluate.latency_key], largest[evaluate.latency_key]
    )
    strategy = OmegaConf.to_container(cfg.search.strategy)
    start = time.perf_counter()
    winners = [
        search_budget(
            search_space, evaluate, b, strategy, args.candidates, seed + i, evaluate.latency_key
        )
        for i, b in enumerate(budgets)
    ]
    search_seconds = time.perf_counter() - start
    _progress(f"search done: {len(evaluate.cache)} subnets in {search_seconds:.0f} s")

    mean, std = channel_stats(data.train)
    bn_images = int(train_cfg.bn_recalibration_images)

    def scratch(arch: dict, n_epochs: int, run_seed: int) -> tuple[float, float]:
        seed_everything(run_seed)
        net = build_mbconv(space.model_config(arch), data.num_classes, data.in_chans)
        net = torch.nn.Sequential(Preprocess(int(task.resolution), mean, std), net)
        run_cfg = OmegaConf.create(
            {
                "epochs": n_epochs,
                "batch_size": 64,
                "lr": 0.005,
                "weight_decay": 1e-4,
                "optimizer": "adamw",
                "bn_recalibration_images": bn_images,
            }
        )
        *_, seconds = train(net, data, run_cfg, run_seed)
        return score_on_test(net, data)["test_accuracy"], seconds

    rows = []
    for given, budget_ms, best in zip(args.budgets, budgets, winners, strict=True):
        if best is None:
            rows.append({"budget": given, "budget_ms": budget_ms, "error": "none within"})
            continue
        arch = dict(best.encoding)
        sub, _ = score_subnet(model, best.encoding, data, bn_images, seed)
        inherited = score_on_test(sub, data)["test_accuracy"]
        ft_cfg = OmegaConf.create(
            {
                "epochs": args.finetune,
                "batch_size": 64,
                "lr": 0.001,
                "weight_decay": 1e-4,
                "optimizer": "adamw",
                "bn_recalibration_images": bn_images,
            }
        )
        *_, ft_seconds = train(sub, data, ft_cfg, seed)
        finetuned = score_on_test(sub, data)["test_accuracy"]
        short = [scratch(arch, args.finetune, s) for s in range(args.seeds)]
        long = [scratch(arch, total_epochs, s) for s in range(args.seeds)]
        _progress(f"budget {given}: inherited {inherited:.3f} fine-tuned {finetuned:.3f}")
        rows.append(
            {
                "budget": given,
                "budget_ms": budget_ms,
                "arch": arch,
                "latency_ms": best.metrics[evaluate.latency_key],
                "params": best.metrics["params"],
                "inherited_val": best.metrics["val_accuracy"],
                "inherited_test": inherited,
                "finetuned_test": finetuned,
                "finetune_seconds": ft_seconds,
                "scratch_short": [a for a, _ in short],
                "scratch_long": [a for a, _ in long],
                "scratch_long_seconds": statistics.mean(s for _, s in long),
            }
        )

    print(
        f"\nOFA on digits: supernet {epochs} = {total_epochs} epochs, "
        f"{cfg.train.subnets_per_step} subnets/step, {supernet_seconds:.0f} s "
        f"({', '.join(f'{k} {v:.0f}s' for k, v in phase_seconds.items())}); search "
        f"{len(evaluate.cache)} subnets in {search_seconds:.0f} s; 1 thread, CPU latency = "
        f"min of 20 forwards at batch 1 (smallest {smallest[evaluate.latency_key]:.2f} ms, largest "
        f"{largest[evaluate.latency_key]:.2f} ms, largest inherited val "
        f"{largest['val_accuracy']:.3f}). Test accuracy on 270 digits:\n"
    )
    print(
        f"| budget | ms | subnet latency ms | params | inherited | + {args.finetune} ep "
        f"fine-tune | scratch {args.finetune} ep | scratch {total_epochs} ep |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        if "error" in row:
            print(f"| {row['budget']} | {row['budget_ms']:.2f} | none within budget |")
            continue
        print(
            f"| {row['budget']} | {row['budget_ms']:.2f} | {row['latency_ms']:.2f} | "
            f"{int(row['params']):,} | {row['inherited_test']:.3f} | "
            f"{row['finetuned_test']:.3f} | {_ms(row['scratch_short'])} | "
            f"{_ms(row['scratch_long'])} |"
        )
    print()
    for row in rows:
        if "arch" in row:
            compact = {k.split("stages.")[1]: v for k, v in row["arch"].items()}
            print(f"budget {row['budget']}: {compact}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


if __name__ == "__main__":
    main()
