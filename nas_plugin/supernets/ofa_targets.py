"""Hardware targets from one elastic supernet (the Once-for-All promise), logged to MLflow.

``run_ofa(cfg)`` (the app behind ``pipelines/ofa.py``, config ``conf/ofa.yaml``):

1. trains the elastic mbconv supernet by progressive shrinking on the task's data; the parent
   run gets the per-epoch loss and the supernet's weights as artifact ``supernet/supernet.pt``;
2. per latency budget, searches subnets with a strategy from ``nas_plugin.strategies``: each
   candidate is scored by its inherited validation accuracy (extracted, BatchNorm recalibrated)
   and its latency on ``train.device`` (``search.latency_stat``: the ``min`` or ``median`` of
   ``search.latency_repeats`` timed forwards at batch 1, each waited for on the device;
   ``min`` resists a busy machine's preemptions); a candidate over
   the budget scores ``-latency/budget`` (so the search climbs towards feasibility). The best
   candidate within the budget among all evaluated so far wins (scores are cached across
   budgets: inherited accuracy and latency do not depend on the budget);
3. per budget, a child run holds the winner (optionally fine-tuned), its metrics and its
   standalone timm model (``log_model``: a ``torch.export`` graph, no supernet code needed to
   load it), registered as its own version of ``mlflow.model_name`` with tags ``ofa.budget_ms``
   and ``ofa.budget``. A budget that no evaluated subnet meets is a FAILED child run with the
   reason; the other budgets go on.

Everything runs on the app's ``train.device`` at ``train.precision``
(:class:`~nas_plugin.hardware.device.Runtime`, tags ``runtime.*`` on the parent run; the
hardware target is that device, so budgets in ms are its milliseconds, timed in fp32). The
supernet artifact and the registered subnets are saved from the CPU and load on any machine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from torch import nn

from nas_plugin.hardware.cost import measure_cost
from nas_plugin.hardware.device import Runtime
from nas_plugin.oneshot.spos import ScoringBatches
from nas_plugin.space import Encoding, SearchSpace
from nas_plugin.strategies import make_strategy
from nas_plugin.supernets.elastic_mbconv import ElasticConfigError, ElasticMBConv, ElasticSpace
from nas_plugin.supernets.ofa_training import (
    phase_epochs,
    score_on_test,
    score_subnet,
    train_progressive_shrinking,
    wrap,
)
from nas_plugin.tasks.reporting import current_reporter, require_model_logging
from nas_plugin.tasks.training import set_threads
from nas_plugin.tasks.vision import evaluate as evaluate_model
from nas_plugin.tasks.vision import model_device as _device_of
from nas_plugin.tasks.vision import train
from nas_plugin.tasks.vision_data import VisionData, load_vision_data

log = logging.getLogger(__name__)

BUDGET_UNITS = ("ms", "fraction")
LATENCY_KEYS = {"min": "latency_min_ms", "median": "latency_ms"}
TAG_ROLE = "ofa.role"  # parent | budget
TAG_BUDGET_MS = "ofa.budget_ms"
TAG_BUDGET = "ofa.budget"
INPUT_EXAMPLE_SIZE = 4


@dataclass
class Evaluation:
    encoding: Encoding
    metrics: dict[str, float]  # val_accuracy, val_loss, latency_ms, params, flops, ...


@dataclass
class SubnetEvaluator:
    """Inherited accuracy + measured cost of subnets on ``runtime`` (default: the supernet's
    device, fp32), cached by encoding. The scoring batches are built once, for every subnet."""

    model: nn.Sequential
    data: VisionData
    bn_images: int
    seed: int
    latency_repeats: int = 20
    latency_warmup: int = 3
    latency_stat: str = "min"
    cache: dict[Encoding, Evaluation] = field(default_factory=dict)
    runtime: Runtime | None = None
    batches: ScoringBatches = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.runtime = self.runtime or Runtime(_device_of(self.model))
        self.batches = ScoringBatches.of(self.data, self.bn_images, self.seed)

    def __call__(self, encoding: Encoding) -> Evaluation:
        if encoding not in self.cache:
            sub, metrics = self.score(encoding)
            metrics.update(self.cost(sub))
            self.cache[encoding] = Evaluation(encoding, metrics)
        return self.cache[encoding]

    def score(self, encoding: Encoding) -> tuple[nn.Sequential, dict[str, float]]:
        """:func:`score_subnet` on this evaluator's runtime and batches."""
        return score_subnet(
            self.model,
            encoding,
            self.data,
            self.bn_images,
            self.seed,
            runtime=self.runtime,
            batches=self.batches,
        )

    def cost(self, model: nn.Module) -> dict[str, float]:
        """``measure_cost``'s params, flops, peak memory and median ``latency_ms``, plus the
        fastest of the same timed forwards, ``latency_min_ms``, on the device ``model`` is
        on."""
        metrics = measure_cost(model, self.data.image_shape, latency_repeats=1, warmup=0)
        timings = _timings_ms(
            model, self.data.image_shape, self.latency_repeats, self.latency_warmup
        )
        metrics.update(latency_ms=statistics.median(timings), latency_min_ms=min(timings))
        return metrics

    @property
    def latency_key(self) -> str:
        """The metric budgets are checked on."""
        return LATENCY_KEYS[self.latency_stat]


