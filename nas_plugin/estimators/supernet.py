"""``supernet``: score candidates with weights inherited from one supernet trained per sweep.

Two kinds of supernet, picked by ``kind`` (``auto``: from the app's ``model.kind``):

- ``nb201``: the NB201 cell supernet (:class:`~nas_plugin.supernets.nb201.NB201Supernet`, sized
  by the trial's ``model.channels`` / ``model.cells_per_stage``), trained by single-path one-shot
  training (SPOS: a uniformly sampled cell per step, ``epochs``);
- ``mbconv``: the Once-for-All elastic supernet
  (:class:`~nas_plugin.supernets.elastic_mbconv.ElasticMBConv`) of the sweep's mbconv search
  space, trained by progressive shrinking (``phase_epochs``). Before the sweep starts, the space
  is checked against what the supernet can share (every searched key must be a per-stage
  ``kernel``/``expansion``/``depth``/``channels``/``se``, ``model.width_mult`` or
  ``model.activation``, with a finite list of values, one block type per stage), and the space's
  values (``choices``) and the app's model config (``base_model``) are added to the estimator's
  config, so that every trial builds the same supernet: the largest network of the space;
- ``transformer``: the HAT elastic transformer supernet
  (:mod:`~nas_plugin.supernets.elastic_transformer`) of the sweep's transformer space, trained
  by sandwich sampling (``epochs``, ``random_subnets``, ``distill``); see
  :mod:`~nas_plugin.estimators.transformer_supernet`, which these trials run;
- ``spinenet``: the SpineNet detection supernet (:mod:`~nas_plugin.supernets.spinenet`: every
  block, resampling and lateral a SpineNet-style backbone of the space can use, under one FCOS
  head), trained by single-path one-shot sampling (``epochs``); its trials score val/test mAP
  on inherited weights (see :mod:`nas_plugin.estimators.detection_supernet`).

Every trial then extracts its candidate with the inherited weights, optionally fine-tunes it
for ``finetune_steps`` steps, re-estimates its BatchNorm statistics on ``bn_images`` training
images and returns its ``val_accuracy`` (and ``test_accuracy``; with ``hardware.measure: true``
in the app's config, the extracted model's ``params``, ``flops``, ``latency_ms`` as a trained
trial measures them). Any strategy then searches at about a second per trial.

Where the weights live, and who trains them (both kinds): the **first trial that needs them
trains them, under a file lock**, and logs them as artifact ``supernet/<key>.pt`` (plus
``<key>.json``: the settings and the training time) of the sweep's **parent run**; every later
trial, in any worker process and in a resumed sweep (which reuses the parent run), downloads
them instead. ``key`` hashes the supernet's settings, the task and the model, so one parent may
hold several. The lock is a file under ``cache_dir`` (default ``~/.cache/nas_plugin/supernets``),
so concurrent first trials on one machine train once; workers on other machines that start
together may each train (with the same seed: the same weights) and the last upload wins. The
trial that trained the supernet logs ``supernet_train_seconds`` and tag ``nas.supernet=trained``;
the others tag ``nas.supernet=loaded``. Each process keeps the weights in memory after the
first trial.

Training, BatchNorm re-estimation and scoring run on the app's ``train.device`` at
``train.precision`` (:class:`~nas_plugin.hardware.device.Runtime`; ``train.compile`` does not
apply to a supernet), read through the task's DataLoaders (``task.num_workers``): the supernet
stays on the device between trials, and the scoring batches (BatchNorm re-estimation, val,
test) are built once per process, so their workers persist. Every trial is tagged ``runtime.*``
with what it ran on. The weights are uploaded from the CPU and a supernet trained at another
precision than 32 is its own ``key``. A device this machine lacks fails the trial before any
training (:class:`~nas_plugin.hardware.device.DeviceError`, naming ``train.device``).

No trial logs a model (that would cost more than the trial). At the end of the sweep, the
sweeper calls :meth:`SupernetEstimator.log_best_model` (if the app's ``log_model`` is true) in
the trial to register's resumed run: it rebuilds that candidate exactly as its trial scored it
(same code path, :meth:`SupernetEstimator._candidate`) and logs it from the CPU (it loads on any
machine), so it is registered as ``models:/<name>@champion``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas_plugin.estimators.base import Estimator, EstimatorError, reject_unknown

log = logging.getLogger(__name__)

TAG_SUPERNET = "nas.supernet"
ARTIFACT_DIR = "supernet"
KINDS = ("auto", "nb201", "mbconv", "transformer", "spinenet")
# The kinds with a module of their own (run_job, log_best_model, prepare).
_DELEGATED = ("transformer", "spinenet")
PHASES = ("full", "kernel", "depth", "expand")
OPTIONS = [
    "kind",
    "epochs",
    "phase_epochs",
    "batch_size",
    "lr",
    "shrink_lr",
    "weight_decay",
    "subnets_per_step",
    "kernel_transform",
    "sort_channels",
    "seed",
    "finetune_steps",
    "finetune_lr",
    "bn_images",
    "prefix",
    "cache_dir",
    # kind transformer: random sub-transformers per sandwich step, distillation weight.
    "random_subnets",
    "distill",
    # Filled in from the sweep before it starts (kind mbconv): not for users to set.
    "choices",
    "base_model",
]
# (parent run id, key, runtime) -> the supernet on the runtime's device, its preprocessing
# (there too), the task's data and the scoring batches per (bn_images, seed): trials in one
# process reuse them.
_LOADED: dict[tuple[str, str, Any], _Shared] = {}


@dataclass
class _Shared:
    supernet: Any
    preprocess: Any
    data: Any
    scoring: dict[tuple[int, int], Any] = field(default_factory=dict)

    def batches(self, bn_images: int, seed: int) -> Any:
        """The :class:`~nas_plugin.oneshot.spos.ScoringBatches`, built on first use."""
        from nas_plugin.oneshot.spos import ScoringBatches

        key = (bn_images, seed)
        if key not in self.scoring:
            self.scoring[key] = ScoringBatches.of(self.data, bn_images, seed)
        return self.scoring[key]


class SupernetEstimator(Estimator):
    name = "supernet"

    def __init__(
        self,
        kind: str = "auto",
        epochs: int = 10,
        phase_epochs: Mapping[str, int] | None = None,
        batch_size: int = 64,
        lr: float = 0.005,
        shrink_lr: float = 0.005,
        weight_decay: float = 1e-4,
        subnets_per_step: int = 2,
        kernel_transform: bool = True,
        sort_channels: bool = True,
        seed: int = 0,
        finetune_steps: int = 0,
        finetune_lr: float = 1e-3,
        bn_images: int = 512,
        prefix: str = "model.cell",
        cache_dir: str | None = None,
        choices: Mapping[str, list[Any]] | None = None,
        base_model: Mapping[str, Any] | None = None,
        random_subnets: int = 2,
        distill: float = 0.0,
    ) -> None:
        if kind not in KINDS:
            raise EstimatorError(
                f"hydra.sweeper.estimator.kind={kind!r} is not allowed: expected one of {KINDS}"
            )
        self.kind = kind
        self.epochs = _int(epochs, "epochs", 1)
        self.phase_epochs = _phases(
            {"full": 6, "kernel": 3, "depth": 3, "expand": 3}
            if phase_epochs is None
            else phase_epochs
        )
        self.batch_size = _int(batch_size, "batch_size", 2)
        self.lr = _number(lr, "lr")
        self.shrink_lr = _number(shrink_lr, "shrink_lr")
        self.weight_decay = _number(weight_decay, "weight_decay", allow_zero=True)
        self.subnets_per_step = _int(subnets_per_step, "subnets_per_step", 1)
        self.kernel_transform = _bool(kernel_transform, "kernel_transform")
        self.sort_channels = _bool(sort_channels, "sort_channels")
        self.seed = _int(seed, "seed", None)
        self.finetune_steps = _int(finetune_steps, "finetune_steps", 0)
        self.finetune_lr = _number(finetune_lr, "finetune_lr")
        self.bn_images = _int(bn_images, "bn_images", 0)
        if not isinstance(prefix, str) or not prefix:
            raise EstimatorError(
                f"hydra.sweeper.estimator.prefix={prefix!r} must be the config key of the NB201 "
                "cell, such as 'model.cell'"
            )
        self.prefix = prefix
        self.cache_dir = cache_dir
        self.random_subnets = _int(random_subnets, "random_subnets", 0)
        self.distill = _number(distill, "distill", allow_zero=True)
        self.choices = None if choices is None else {k: list(v) for k, v in choices.items()}
        self.base_model = None
        if base_model is not None:
            from nas_plugin.supernets.elastic_mbconv import plain_config

            self.base_model = plain_config(base_model)

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> SupernetEstimator:
        reject_unknown(cls.name, options, OPTIONS)
        return cls(**options)

    def config_keys(self) -> list[str]:
        if self.kind == "nb201":
            return [self.prefix, "model.channels", "model.cells_per_stage", "task"]
        return ["task", "model"]

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "mbconv":
            described["phase_epochs"] = json.dumps(self.phase_epochs)
        else:
            described["epochs"] = self.epochs
        described.update(
            lr=self.lr,
            seed=self.seed,
            finetune_steps=self.finetune_steps,
            bn_images=self.bn_images,
        )
        return described

    def prepare(self, space: Any, job_cfg: Any) -> dict[str, Any]:
        """Resolve ``kind`` from the app's config; for ``mbconv``, check the space against the
        elastic supernet and hand its values and the base model config to the trials."""
        from omegaconf import OmegaConf

        kind = self.kind
        model_kind = OmegaConf.select(job_cfg, "model.kind", default=None)
        if kind == "auto":
            if model_kind in KINDS[1:]:
                kind = model_kind
            else:
                raise EstimatorError(
                    f"estimator 'supernet' cannot tell the supernet from model.kind="
                    f"{model_kind!r}: expected model.kind nb201, mbconv, transformer or spinenet "
                    "(our model=nb201 / mbconv / transformer / spinenet), or set "
                    "hydra.sweeper.estimator.kind"
                )
        self.kind = kind
        missing = object()
        for key in self.config_keys():
            if OmegaConf.select(job_cfg, key, default=missing) is missing:
                raise EstimatorError(
                    f"estimator 'supernet' (kind {kind}) needs the key '{key}' in the app's config"
                )
        if kind == "nb201":
            return {"kind": kind}
        if kind in _DELEGATED:
            prepared = _module(kind).prepare(space, job_cfg)
            self.choices, self.base_model = prepared["choices"], prepared["base_model"]
            return prepared
        from nas_plugin.supernets.elastic_mbconv import ElasticConfigError, ElasticSpace

        choices: dict[str, list[Any]] = {}
        for param in space.params:
            if not param.is_discrete:
                raise EstimatorError(
                    f"search space key '{param.name}' is a float interval ({param.describe()}): "
                    "the elastic supernet shares weights over a finite list of values; give a list"
                )
            choices[param.name] = [_value(v) for v in param.values()]
        base = OmegaConf.to_container(job_cfg.model, resolve=True)
        try:
            elastic = ElasticSpace.from_choices(base, choices)
            _build_largest(elastic)
        except (ElasticConfigError, ValueError) as err:
            raise EstimatorError(str(err)) from err
        self.choices, self.base_model = choices, base
        return {"kind": kind, "choices": choices, "base_model": base}

    def settings(self) -> dict[str, Any]:
        """What the supernet's weights depend on (fine-tuning and BN images do not count)."""
        common = {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
        }
        if self.kind == "transformer":
            sandwich = {"random_subnets": self.random_subnets, "distill": self.distill}
            return {"kind": "transformer", "epochs": self.epochs, **sandwich, **common}
        if self.kind == "spinenet":
            return {"kind": "spinenet", "epochs": self.epochs, **common}
        if self.kind != "mbconv":
            return {"epochs": self.epochs, **common}
        return {
            "kind": "mbconv",
            "phase_epochs": self.phase_epochs,
            "shrink_lr": self.shrink_lr,
            "subnets_per_step": self.subnets_per_step,
            "kernel_transform": self.kernel_transform,
            "sort_channels": self.sort_channels,
            **common,
        }

    def shrinking_settings(self) -> dict[str, Any]:
        """The settings of :func:`~nas_plugin.supernets.ofa_training.train_progressive_shrinking`
        (kind mbconv)."""
        return {
            "epochs": self.phase_epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "shrink_lr": self.shrink_lr,
            "weight_decay": self.weight_decay,
            "subnets_per_step": self.subnets_per_step,
            "sort_channels": self.sort_channels,
        }

    def run_job(self, cfg: Any, task_function: Callable[[Any], Any]) -> dict[str, float]:
        """Score the trial's candidate with inherited weights; ``task_function`` never runs."""
        import mlflow

        from nas_plugin.tasks.training import set_threads

        runtime = _runtime(cfg)  # first: a missing device fails before any training
        if mlflow.active_run() is not None:
            mlflow.set_tags(runtime.describe())
        set_threads(cfg.get("train"))
        if self._kind(cfg) in _DELEGATED:
            return _module(self._kind(cfg)).run_job(self, cfg, runtime)
        start = time.perf_counter()
        model, shared, metrics, extra = self._candidate(cfg, runtime)
        test = _test(model, shared.batches(self.bn_images, self.seed), runtime)
        metrics = {**metrics, **test, **_cost(cfg, model, shared.data)}
        if mlflow.active_run() is not None:
            mlflow.set_tag(TAG_SUPERNET, "trained" if extra else "loaded")
        seconds = time.perf_counter() - start - extra.get("supernet_train_seconds", 0.0)
        return {**metrics, **extra, "eval_seconds": seconds}

    def log_best_model(self, cfg: Any) -> bool:
        """Rebuild the trial's candidate exactly as its trial scored it (the same supernet
        artifact, fine-tuning and BatchNorm re-estimation, same seed and runtime) and log it,
        with its preprocessing and from the CPU, to the active run (the trial's, resumed by
        the sweeper)."""
        import mlflow
        import torch

        from nas_plugin.tasks.reporting import require_model_logging
        from nas_plugin.tasks.training import set_threads
        from nas_plugin.tasks.vision import input_example

        reporter = require_model_logging("estimator=supernet's best-model logging")
        runtime = _runtime(cfg)
        previous = torch.get_num_threads()  # this runs in the sweeper's process
        set_threads(cfg.get("train"))
        if self._kind(cfg) in _DELEGATED:
            try:
                return _module(self._kind(cfg)).log_best_model(self, cfg, runtime)
            finally:
                torch.set_num_threads(previous)
        try:
            model, shared, metrics, _ = self._candidate(cfg, runtime)
            reporter.log_image_model(model, input_example(shared.data.val))
        finally:
            torch.set_num_threads(previous)
        run = mlflow.active_run()
        scored = run.data.metrics.get("val_accuracy") if run is not None else None
        if scored is not None and abs(scored - metrics["val_accuracy"]) > 1e-6:
            log.warning(
                "The logged model of run %s scores val_accuracy=%.4f, its trial scored %.4f: "
                "the rebuild did not reproduce the trial exactly",
                run.info.run_id,
                metrics["val_accuracy"],
                scored,
            )
        return True

    def _kind(self, cfg: Any) -> str:
        if self.kind != "auto":
            return self.kind
        kind = (cfg.get("model") or {}).get("kind")
        return kind if kind in ("mbconv", *_DELEGATED) else "nb201"

    def _candidate(
        self, cfg: Any, runtime: Any
    ) -> tuple[Any, _Shared, dict[str, float], dict[str, float]]:
        """(the trial's candidate with inherited weights, fine-tuned and BatchNorm-recalibrated
        as configured, preprocessing included, on ``runtime``'s device; the shared supernet
        with the task's data; its val metrics; metrics of the supernet's training if this call
        trained it). The trial and ``log_best_model`` both build the candidate here, so the
        logged model is the one the trial scored."""
        from nas_plugin.oneshot.spos import score_inherited

        extract = self._extract_mbconv if self._kind(cfg) == "mbconv" else self._extract_nb201
        model, shared, extra = extract(cfg, runtime)
        metrics = score_inherited(
            model,
            shared.data,
            self.seed,
            self.finetune_steps,
            self.finetune_lr,
            self.batch_size,
            self.bn_images,
            runtime=runtime,
            batches=shared.batches(self.bn_images, self.seed),
        )
        return model, shared, metrics, extra

    # -- the two kinds: (the extracted candidate, data, supernet training metrics) ----------

    def _extract_nb201(self, cfg: Any, runtime: Any) -> tuple[Any, _Shared, dict[str, float]]:
        from torch import nn

        from nas_plugin.estimators.tabular import _select
        from nas_plugin.models.nb201 import cell_ops
        from nas_plugin.oneshot.spos import train_spos
        from nas_plugin.supernets.nb201 import NB201Supernet

        cell = _select(cfg, self.prefix)
        if not isinstance(cell, Mapping):
            raise EstimatorError(
                f"hydra.sweeper.estimator.prefix={self.prefix!r}: the job's config has no NB201 "
                f"cell there (found {cell!r})"
            )
        ops = cell_ops({"cell": cell})
        identity = {
            "channels": int(cfg.model.channels),
            "cells_per_stage": int(cfg.model.cells_per_stage),
        }

        def build(data: Any) -> Any:
            return NB201Supernet(
                identity["channels"], identity["cells_per_stage"], data.num_classes, data.in_chans
            )

        def train(supernet: Any, preprocess: Any, data: Any) -> dict[str, float]:
            return train_spos(
                supernet,
                preprocess,
                data,
                self.epochs,
                self.batch_size,
                self.lr,
                self.seed,
                self.weight_decay,
                runtime=runtime,
            )

        shared, extra = self.shared_supernet(cfg, identity, build, train, runtime)
        # As oneshot.spos.evaluate_path builds it (the supernet stays untouched).
        model = nn.Sequential(copy.deepcopy(shared.preprocess), shared.supernet.extract(ops))
        return model, shared, extra

    def _extract_mbconv(self, cfg: Any, runtime: Any) -> tuple[Any, _Shared, dict[str, float]]:
        from omegaconf import OmegaConf
        from torch import nn

        from nas_plugin.supernets.elastic_mbconv import (
            ElasticConfigError,
            ElasticMBConv,
            ElasticSpace,
        )
        from nas_plugin.supernets.ofa_training import train_progressive_shrinking

        if self.choices is None or self.base_model is None:
            raise EstimatorError(
                "estimator 'supernet' (kind mbconv) got no search space: it runs in a NAS "
                "sweep, which hands the space's values to every trial"
            )
        space = ElasticSpace.from_choices(self.base_model, self.choices)
        # Every decision as this trial's config has it: the searched ones and the fixed ones
        # (which must be what the supernet was built with).
        arch = {key: OmegaConf.select(cfg, key, default=None) for key in space.decisions()}
        arch = {key: _value(value) for key, value in arch.items() if value is not None}
        try:
            values = space.values(arch)
        except ElasticConfigError as err:
            raise EstimatorError(f"the trial's candidate is not in the supernet: {err}") from err
        identity = {"base_model": self.base_model, "choices": self.choices}

        def build(data: Any) -> Any:
            return ElasticMBConv(space, data.num_classes, data.in_chans, self.kernel_transform)

        def train(supernet: Any, preprocess: Any, data: Any) -> dict[str, float]:
            start = time.perf_counter()
            losses: list[float] = []
            seconds = train_progressive_shrinking(
                nn.Sequential(preprocess, supernet),
                data,
                self.shrinking_settings(),
                self.seed,
                on_epoch=lambda phase, epoch, loss: losses.append(loss),
                runtime=runtime,
            )
            return {
                "supernet_train_loss": losses[-1],
                "supernet_train_seconds": time.perf_counter() - start,
                **{f"supernet_{phase}_seconds": s for phase, s in seconds.items()},
            }

        shared, extra = self.shared_supernet(cfg, identity, build, train, runtime)
        sub = shared.supernet.extract(values)
        model = nn.Sequential(copy.deepcopy(shared.preprocess), sub).eval()
        return model, shared, extra

    # -- the shared supernet ------------------------------------------------------------------

    def key(self, cfg: Any, identity: Mapping[str, Any], precision: str = "32") -> str:
        """Hash of what the weights depend on: settings, task, training fraction, model, and
        the training precision when it is not 32 (fp32 keys are as before precisions
        existed)."""
        from nas_plugin.tasks.vision_data import task_key

        train_cfg = cfg.get("train") or {}
        numerics = {} if precision == "32" else {"precision": precision}
        text = json.dumps(
            {
                **self.settings(),
                "task": json.loads(task_key(cfg.task)),
                "train_fraction": float(train_cfg.get("train_fraction", 1.0)),
                **identity,
                **numerics,
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def shared_supernet(
        self,
        cfg: Any,
        identity: Mapping[str, Any],
        build: Callable[[Any], Any],
        train: Callable[[Any, Any, Any], dict[str, float]],
        runtime: Any,
        load: Callable[[], tuple[Any, Any]] | None = None,
    ) -> tuple[_Shared, dict[str, float]]:
        """(the supernet with its preprocessing on ``runtime``'s device and the task's data,
        metrics of its training if this call trained it).

        ``build(data)`` makes the untrained supernet; ``train(supernet, preprocess, data)``
        trains it in place (on the device) and returns its metrics (``supernet_train_seconds``
        among them); ``load()`` returns (data, preprocessing) when they are not the vision
        task's (default: ``oneshot.data.vision_data``). The first caller of the sweep trains
        and uploads, under a file lock; the others download (see the module doc).
        """
        import mlflow
        import torch
        from filelock import FileLock  # a dependency of torch
        from mlflow.tracking import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        from nas_plugin.oneshot.data import vision_data
        from nas_plugin.tasks.vision_data import task_key

        active = mlflow.active_run()
        parent = active.data.tags.get(MLFLOW_PARENT_RUN_ID) if active is not None else None
        if parent is None:
            raise EstimatorError(
                "estimator 'supernet' runs inside a NAS sweep's trial (its weights are an "
                "artifact of the sweep's parent run); no parent run is active"
            )
        key = self.key(cfg, identity, runtime.precision)
        if (parent, key, runtime) in _LOADED:
            return _LOADED[(parent, key, runtime)], {}
        train_cfg = cfg.get("train") or {}
        if load is None:
            data, preprocess = vision_data(
                task_key(cfg.task), float(train_cfg.get("train_fraction", 1.0)), self.seed
            )
        else:
            data, preprocess = load()
        torch.manual_seed(self.seed)  # the initial weights, should this process train them
        supernet = runtime.prepare(build(data))  # built on the CPU: the same weights anywhere
        preprocess = copy.deepcopy(preprocess).to(runtime.device)  # the cached one stays put
        client = MlflowClient()
        cache = Path(self.cache_dir or Path.home() / ".cache" / "nas_plugin" / "supernets")
        cache.mkdir(parents=True, exist_ok=True)
        extra: dict[str, float] = {}
        with FileLock(str(cache / f"{parent}-{key}.lock")):
            state = _download(client, parent, key)
            if state is None:
                extra = train(supernet, preprocess, data)
                _upload(client, parent, key, supernet, {**self.settings(), **extra})
            else:
                supernet.load_state_dict(state)
        supernet.eval()
        shared = _Shared(supernet, preprocess, data)
        _LOADED[(parent, key, runtime)] = shared
        return shared, extra


def _module(kind: str) -> Any:
    """The module of a delegated kind (imported on use: each pulls in its own task)."""
    if kind == "spinenet":
        from nas_plugin.estimators import detection_supernet

        return detection_supernet
    from nas_plugin.estimators import transformer_supernet

    return transformer_supernet


def _runtime(cfg: Any) -> Any:
    """The trial's :class:`~nas_plugin.hardware.device.Runtime` (``train.*``), uncompiled: a
    supernet's graph changes with every subnet, and each candidate is scored once."""
    import dataclasses

    from nas_plugin.hardware.device import Runtime

    return dataclasses.replace(Runtime.from_config(cfg.get("train")), compile=False)


def _test(model: Any, batches: Any, runtime: Any) -> dict[str, float]:
    from nas_plugin.tasks.vision import evaluate

    test_loss, test_accuracy = evaluate(model, batches.test, runtime=runtime)
    return {"test_accuracy": test_accuracy, "test_loss": test_loss}


def _cost(cfg: Any, model: Any, data: Any) -> dict[str, float]:
    """The extracted model's hardware cost, as a trained trial measures it (``hardware.*``
    of the app's config; nothing without ``hardware.measure: true``): multi-objective
    searches over accuracy and latency work on inherited weights too."""
    from nas_plugin.hardware.cost import measure_configured_cost

    hardware = cfg.get("hardware") or {}
    if not hardware.get("measure", False):
        return {}
    return measure_configured_cost(model, data.image_shape, hardware)


def _build_largest(space: Any) -> None:
    """Build the supernet's network once (10 classes, RGB): a model config the builder rejects
    stops the sweep here."""
    from nas_plugin.models.mbconv import build_mbconv

    build_mbconv(space.model_config(space.largest()), 10, 3)


def _download(client: Any, run_id: str, key: str) -> dict[str, Any] | None:
    import torch

    names = {Path(f.path).name for f in client.list_artifacts(run_id, ARTIFACT_DIR)}
    if f"{key}.pt" not in names:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = client.download_artifacts(run_id, f"{ARTIFACT_DIR}/{key}.pt", folder)
        return torch.load(path, map_location="cpu", weights_only=True)


def _upload(client: Any, run_id: str, key: str, supernet: Any, info: dict[str, Any]) -> None:
    import torch

    with tempfile.TemporaryDirectory() as folder:
        # The description first: a reader that sees the .pt finds its settings too.
        (Path(folder) / f"{key}.json").write_text(json.dumps(info, indent=2))
        client.log_artifact(run_id, str(Path(folder) / f"{key}.json"), ARTIFACT_DIR)
        # From the CPU: the artifact loads on a machine without the training device.
        state = {name: tensor.cpu() for name, tensor in supernet.state_dict().items()}
        torch.save(state, Path(folder) / f"{key}.pt")
        client.log_artifact(run_id, str(Path(folder) / f"{key}.pt"), ARTIFACT_DIR)


def _value(value: Any) -> Any:
    """A space value or config value as plain Python (tuples from encodings, OmegaConf)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return list(value) if isinstance(value, tuple) else value


def _phases(value: Any) -> dict[str, int]:
    key = "hydra.sweeper.estimator.phase_epochs"
    if not isinstance(value, Mapping) or set(value) - set(PHASES):
        raise EstimatorError(
            f"{key}={value!r} is not allowed: expected a mapping of {', '.join(PHASES)} -> "
            "epochs (0 or missing skips a phase)"
        )
    epochs = {phase: value.get(phase, 0) for phase in PHASES}
    for phase, count in epochs.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise EstimatorError(f"{key}.{phase}={count!r} must be an integer >= 0")
    if epochs["full"] < 1:
        raise EstimatorError(
            f"{key}.full={epochs['full']} must be >= 1: progressive shrinking starts from the "
            "largest network"
        )
    return epochs


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise EstimatorError(f"hydra.sweeper.estimator.{key}={value!r} must be true or false")
    return value


def _int(value: Any, key: str, minimum: int | None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (minimum is not None and value < minimum)
    ):
        bound = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise EstimatorError(f"hydra.sweeper.estimator.{key}={value!r} must be {bound}")
    return value


def _number(value: Any, key: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (value >= 0 if allow_zero else value > 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise EstimatorError(f"hydra.sweeper.estimator.{key}={value!r} must be a number {bound}")
    return float(value)
