"""estimator=supernet on the mbconv space: cost and ranking quality of inherited weights.

On digits, with the stock mbconv search space (conf/plugin/hydra/sweeper/search_space/mbconv.yaml)
and the estimator's defaults (conf/plugin/hydra/sweeper/estimator/supernet.yaml):

1. the elastic supernet of the space is trained once by progressive shrinking, exactly as the
   first trial of a sweep trains it (wall time per phase);
2. ``--archs`` random candidates of the space (seeded) are scored as every later trial scores
   them: extracted, BatchNorm re-estimated on 512 training images, validation accuracy (wall
   time per candidate);
3. the same candidates are trained stand-alone as a trial of the demo sweep trains them
   (``run_vision_trial`` with conf/vision.yaml: 3 epochs, hardware measured, no model logged);
4. Kendall tau and Spearman rho between inherited and stand-alone validation accuracy (and
   Kendall tau after ``--finetune-steps`` fine-tuning steps per candidate, as the estimator's
   ``finetune_steps`` does).

One torch thread; wall and CPU seconds (CPU time is the robust one on a shared machine).

nice -n 10 python tests/benchmarks/elastic_supernet.py [--archs 20]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--finetune-steps", type=int, default=20, help="also scored after this many steps"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from scipy.stats import kendalltau, spearmanr
    from torch import nn

    from nas_plugin.estimators import make_estimator
    from nas_plugin.oneshot.data import vision_data
    from nas_plugin.oneshot.spos import score_inherited
    from nas_plugin.space import SearchSpace
    from nas_plugin.supernets.elastic_mbconv import ElasticMBConv, ElasticSpace
    from nas_plugin.supernets.ofa_training import train_progressive_shrinking
    from nas_plugin.sweep.plan import format_value
    from nas_plugin.tasks.vision import run_vision_trial
    from nas_plugin.tasks.vision_data import task_key

    torch.set_num_threads(1)
    conf = REPO / "conf"
    params = OmegaConf.to_container(
        OmegaConf.load(conf / "plugin/hydra/sweeper/search_space/mbconv.yaml")
    )["params"]
    options = OmegaConf.to_container(
        OmegaConf.load(conf / "plugin/hydra/sweeper/estimator/supernet.yaml")
    )
    estimator = make_estimator(options)
    with initialize_config_dir(str(conf), version_base="1.3"):
        base = compose("vision", overrides=["log_model=false"])
    space = SearchSpace.from_dict(params)
    prepared = estimator.prepare(space, base)
    elastic = ElasticSpace.from_choices(prepared["base_model"], prepared["choices"])

    data, preprocess = vision_data(task_key(base.task), 1.0, estimator.seed)
    torch.manual_seed(estimator.seed)
    supernet = ElasticMBConv(elastic, data.num_classes, data.in_chans, estimator.kernel_transform)
    start, cpu = time.perf_counter(), time.process_time()
    phases = train_progressive_shrinking(
        nn.Sequential(preprocess, supernet),
        data,
        estimator.shrinking_settings(),
        estimator.seed,
    )
    supernet_seconds = time.perf_counter() - start
    supernet_cpu = time.process_time() - cpu
    supernet.eval()
    print(f"supernet {estimator.phase_epochs}: {supernet_seconds:.1f} s {phases}", flush=True)

    rng = random.Random(args.seed)
    rows = []
    for index in range(args.archs):
        arch = space.decode(space.sample(rng))
        start, cpu = time.perf_counter(), time.process_time()
        model = nn.Sequential(preprocess, supernet.extract(arch)).eval()
        inherited = score_inherited(model, data, estimator.seed, bn_images=estimator.bn_images)
        inherited_seconds = time.perf_counter() - start
        inherited_cpu = time.process_time() - cpu
        start = time.perf_counter()
        tuned = nn.Sequential(preprocess, supernet.extract(arch))
        finetuned = score_inherited(
            tuned,
            data,
            estimator.seed,
            finetune_steps=args.finetune_steps,
            finetune_lr=estimator.finetune_lr,
            batch_size=estimator.batch_size,
            bn_images=estimator.bn_images,
        )
        finetuned_seconds = time.perf_counter() - start
        overrides = [f"{k}={format_value(v)}" for k, v in arch.items()]
        with initialize_config_dir(str(conf), version_base="1.3"):
            cfg = compose("vision", overrides=["log_model=false", *overrides])
        start, cpu = time.perf_counter(), time.process_time()
        trained = run_vision_trial(cfg)
        trained_seconds = time.perf_counter() - start
        trained_cpu = time.process_time() - cpu
        row = {
            "arch": arch,
            "inherited_val_accuracy": inherited["val_accuracy"],
            "inherited_seconds": inherited_seconds,
            "inherited_cpu_seconds": inherited_cpu,
            "finetuned_val_accuracy": finetuned["val_accuracy"],
            "finetuned_seconds": finetuned_seconds,
            "standalone_val_accuracy": trained["val_accuracy"],
            "standalone_seconds": trained_seconds,
            "standalone_cpu_seconds": trained_cpu,
            "standalone_train_seconds": trained["train_seconds"],
            "params": inherited["params"],
        }
        rows.append(row)
        print(
            f"{index:2d} inherited {row['inherited_val_accuracy']:.4f} "
            f"({inherited_seconds:.2f} s)  fine-tuned {row['finetuned_val_accuracy']:.4f} "
            f"({finetuned_seconds:.2f} s)  stand-alone {row['standalone_val_accuracy']:.4f} "
            f"({trained_seconds:.1f} s)",
            flush=True,
        )
    inherited = [r["inherited_val_accuracy"] for r in rows]
    standalone = [r["standalone_val_accuracy"] for r in rows]
    tau, tau_p = kendalltau(inherited, standalone)
    rho, rho_p = spearmanr(inherited, standalone)
    finetuned = [r["finetuned_val_accuracy"] for r in rows]
    tau_ft, tau_ft_p = kendalltau(finetuned, standalone)
    summary = {
        "archs": len(rows),
        "supernet_seconds": supernet_seconds,
        "supernet_cpu_seconds": supernet_cpu,
        "phase_seconds": phases,
        "inherited_seconds_median": statistics.median(r["inherited_seconds"] for r in rows),
        "standalone_seconds_median": statistics.median(r["standalone_seconds"] for r in rows),
        "inherited_cpu_median": statistics.median(r["inherited_cpu_seconds"] for r in rows),
        "standalone_cpu_median": statistics.median(r["standalone_cpu_seconds"] for r in rows),
        "kendall_tau": tau,
        "kendall_p": tau_p,
        "spearman_rho": rho,
        "spearman_p": rho_p,
        "finetune_steps": args.finetune_steps,
        "finetuned_seconds_median": statistics.median(r["finetuned_seconds"] for r in rows),
        "finetuned_kendall_tau": tau_ft,
        "finetuned_kendall_p": tau_ft_p,
        "finetuned_mean": statistics.mean(finetuned),
        "inherited_mean": statistics.mean(inherited),
        "standalone_mean": statistics.mean(standalone),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