def resolve_budgets(
    budgets: Sequence[float], unit: str, smallest_ms: float, largest_ms: float
) -> list[float]:
    """Budgets in milliseconds; ``fraction`` budgets lie between the smallest subnet's latency
    (0) and the largest's (1), as measured on this machine."""
    if unit not in BUDGET_UNITS:
        raise ElasticConfigError(
            f"search.budget_unit = {unit!r} is not allowed: expected one of "
            f"{', '.join(BUDGET_UNITS)}"
        )
    if isinstance(budgets, str) or not isinstance(budgets, Sequence) or not budgets:
        raise ElasticConfigError(
            f"search.budgets = {budgets!r} is not allowed: expected a non-empty list"
        )
    for value in budgets:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ElasticConfigError(
                f"search.budgets contains {value!r}: expected numbers > 0 ({unit})"
            )
    if unit == "ms":
        return [float(b) for b in budgets]
    return [smallest_ms + float(b) * (largest_ms - smallest_ms) for b in budgets]


def search_budget(
    space: SearchSpace,
    evaluate: Callable[[Encoding], Evaluation],
    budget_ms: float,
    strategy_cfg: Mapping[str, Any],
    candidates: int,
    seed: int,
    latency_key: str = "latency_ms",
) -> Evaluation | None:
    """Search ``candidates`` subnets for ``budget_ms``; the best evaluation within it, if any."""
    strategy = make_strategy(strategy_cfg, space, seed)
    for _ in range(candidates):
        encoding = strategy.ask()
        if encoding is None:
            break
        result = evaluate(encoding)
        latency = result.metrics[latency_key]
        score = result.metrics["val_accuracy"] if latency <= budget_ms else -latency / budget_ms
        strategy.tell(encoding, score)
    cache = getattr(evaluate, "cache", {})
    pool = list(cache.values()) if cache else []
    feasible = [e for e in pool if e.metrics[latency_key] <= budget_ms]
    if not feasible:
        return None
    # Ties in accuracy (frequent on small validation sets): the faster one.
    return max(feasible, key=lambda e: (e.metrics["val_accuracy"], -e.metrics[latency_key]))


def check_config(cfg: DictConfig) -> None:
    """Every config error before the supernet trains (names the key, value, allowed)."""
    search = cfg.search
    phase_epochs(cfg.train.get("epochs"))
    resolve_budgets(list(search.budgets), str(search.budget_unit), 0.0, 1.0)
    if search.get("latency_stat", "min") not in LATENCY_KEYS:
        raise ElasticConfigError(
            f"search.latency_stat = {search.get('latency_stat')!r} is not allowed: expected one "
            f"of {', '.join(LATENCY_KEYS)}"
        )
    for key in ("candidates", "latency_repeats"):
        value = search.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ElasticConfigError(f"search.{key} = {value!r} is not allowed: expected >= 1")
    finetune = int(cfg.finetune.epochs)
    if finetune < 0:
        raise ElasticConfigError(f"finetune.epochs = {finetune} is not allowed: expected >= 0")
    if not str(cfg.mlflow.model_name or ""):
        raise ElasticConfigError("mlflow.model_name is empty: name the registered model")


