"""HAT: hardware-aware transformer search from one elastic supernet, one model per latency budget.

``run_hat(cfg)`` (the app behind ``pipelines/hat.py``, config ``conf/hat.yaml``):

1. sandwich-trains the elastic transformer supernet
   (:mod:`~nas_plugin.supernets.elastic_transformer`) on the text task's training split; the
   parent run gets the per-epoch loss of the largest sub-transformer and the weights as artifact
   ``supernet/supernet.pt``;
2. measures ``latency.samples`` distinct sub-transformers (extracted, timed on ``train.device``,
   one text of ``latency.seq_length`` tokens at batch 1), fits the MLP latency predictor
   (:mod:`~nas_plugin.supernets.latency_predictor`) on all but ``latency.holdout`` of them and
   logs its held-out error (``predictor.rmse_ms``, ``predictor.within_10pct``);
3. per latency budget, searches with a strategy of ``nas_plugin.strategies`` (evolution by
   default): a candidate scores its inherited validation accuracy when its PREDICTED latency is
   within the budget, else ``-predicted/budget``; the best feasible one evaluated so far wins
   (inherited accuracies are cached across budgets);
4. per budget, a child run holds the winner's inherited and measured metrics and its extracted
   BERT with the tokenizer (``log_text_model``: raw text in, label names out, as the text
   task's models), registered as a version of ``mlflow.model_name`` with tags ``hat.budget_ms``
   and ``hat.budget``. A budget that no evaluated candidate meets is a FAILED child run; the
   other budgets go on.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from nas_plugin.hardware.device import Runtime, on_cpu
from nas_plugin.space import Encoding
from nas_plugin.strategies import make_strategy
from nas_plugin.supernets.elastic_transformer import (
    ElasticTransformer,
    ElasticTransformerError,
    ElasticTransformerSpace,
    SandwichSettings,
    SubTransformer,
    train_sandwich,
)
from nas_plugin.supernets.latency_predictor import (
    LatencyPredictor,
    measure_latencies,
    prediction_error,
)
from nas_plugin.supernets.ofa_targets import (
    Evaluation,
    _flat,
    _table,
    register_for_budget,
    resolve_budgets,
    search_budget,
)

log = logging.getLogger(__name__)

TAG_ROLE = "hat.role"  # parent | budget
TAG_BUDGET_MS = "hat.budget_ms"
TAG_BUDGET = "hat.budget"
LATENCY_KEY = "predicted_latency_ms"
INPUT_EXAMPLE_SIZE = 3


@dataclass
class TextBundle:
    """The text task's data as the trial sees it: encoded splits, tokenizer, label names."""

    tokenizer: Any
    splits: dict[str, Any]  # train / val / test -> EncodedSplit
    pad_id: int
    class_names: list[str]
    val_texts: list[str]


def load_text_bundle(
    task_cfg: Mapping[str, Any], train_fraction: float, seed: int, max_length: int
) -> TextBundle:
    """``load_text_data`` + ``load_tokenizer`` + truncation to ``max_length``, as in the trial."""
    from nas_plugin.tasks.text import encode_split
    from nas_plugin.tasks.text_data import load_text_data
    from nas_plugin.tasks.tokenizer import load_tokenizer

    data = load_text_data(task_cfg, train_fraction, seed)
    tokenizer = load_tokenizer(task_cfg.get("tokenizer") or {}, data.train.texts).tokenizer
    splits = {
        name: encode_split(tokenizer, split, max_length)
        for name, split in (("train", data.train), ("val", data.val), ("test", data.test))
    }
    return TextBundle(
        tokenizer, splits, int(tokenizer.pad_token_id), data.class_names, data.val.texts
    )


def build_supernet(space: ElasticTransformerSpace, bundle: TextBundle) -> ElasticTransformer:
    return ElasticTransformer(
        space,
        len(bundle.class_names),
        len(bundle.tokenizer),
        pad_token_id=bundle.pad_id,
        labels=bundle.class_names,
    )


def inherited_scores(
    supernet: ElasticTransformer,
    values: Mapping[str, Any],
    bundle: TextBundle,
    split: str = "val",
    runtime: Runtime | None = None,
) -> dict[str, float]:
    """``loss``, ``accuracy``, ``macro_f1`` of a sub-transformer on the shared weights, scored
    as the text trial scores its model."""
    from nas_plugin.tasks.text import evaluate_text

    runtime = runtime or Runtime(torch.device("cpu"))
    model = SubTransformer(supernet, values).eval()
    return evaluate_text(model, bundle.splits[split], bundle.pad_id, runtime)


