"""``estimator=supernet`` for ``model=spinenet``: the SpineNet weight-sharing supernet.

:class:`~nas_plugin.estimators.supernet.SupernetEstimator` dispatches here when the app's
``model.kind`` is ``spinenet`` (or ``kind: spinenet``). Before the sweep, every searched key
must be one the supernet shares: ``model.blocks.block_<k>.{level,type,input_1,input_2}`` or
``model.pyramid.fusion``, each a finite list (``search_space=spinenet`` is). The first trial
trains the supernet by single-path one-shot sampling (:func:`~nas_plugin.supernets.spinenet.
train_spos`: ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``seed``) and stores it on
the sweep's parent run, as the other supernets do (:meth:`SupernetEstimator.shared_supernet`).
Every trial then extracts its detector with the inherited weights, re-estimates its BatchNorm
statistics on ``bn_images`` training images and scores it as the detection trial scores its
trained model: ``val_map``, ``val_map_50``, ``val_map_75``, ``val_mar_100``, ``val_ap_<class>``,
the same for ``test_``, and with ``hardware.measure`` its cost. The champion is logged as the
detection task logs its models (raw images in, boxes, scores and labels out).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from nas_plugin.estimators.base import EstimatorError
from nas_plugin.space.spinenet import ARCH_KEY

SHARED_KEYS = ARCH_KEY  # the keys the supernet shares weights over


def prepare(space: Any, job_cfg: Any) -> dict[str, Any]:
    """Check the space against the supernet; the choices and base model config."""
    from omegaconf import OmegaConf

    base = OmegaConf.to_container(job_cfg.model, resolve=True)
    blocks = int(base.get("num_blocks", 0))
    choices: dict[str, list[Any]] = {}
    for param in space.params:
        match = SHARED_KEYS.fullmatch(param.name)
        if match is None or (match.group(1) and not 1 <= int(match.group(1)) <= blocks):
            raise EstimatorError(
                f"search space key '{param.name}': the SpineNet supernet shares weights over "
                f"model.blocks.block_<1..{blocks}>.{{level,type,input_1,input_2}} and "
                "model.pyramid.fusion only; search the other keys with estimator=full"
            )
        if not param.is_discrete:
            raise EstimatorError(
                f"search space key '{param.name}' is a float interval ({param.describe()}): "
                "the supernet shares weights over a finite list of values; give a list"
            )
        choices[param.name] = list(param.values())
    return {"kind": "spinenet", "choices": choices, "base_model": base}


def _candidate(estimator: Any, cfg: Any, runtime: Any) -> tuple[Any, Any, dict, dict]:
    """(the trial's detector with inherited weights and re-estimated BatchNorm statistics, on
    ``runtime``'s device; the task's data; its val scores; supernet training metrics if this
    call trained it)."""
    from torch import nn

    from nas_plugin.supernets.spinenet import build_supernet, score_candidate, train_spos
    from nas_plugin.tasks.detection import DetectionModel, channel_stats
    from nas_plugin.tasks.detection_data import load_detection_data

    if estimator.choices is None or estimator.base_model is None:
        raise EstimatorError(
            "estimator 'supernet' (kind spinenet) got no search space: it runs in a NAS "
            "sweep, which hands the space's values to every trial"
        )
    base, choices = estimator.base_model, estimator.choices
    resolution = int(cfg.task.resolution)
    train_fraction = float((cfg.get("train") or {}).get("train_fraction", 1.0))

    def load() -> tuple[Any, Any]:
        return load_detection_data(cfg.task, train_fraction, estimator.seed), nn.Identity()

    def build(data: Any) -> Any:
        mean, std = channel_stats(data)
        supernet = build_supernet(base, data.num_classes, data.in_chans)
        return DetectionModel(supernet, resolution, mean, std)

    def train(supernet: Any, preprocess: Any, data: Any) -> dict[str, float]:
        settings = {
            "epochs": estimator.epochs,
            "batch_size": estimator.batch_size,
            "lr": estimator.lr,
            "weight_decay": estimator.weight_decay,
        }
        return train_spos(supernet, data, base, choices, settings, estimator.seed, runtime)

    identity = {"base_model": base, "choices": choices}
    shared, extra = estimator.shared_supernet(cfg, identity, build, train, runtime, load=load)
    data = shared.data
    try:
        model, val = score_candidate(
            shared.supernet, cfg.model, data, estimator.bn_images, estimator.seed, runtime
        )
    except ValueError as err:
        raise EstimatorError(f"the trial's candidate is not in the supernet: {err}") from err
    return model, data, {f"val_{k}": v for k, v in val.items()}, extra


def run_job(estimator: Any, cfg: Any, runtime: Any) -> dict[str, float]:
    """One trial: val and test scores on inherited weights (+ cost with ``hardware.measure``)."""
    import mlflow

    from nas_plugin.tasks.detection import EVAL_BATCH_SIZE, evaluate
    from nas_plugin.tasks.training import model_cost

    start = time.perf_counter()
    model, data, metrics, extra = _candidate(estimator, cfg, runtime)
    test = evaluate(model, data.loader(data.test, EVAL_BATCH_SIZE), data, runtime, per_class=True)
    metrics.update({f"test_{k}": v for k, v in test.items()})
    hardware: Mapping[str, Any] = cfg.get("hardware") or {}
    if hardware.get("measure", False):
        metrics.update(model_cost(model, data.image_shape, hardware))
    if mlflow.active_run() is not None:
        mlflow.set_tag("nas.supernet", "trained" if extra else "loaded")
    seconds = time.perf_counter() - start - extra.get("supernet_train_seconds", 0.0)
    return {**metrics, **extra, "eval_seconds": seconds}


def log_best_model(estimator: Any, cfg: Any, runtime: Any) -> bool:
    """The trial's detector, rebuilt as its trial scored it, logged from the CPU."""
    from nas_plugin.tasks.detection import input_example
    from nas_plugin.tasks.reporting import require_model_logging

    reporter = require_model_logging("estimator=supernet's best-model logging")
    model, data, _, _ = _candidate(estimator, cfg, runtime)
    reporter.log_image_model(model, input_example(data.val))
    return True