def run_ofa(cfg: DictConfig) -> dict[str, Any]:
    """Train the supernet, find one subnet per budget, log and register them (see module doc).

    Returns ``{"parent_run_id", "versions": {budget_ms: version or None}}`` and the
    ``runtime.*`` it ran on (as tagged on the parent run). Run it under a reporter that logs
    models (``pipelines/ofa.py`` installs ``nas_plugin.tracking.reporter.mlflow_reporting``);
    without one it stops before training.
    """
    check_config(cfg)
    # Before any data or training: a device this machine lacks is a DeviceError here.
    runtime = dataclasses.replace(Runtime.from_config(cfg.train), compile=False)
    seed = int(cfg.seed)
    set_threads(cfg.train)
    torch.manual_seed(seed)
    data = load_vision_data(cfg.task, float(cfg.train.get("train_fraction", 1.0)), seed)
    choices = cfg.supernet
    space = ElasticSpace(cfg.model, choices.kernels, choices.expansions, choices.depths)
    supernet = ElasticMBConv(
        space, data.num_classes, data.in_chans, bool(choices.get("kernel_transform", True))
    )
    model = wrap(supernet, data, int(cfg.task.resolution))
    search_space = space.search_space()
    # Validate the strategy config now, not after training.
    make_strategy(OmegaConf.to_container(cfg.search.strategy), search_space, seed)
    require_model_logging("run_ofa (pipelines/ofa.py)")  # what it trains for

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_experiment(cfg.mlflow.experiment)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    versions: dict[float, str | None] = {}
    with mlflow.start_run(run_name=cfg.mlflow.get("run_name")) as parent:
        mlflow.set_tags({TAG_ROLE: "parent", **runtime.describe()})
        mlflow.log_params(_flat(OmegaConf.to_container(cfg, resolve=True)))
        mlflow.log_text(OmegaConf.to_yaml(cfg), "ofa_config.yaml")
        mlflow.log_dict(search_space.describe(), "search_space.json")

        def on_epoch(phase: str, epoch: int, loss: float) -> None:
            mlflow.log_metric("train_loss", loss, step=epoch)
            log.info("supernet epoch %d (%s): loss %.4f", epoch, phase, loss)

        seconds = train_progressive_shrinking(
            model, data, cfg.train, seed, on_epoch, runtime=runtime
        )
        mlflow.log_metrics({f"phase_seconds.{k}": v for k, v in seconds.items()})
        _log_supernet(supernet, cfg, data)

        bn_images = int(cfg.train.get("bn_recalibration_images", 1024))
        evaluate = SubnetEvaluator(
            model,
            data,
            bn_images,
            seed,
            int(cfg.search.latency_repeats),
            latency_stat=str(cfg.search.get("latency_stat", "min")),
            runtime=runtime,
        )
        ends = {"smallest": space.smallest(), "largest": space.largest()}
        for name, arch in ends.items():
            result = evaluate(search_space.encode(arch))
            mlflow.log_metrics({f"{name}.{k}": v for k, v in result.metrics.items()})
        budgets = resolve_budgets(
            list(cfg.search.budgets),
            str(cfg.search.budget_unit),
            evaluate(search_space.encode(ends["smallest"])).metrics[evaluate.latency_key],
            evaluate(search_space.encode(ends["largest"])).metrics[evaluate.latency_key],
        )
        rows = []
        for index, (given, budget_ms) in enumerate(zip(cfg.search.budgets, budgets, strict=True)):
            start = time.perf_counter()
            best = search_budget(
                search_space,
                evaluate,
                budget_ms,
                OmegaConf.to_container(cfg.search.strategy),
                int(cfg.search.candidates),
                seed + index,
                evaluate.latency_key,
            )
            search_seconds = time.perf_counter() - start
            version, row = _budget_run(
                cfg,
                client,
                model,
                data,
                evaluate,
                index,
                float(given),
                budget_ms,
                best,
                search_seconds,
                parent.info.run_id,
            )
            versions[budget_ms] = version
            rows.append(row)
        mlflow.log_metric("subnets_evaluated", len(evaluate.cache))
        mlflow.log_text(_table(rows), "budgets.csv")
        registered = [f"{cfg.mlflow.model_name}/{v}" for v in versions.values() if v]
        mlflow.set_tag("ofa.registered", ",".join(registered))
    return {"parent_run_id": parent.info.run_id, "versions": versions, **runtime.describe()}