@dataclass
class InheritedEvaluator:
    """Inherited val accuracy + predicted latency per encoding, cached (``search_budget``
    reads ``cache``)."""

    supernet: ElasticTransformer
    bundle: TextBundle
    predictor: LatencyPredictor
    runtime: Runtime
    cache: dict[Encoding, Evaluation] = field(default_factory=dict)

    def __call__(self, encoding: Encoding) -> Evaluation:
        if encoding not in self.cache:
            values = dict(encoding)
            scores = inherited_scores(self.supernet, values, self.bundle, "val", self.runtime)
            predicted = self.predictor.predict([self.supernet.space.arch_of(values)])[0]
            metrics = {f"val_{k}": v for k, v in scores.items()}
            metrics[LATENCY_KEY] = float(predicted)
            self.cache[encoding] = Evaluation(encoding, metrics)
        return self.cache[encoding]


def space_of(cfg: DictConfig) -> ElasticTransformerSpace:
    """The elastic space of ``supernet.*`` (lists of layers, hidden sizes, head sizes or
    counts, FFN ratios or sizes) over the app's ``model``."""
    choices = OmegaConf.to_container(cfg.supernet, resolve=True)
    if not isinstance(choices, dict) or not choices:
        raise ElasticTransformerError(
            "supernet is empty: list the elastic values, e.g. supernet.model.num_layers: [1, 2]"
        )
    flat = {f"model.{k}": v for k, v in (choices.get("model") or {}).items()}
    if set(choices) - {"model"}:
        raise ElasticTransformerError(
            f"supernet has keys {sorted(set(choices) - {'model'})}: only supernet.model.* "
            "(num_layers, hidden_size, head_dim or num_heads, ffn_ratio or intermediate_size)"
        )
    for key, value in flat.items():
        if not isinstance(value, list):
            raise ElasticTransformerError(f"supernet.{key} = {value!r}: expected a list of values")
    try:
        return ElasticTransformerSpace(OmegaConf.to_container(cfg.model, resolve=True), flat)
    except ElasticTransformerError:
        raise
    except ValueError as err:  # a combination that is not a valid model
        raise ElasticTransformerError(f"supernet: {err}") from err


def check_config(cfg: DictConfig) -> tuple[ElasticTransformerSpace, SandwichSettings]:
    """Every config error before the supernet trains (names the key, value, allowed)."""
    if cfg.model.get("kind") != "transformer":
        raise ElasticTransformerError(
            f"model.kind = {cfg.model.get('kind')!r}: HAT searches transformers; model=transformer"
        )
    space = space_of(cfg)
    settings = SandwichSettings.of(OmegaConf.to_container(cfg.train, resolve=True))
    search = cfg.search
    resolve_budgets(list(search.budgets), str(search.budget_unit), 0.0, 1.0)
    for key, section, minimum in (
        ("candidates", search, 1),
        ("samples", cfg.latency, 4),
        ("repeats", cfg.latency, 1),
        ("rounds", cfg.latency, 1),
    ):
        value = section.get(key, 5 if key == "rounds" else None)  # rounds is optional
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            where = "search" if section is search else "latency"
            raise ElasticTransformerError(
                f"{where}.{key} = {value!r} is not allowed: expected an integer >= {minimum}"
            )
    holdout = cfg.latency.get("holdout")
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 < holdout < 1:
        raise ElasticTransformerError(
            f"latency.holdout = {holdout!r} is not allowed: expected a fraction 0 < f < 1"
        )
    seq = cfg.latency.get("seq_length") or space.base.get("max_length")
    if not isinstance(seq, int) or not 1 <= seq <= int(space.base["max_length"]):
        raise ElasticTransformerError(
            f"latency.seq_length = {seq!r} is not allowed: expected 1 to model.max_length"
        )
    make_strategy(OmegaConf.to_container(search.strategy), space.search_space(), 0)
    if not str(cfg.mlflow.model_name or ""):
        raise ElasticTransformerError("mlflow.model_name is empty: name the registered model")
    return space, settings


