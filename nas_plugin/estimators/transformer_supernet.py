"""``estimator=supernet`` for ``model=transformer``: the HAT elastic transformer supernet.

:class:`~nas_plugin.estimators.supernet.SupernetEstimator` dispatches here when the app's
``model.kind`` is ``transformer`` (or ``kind: transformer``). Before the sweep, the space must be
one the supernet shares (``model.num_layers``, ``model.hidden_size``, ``model.head_dim`` or
``model.num_heads``, ``model.ffn_ratio`` or ``model.intermediate_size``, each a finite list;
``model.model_type: bert``; e.g. ``hydra/sweeper/search_space=hat``). The first trial
sandwich-trains it (``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``random_subnets``,
``distill``) and stores it on the sweep's parent run, exactly as the vision supernets
(:meth:`SupernetEstimator.shared_supernet`); every trial then scores its sub-transformer on the
inherited weights as the text trial scores its model (``val_accuracy``, ``val_loss``,
``val_macro_f1``, the same for ``test_``) and, with ``hardware.measure``, the extracted model's
cost on one text of ``hardware.seq_length`` tokens. The champion is logged by
:func:`log_best_model` with its tokenizer (raw text in), as the text task logs its models.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from nas_plugin.estimators.base import EstimatorError


def prepare(space: Any, job_cfg: Any) -> dict[str, Any]:
    """Check the space against the elastic transformer; the choices and base model config."""
    from omegaconf import OmegaConf

    from nas_plugin.supernets.elastic_transformer import ElasticTransformerSpace

    choices: dict[str, list[Any]] = {}
    for param in space.params:
        if not param.is_discrete:
            raise EstimatorError(
                f"search space key '{param.name}' is a float interval ({param.describe()}): "
                "the elastic transformer shares weights over a finite list of values"
            )
        choices[param.name] = list(param.values())
    base = OmegaConf.to_container(job_cfg.model, resolve=True)
    try:
        ElasticTransformerSpace(base, choices)
    except ValueError as err:
        raise EstimatorError(str(err)) from err
    return {"kind": "transformer", "choices": choices, "base_model": base}


def _candidate(estimator: Any, cfg: Any, runtime: Any) -> tuple[Any, Any, dict, dict, dict]:
    """(the supernet, the text bundle, the trial's elastic values, its val scores, supernet
    training metrics if this call trained it)."""
    from omegaconf import OmegaConf
    from torch import nn

    from nas_plugin.supernets.elastic_transformer import (
        ElasticTransformerSpace,
        SandwichSettings,
        train_sandwich,
    )
    from nas_plugin.supernets.hat import build_supernet, inherited_scores, load_text_bundle

    if estimator.choices is None or estimator.base_model is None:
        raise EstimatorError(
            "estimator 'supernet' (kind transformer) got no search space: it runs in a NAS "
            "sweep, which hands the space's values to every trial"
        )
    space = ElasticTransformerSpace(estimator.base_model, estimator.choices)
    arch = {key: OmegaConf.select(cfg, key, default=None) for key in space.keys}
    try:
        values = space.values(arch)
    except ValueError as err:
        raise EstimatorError(f"the trial's candidate is not in the supernet: {err}") from err
    settings = SandwichSettings(
        epochs=estimator.epochs,
        batch_size=estimator.batch_size,
        lr=estimator.lr,
        weight_decay=estimator.weight_decay,
        random_subnets=estimator.random_subnets,
        distill=estimator.distill,
    )
    train_fraction = float((cfg.get("train") or {}).get("train_fraction", 1.0))

    def load() -> tuple[Any, Any]:
        bundle = load_text_bundle(
            cfg.task, train_fraction, estimator.seed, int(space.base["max_length"])
        )
        return bundle, nn.Identity()

    def train(supernet: Any, preprocess: Any, bundle: Any) -> dict[str, float]:
        return train_sandwich(
            supernet, bundle.splits["train"], bundle.pad_id, settings, estimator.seed, runtime
        )

    identity = {"base_model": estimator.base_model, "choices": estimator.choices}
    shared, extra = estimator.shared_supernet(
        cfg, identity, lambda bundle: build_supernet(space, bundle), train, runtime, load=load
    )
    val = inherited_scores(shared.supernet, values, shared.data, "val", runtime)
    return shared.supernet, shared.data, values, {f"val_{k}": v for k, v in val.items()}, extra


def run_job(estimator: Any, cfg: Any, runtime: Any) -> dict[str, float]:
    """One trial: val and test scores on inherited weights (+ cost with ``hardware.measure``)."""
    import mlflow

    from nas_plugin.hardware.cost import measure_configured_cost
    from nas_plugin.supernets.hat import inherited_scores
    from nas_plugin.tasks.text import RandomTokenClassifier

    start = time.perf_counter()
    supernet, bundle, values, metrics, extra = _candidate(estimator, cfg, runtime)
    test = inherited_scores(supernet, values, bundle, "test", runtime)
    metrics.update({f"test_{k}": v for k, v in test.items()})
    hardware: Mapping[str, Any] = cfg.get("hardware") or {}
    if hardware.get("measure", False):
        arch = supernet.space.arch_of(values)
        model = RandomTokenClassifier(supernet.extract(values), len(bundle.tokenizer))
        seq = int(hardware.get("seq_length") or arch.max_length)
        metrics.update(measure_configured_cost(model, (seq,), hardware))
    if mlflow.active_run() is not None:
        mlflow.log_params(supernet.space.arch_of(values).as_params())
        mlflow.set_tag("nas.supernet", "trained" if extra else "loaded")
    seconds = time.perf_counter() - start - extra.get("supernet_train_seconds", 0.0)
    return {**metrics, **extra, "eval_seconds": seconds}


def log_best_model(estimator: Any, cfg: Any, runtime: Any) -> bool:
    """The trial's sub-transformer, extracted, logged with its tokenizer from the CPU."""
    from nas_plugin.hardware.device import on_cpu
    from nas_plugin.supernets.hat import INPUT_EXAMPLE_SIZE
    from nas_plugin.tasks.reporting import require_model_logging

    reporter = require_model_logging("estimator=supernet's best-model logging")
    supernet, bundle, values, _, _ = _candidate(estimator, cfg, runtime)
    model = supernet.extract(values)
    with on_cpu(model):
        reporter.log_text_model(
            model,
            bundle.tokenizer,
            supernet.space.arch_of(values).max_length,
            bundle.val_texts[:INPUT_EXAMPLE_SIZE],
        )
    return True