def _budget_run(
    cfg: DictConfig,
    client: MlflowClient,
    model: nn.Sequential,
    data: VisionData,
    evaluate: SubnetEvaluator,
    index: int,
    given: float,
    budget_ms: float,
    best: Evaluation | None,
    search_seconds: float,
    parent_id: str,
) -> tuple[str | None, dict[str, Any]]:
    """One child run for one budget: the winner's metrics, model and registered version."""
    row: dict[str, Any] = {"budget": given, "budget_ms": budget_ms}
    name = f"budget-{index}-{budget_ms:.3f}ms"
    run = mlflow.start_run(run_name=name, nested=True)
    try:
        mlflow.set_tags(
            {TAG_ROLE: "budget", TAG_BUDGET_MS: repr(budget_ms), TAG_BUDGET: str(given)}
        )
        mlflow.log_params(
            {"budget": given, "budget_ms": budget_ms, "budget_unit": cfg.search.budget_unit}
        )
        mlflow.log_metric("search_seconds", search_seconds)
        if best is None:
            fastest = min(e.metrics[evaluate.latency_key] for e in evaluate.cache.values())
            raise RuntimeError(
                f"no subnet among the {len(evaluate.cache)} evaluated runs within "
                f"{budget_ms:.3f} ms on {evaluate.runtime.device} (the fastest took "
                f"{fastest:.3f} ms): raise "
                "the budget or search.candidates"
            )
        arch = {key: value for key, value in best.encoding}  # ints and floats only
        mlflow.log_params(arch)
        mlflow.log_dict(arch, "subnet/architecture.json")
        mlflow.log_metrics({f"inherited.{k}": v for k, v in best.metrics.items()})
        sub, _ = evaluate.score(best.encoding)
        runtime, batches = evaluate.runtime, evaluate.batches
        metrics = {
            "inherited_val_accuracy": best.metrics["val_accuracy"],
            # What the budget was checked on during the search.
            "search_latency_ms": best.metrics[evaluate.latency_key],
        }
        inherited = score_on_test(sub, data, runtime=runtime, batches=batches)
        metrics.update({f"inherited_{k}": v for k, v in inherited.items()})
        if int(cfg.finetune.epochs) > 0:
            train_cfg = OmegaConf.create(
                {
                    "epochs": int(cfg.finetune.epochs),
                    "lr": float(cfg.finetune.lr),
                    "batch_size": int(cfg.train.batch_size),
                    "weight_decay": float(cfg.train.get("weight_decay", 0.0)),
                    "optimizer": "adamw",
                    "bn_recalibration_images": evaluate.bn_images,
                }
            )
            *_, seconds = train(sub, data, train_cfg, evaluate.seed, runtime=runtime)
            metrics["finetune_seconds"] = seconds
        metrics.update(val_accuracy=evaluate_model(sub, batches.val, runtime=runtime)[1])
        metrics.update(score_on_test(sub, data, runtime=runtime, batches=batches))
        metrics.update(evaluate.cost(sub))  # re-measured: the registered model's own cost
        metrics["within_budget"] = float(metrics[evaluate.latency_key] <= budget_ms)
        mlflow.log_metrics(metrics)
        example = torch.stack([data.val[i][0] for i in range(INPUT_EXAMPLE_SIZE)])
        uri = current_reporter().log_image_model(sub, example)
        version = register_for_budget(
            client, cfg, uri, budget_ms, given, run.info.run_id, parent_id, arch, metrics, "ofa"
        )
        row.update(arch=json.dumps(arch), version=version, **metrics)
        log.info("budget %.3f ms: %s -> version %s", budget_ms, arch, version)
        mlflow.end_run()
        return version, row
    except Exception as err:  # recorded, never takes the other budgets down
        mlflow.set_tags({"nas.status": "failed", "nas.error": str(err)[:5000]})
        mlflow.log_text(traceback.format_exc(), "error.txt")
        mlflow.end_run(status="FAILED")
        log.warning("budget %.3f ms failed: %s", budget_ms, err)
        row.update(error=str(err))
        return None, row