def fit_latency_predictor(
    supernet: ElasticTransformer, cfg: DictConfig, seed: int
) -> tuple[LatencyPredictor, dict[str, float], list[dict[str, Any]]]:
    """Measure ``latency.samples`` distinct sub-transformers (the smallest and largest among
    them), fit on all but the held-out ones; (predictor, held-out error, measured rows)."""
    space = supernet.space
    pool = space.all_values()
    rng = random.Random(seed)
    rng.shuffle(pool)
    ends = [space.smallest(), space.largest()]
    chosen = ends + [v for v in pool if v not in ends][: max(0, int(cfg.latency.samples) - 2)]
    seq_length = int(cfg.latency.get("seq_length") or space.base["max_length"])
    rounds = int(cfg.latency.get("rounds", 5))
    costs = measure_latencies(supernet, chosen, seq_length, int(cfg.latency.repeats), rounds=rounds)
    archs = [space.arch_of(v) for v in chosen]
    ms = [c["latency_ms"] for c in costs]
    held = max(1, round(float(cfg.latency.holdout) * len(chosen)))
    # The ends are always trained on: the budgets' fractions are of their predicted latency.
    order = [0, 1] + rng.sample(range(2, len(chosen)), len(chosen) - 2)
    test, train = order[len(order) - held :], order[: len(order) - held]
    predictor = LatencyPredictor(seed=seed).fit([archs[i] for i in train], [ms[i] for i in train])
    error = prediction_error(predictor.predict([archs[i] for i in test]), [ms[i] for i in test])
    error.update(train_samples=float(len(train)), heldout_samples=float(len(test)))
    rows = [
        {**chosen[i], "latency_ms": ms[i], "heldout": i in test, "params": costs[i]["params"]}
        for i in range(len(chosen))
    ]
    return predictor, error, rows


def run_hat(cfg: DictConfig) -> dict[str, Any]:
    """Train, fit, search and register (see the module doc).

    Returns ``{"parent_run_id", "versions": {budget_ms: version or None}, "predictor": error}``
    and the ``runtime.*`` it ran on. Run it under a reporter that logs models
    (``pipelines/hat.py`` installs ``nas_plugin.tracking.reporter.mlflow_reporting``); without
    one it stops before training.
    """
    from nas_plugin.tasks.reporting import require_model_logging
    from nas_plugin.tasks.training import set_threads

    space, settings = check_config(cfg)
    runtime = dataclasses.replace(
        Runtime.from_config(cfg.train), compile=False, channels_last=False
    )
    require_model_logging("run_hat (pipelines/hat.py)")  # what it trains for
    seed = int(cfg.seed)
    set_threads(cfg.train)
    torch.manual_seed(seed)
    bundle = load_text_bundle(
        cfg.task, float(cfg.train.get("train_fraction", 1.0)), seed, int(space.base["max_length"])
    )
    supernet = runtime.prepare(build_supernet(space, bundle))
    search_space = space.search_space()

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_experiment(cfg.mlflow.experiment)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    versions: dict[float, str | None] = {}
    with mlflow.start_run(run_name=cfg.mlflow.get("run_name")) as parent:
        mlflow.set_tags({TAG_ROLE: "parent", **runtime.describe()})
        mlflow.log_params(_flat(OmegaConf.to_container(cfg, resolve=True)))
        mlflow.log_dict(search_space.describe(), "search_space.json")

        def on_epoch(epoch: int, loss: float) -> None:
            mlflow.log_metric("train_loss", loss, step=epoch)
            log.info("supernet epoch %d: loss %.4f", epoch, loss)

        trained = train_sandwich(
            supernet, bundle.splits["train"], bundle.pad_id, settings, seed, runtime, on_epoch
        )
        mlflow.log_metrics(trained)
        _log_supernet(supernet, cfg)

        predictor, error, rows = fit_latency_predictor(supernet, cfg, seed)
        mlflow.log_metrics({f"predictor.{k}": v for k, v in error.items()})
        mlflow.log_text(_table(rows), "latency/measured.csv")
        evaluate = InheritedEvaluator(supernet, bundle, predictor, runtime)
        ends = {"smallest": space.smallest(), "largest": space.largest()}
        ends_ms = {}
        for name, values in ends.items():
            result = evaluate(search_space.encode(values))
            mlflow.log_metrics({f"{name}.{k}": v for k, v in result.metrics.items()})
            ends_ms[name] = result.metrics[LATENCY_KEY]
        budgets = resolve_budgets(
            list(cfg.search.budgets),
            str(cfg.search.budget_unit),
            ends_ms["smallest"],
            ends_ms["largest"],
        )
        seq_length = int(cfg.latency.get("seq_length") or space.base["max_length"])
        for index, (given, budget_ms) in enumerate(zip(cfg.search.budgets, budgets, strict=True)):
            start = time.perf_counter()
            best = search_budget(
                search_space,
                evaluate,
                budget_ms,
                OmegaConf.to_container(cfg.search.strategy),
                int(cfg.search.candidates),
                seed + index,
                LATENCY_KEY,
            )
            versions[budget_ms] = _budget_run(
                cfg,
                client,
                evaluate,
                index,
                float(given),
                budget_ms,
                best,
                time.perf_counter() - start,
                parent.info.run_id,
                seq_length,
            )
        mlflow.log_metric("subnets_evaluated", len(evaluate.cache))
        registered = [f"{cfg.mlflow.model_name}/{v}" for v in versions.values() if v]
        mlflow.set_tag("hat.registered", ",".join(registered))
    return {
        "parent_run_id": parent.info.run_id,
        "versions": versions,
        "predictor": error,
        **runtime.describe(),
    }