@torch.no_grad()
def _timings_ms(
    model: nn.Module, input_shape: tuple[int, ...], repeats: int, warmup: int
) -> list[float]:
    """Wall times of single-image forwards in eval mode on the model's device, each waited for
    there (a CUDA forward returns before its kernels have run)."""
    where = Runtime(_device_of(model))  # for its synchronize()
    example = torch.rand((1, *input_shape), generator=torch.Generator().manual_seed(0))
    example = example.to(where.device)
    training = model.training
    model.eval()
    for _ in range(warmup):
        model(example)
    timings = []
    for _ in range(repeats):
        where.synchronize()
        start = time.perf_counter()
        model(example)
        where.synchronize()
        timings.append((time.perf_counter() - start) * 1000.0)
    model.train(training)
    return timings


def _log_supernet(supernet: ElasticMBConv, cfg: DictConfig, data: VisionData) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "supernet.pt"
        torch.save(
            {
                # From the CPU: the artifact loads on a machine without the training device.
                "state_dict": {k: v.cpu() for k, v in supernet.state_dict().items()},
                "model": OmegaConf.to_container(cfg.model, resolve=True),
                "supernet": OmegaConf.to_container(cfg.supernet, resolve=True),
                "num_classes": data.num_classes,
                "in_chans": data.in_chans,
            },
            path,
        )
        mlflow.log_artifact(str(path), "supernet")


def load_supernet(path: str | Path) -> ElasticMBConv:
    """Rebuild a supernet from the ``supernet/supernet.pt`` artifact of an OFA parent run."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    choices = saved["supernet"]
    space = ElasticSpace(
        saved["model"], choices["kernels"], choices["expansions"], choices["depths"]
    )
    supernet = ElasticMBConv(
        space, saved["num_classes"], saved["in_chans"], bool(choices.get("kernel_transform", True))
    )
    supernet.load_state_dict(saved["state_dict"])
    return supernet.eval()


def _flat(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: str(value)[:500]}


def _table(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]

    def cell(value: Any) -> str:
        if isinstance(value, float) and not math.isnan(value):
            return f"{value:.6g}"
        text = str(value)
        return f'"{text}"' if "," in text or '"' in text else text

    lines = [",".join(columns)]
    lines += [",".join(cell(row.get(c, "")) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def register_for_budget(
    client: Any,
    cfg: Any,
    uri: str,
    budget_ms: float,
    given: Any,
    run_id: str,
    parent_id: str,
    arch: Any,
    metrics: dict[str, float],
    tag_prefix: str,
) -> str:
    """Register the logged model ``uri`` as a new version of ``cfg.mlflow.model_name``, tag the
    version with its latency budget (``<tag_prefix>.budget_ms``, ``<tag_prefix>.budget``), runs,
    architecture and metrics, and tag the run with ``<tag_prefix>.registered_version``; returns
    the version (OFA and HAT, one per budget)."""
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    version = str(mlflow.register_model(uri, cfg.mlflow.model_name).version)
    tags = {
        f"{tag_prefix}.budget_ms": repr(budget_ms),  # TAG_BUDGET_MS of OFA (ofa.) or HAT (hat.)
        f"{tag_prefix}.budget": f"{given} {cfg.search.budget_unit}",
        "run_id": run_id,
        "parent_run_id": parent_id,
        "architecture": json.dumps(arch),
        **{f"metric.{k}": repr(float(v)) for k, v in metrics.items()},
    }
    for key, value in tags.items():
        client.set_model_version_tag(cfg.mlflow.model_name, version, key, value)
    mlflow.set_tag(f"{tag_prefix}.registered_version", version)
    return version