def _budget_run(
    cfg: DictConfig,
    client: MlflowClient,
    evaluate: InheritedEvaluator,
    index: int,
    given: float,
    budget_ms: float,
    best: Evaluation | None,
    search_seconds: float,
    parent_id: str,
    seq_length: int,
) -> str | None:
    """One child run for one budget: the winner's metrics, model and registered version."""
    from nas_plugin.tasks.reporting import current_reporter

    supernet, bundle = evaluate.supernet, evaluate.bundle
    with mlflow.start_run(run_name=f"budget-{index}-{budget_ms:.3f}ms", nested=True) as run:
        try:
            mlflow.set_tags(
                {TAG_ROLE: "budget", TAG_BUDGET_MS: repr(budget_ms), TAG_BUDGET: str(given)}
            )
            mlflow.log_params(
                {"budget": given, "budget_ms": budget_ms, "budget_unit": cfg.search.budget_unit}
            )
            mlflow.log_metric("search_seconds", search_seconds)
            if best is None:
                fastest = min(e.metrics[LATENCY_KEY] for e in evaluate.cache.values())
                raise RuntimeError(
                    f"no sub-transformer among the {len(evaluate.cache)} evaluated is predicted "
                    f"within {budget_ms:.3f} ms (the fastest: {fastest:.3f} ms): raise the "
                    "budget or search.candidates"
                )
            values = dict(best.encoding)
            arch = supernet.space.arch_of(values)
            mlflow.log_params({**values, **arch.as_params()})
            test = inherited_scores(supernet, values, bundle, "test", evaluate.runtime)
            measured = measure_latencies(supernet, [values], seq_length, int(cfg.latency.repeats))
            metrics = {
                **best.metrics,
                **{f"test_{k}": v for k, v in test.items()},
                **measured[0],
                "within_budget_predicted": float(best.metrics[LATENCY_KEY] <= budget_ms),
                "within_budget_measured": float(measured[0]["latency_ms"] <= budget_ms),
            }
            mlflow.log_metrics(metrics)
            model = supernet.extract(values)
            with on_cpu(model):  # loads and predicts on a CPU-only machine too
                uri = current_reporter().log_text_model(
                    model,
                    bundle.tokenizer,
                    arch.max_length,
                    bundle.val_texts[:INPUT_EXAMPLE_SIZE],
                )
            version = register_for_budget(
                client,
                cfg,
                uri,
                budget_ms,
                given,
                run.info.run_id,
                parent_id,
                values,
                metrics,
                "hat",
            )
            log.info("budget %.3f ms: %s -> version %s", budget_ms, values, version)
            return version
        except Exception as err:  # recorded, never takes the other budgets down
            mlflow.set_tags({"nas.status": "failed", "nas.error": str(err)[:5000]})
            mlflow.log_text(traceback.format_exc(), "error.txt")
            mlflow.end_run(status="FAILED")
            log.warning("budget %.3f ms failed: %s", budget_ms, err)
            return None


def _log_supernet(supernet: ElasticTransformer, cfg: DictConfig) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "supernet.pt"
        torch.save(
            {
                # From the CPU: the artifact loads on a machine without the training device.
                "state_dict": {k: v.cpu() for k, v in supernet.state_dict().items()},
                "model": supernet.space.base,
                "choices": {k: list(v) for k, v in supernet.space.choices.items()},
                "build_args": list(supernet.build_args),
            },
            path,
        )
        mlflow.log_artifact(str(path), "supernet")
