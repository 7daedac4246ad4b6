"""Turn the sweeper's config and the command line into a validated sweep plan.

Everything that can be checked without running a trial is checked here, so that bad input stops
the sweep before the first job starts, with one message that names the key, the value and what
is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from nas_plugin.estimators import Estimator, make_estimator
from nas_plugin.importing import ImportSpecError, load_object
from nas_plugin.objective import (
    Constraint,
    Objective,
    ObjectiveError,
    parse_constraint,
    parse_objective,
)
from nas_plugin.pruning.config import PrunerError, check_pruner
from nas_plugin.space import Encoding, SearchSpace, SearchSpaceError
from nas_plugin.space.params import FloatRange, Param, parse_param
from nas_plugin.strategies import STRATEGIES, make_strategy

PARETO_MODES = ("best", "front")


class SweepConfigError(CompactHydraException, ValueError):
    """Invalid sweeper config or command line, found before any trial ran.

    A CompactHydraException: Hydra prints its message alone, without a stack trace.
    """


@dataclass
class SweepPlan:
    space: SearchSpace
    strategy_config: dict[str, Any]
    estimator: Estimator
    estimator_config: dict[str, Any]
    objective: Objective
    n_trials: int
    batch_size: int
    seed: int
    max_failures: int
    trial_timeout: float | None
    # Non-sweep command-line overrides, applied to every trial as typed.
    fixed_overrides: list[str] = field(default_factory=list)
    # Values the composed job config must hold for the named search space to make sense.
    requires: dict[str, Any] = field(default_factory=dict)
    # "module:function" a named space may give to check itself against the app's config before
    # any trial (e.g. options that make no sense for a model type); called as f(space, job_cfg)
    # and raising ValueError with a clear message.
    validator: str | None = None
    # "module:function" a named space may give to say which candidates build the same network,
    # called as f(values, job_cfg) -> a hashable key: candidates with equal keys are trained once
    # (the strategy hears the first one's score for the others), as identical ones are.
    equivalent: str | None = None
    search_space_name: str = "custom"
    # Registration: only trials that satisfy the constraint; a Pareto front's best or all of it.
    constraint: Constraint | None = None
    pareto: str = "best"
    # hydra.sweeper.pruner with every default filled in; {"name": "none"}: no pruning.
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "none"})
    # GPUs each trial gets to itself (hydra.sweeper.gpus_per_trial; 0: none assigned).
    gpus_per_trial: int = 0

    @property
    def metric_name(self) -> str:
        return self.objective.primary

    def estimator_overrides(self) -> list[str]:
        return [f"{k}={format_value(v)}" for k, v in self.estimator.overrides().items()]

    def trial_overrides(self, decoded: Mapping[str, Any]) -> list[str]:
        arch = [f"{key}={format_value(value)}" for key, value in decoded.items()]
        return [*self.fixed_overrides, *self.estimator_overrides(), *arch]


def build_plan(sweeper_cfg: Mapping[str, Any], arguments: list[str]) -> SweepPlan:
    """Validate the sweeper config plus the command line; raise ``SweepConfigError`` if bad."""
    cfg = _plain(sweeper_cfg)
    try:
        params, fixed = _split_arguments(arguments)
        space_cfg = cfg.get("search_space") or {}
        merged: dict[str, Param] = {}
        for source in (space_cfg.get("params") or {}, cfg.get("params") or {}):
            for key, spec in source.items():
                merged[str(key)] = _parse_any(str(key), spec)
        merged.update(params)
        space = space_class(space_cfg)(list(merged.values()))
        strategy_cfg = dict(cfg.get("strategy") or {})
        seed = _int(cfg, "seed", minimum=None)
        # Building it once checks its options; the sweeper builds its own for the sweep.
        make_strategy(strategy_cfg, space, seed)
        estimator_config = dict(cfg.get("estimator") or {"name": "full"})
        estimator = make_estimator(estimator_config)
    except (SearchSpaceError, ValueError) as err:
        if isinstance(err, SweepConfigError):
            raise
        raise SweepConfigError(str(err)) from err

    try:
        objective = parse_objective(cfg.get("objective") or {})
        registry = cfg.get("registry") or {}
        constraint = parse_constraint(registry.get("constraint"))
    except ObjectiveError as err:
        raise SweepConfigError(str(err)) from err
    pareto = registry.get("pareto", "best")
    try:
        pruner = check_pruner(cfg.get("pruner"), objective.multi, str(estimator_config.get("name")))
    except PrunerError as err:
        raise SweepConfigError(str(err)) from err
    if pareto not in PARETO_MODES:
        raise SweepConfigError(
            f"hydra.sweeper.registry.pareto={pareto!r}; allowed: {list(PARETO_MODES)}"
        )
    strategy_cls = STRATEGIES[strategy_cfg["name"]]
    if objective.multi and not strategy_cls.multi_objective:
        multi = sorted(n for n, c in STRATEGIES.items() if c.multi_objective)
        raise SweepConfigError(
            f"hydra.sweeper.objective.metric={list(objective.metrics)} are several objectives: "
            f"pick a multi-objective strategy {multi}, not '{strategy_cls.name}' (or optimise "
            "one metric, or one MnasNet reward via objective.reward)"
        )
    if strategy_cls.multi_objective and not objective.multi:
        raise SweepConfigError(
            f"strategy '{strategy_cls.name}' is multi-objective: give hydra.sweeper.objective."
            "metric a list of metrics and objective.direction one direction per metric"
        )
    return SweepPlan(
        space=space,
        strategy_config=strategy_cfg,
        estimator=estimator,
        estimator_config=estimator_config,
        objective=objective,
        constraint=constraint,
        pareto=pareto,
        pruner=pruner,
        n_trials=_int(cfg, "n_trials", minimum=1),
        batch_size=_int(cfg, "batch_size", minimum=1),
        seed=seed,
        max_failures=_int(cfg, "max_failures", minimum=-1),
        trial_timeout=_timeout(cfg.get("trial_timeout")),
        fixed_overrides=fixed,
        requires=dict(space_cfg.get("requires") or {}),
        validator=space_cfg.get("validate"),
        equivalent=space_cfg.get("equivalent"),
        search_space_name=str(space_cfg.get("name", "custom")),
        gpus_per_trial=_int({"gpus_per_trial": cfg.get("gpus_per_trial", 0)}, "gpus_per_trial", 0),
    )


def space_class(space_cfg: Mapping[str, Any]) -> type[SearchSpace]:
    """The named space's ``space_class`` ("module:Class", a SearchSpace subclass that knows its
    structure, e.g. the hierarchical space's levels); ``SearchSpace`` without one."""
    target = space_cfg.get("space_class")
    if target is None:
        return SearchSpace
    try:
        cls = load_object(target, kind="Class")
    except ImportSpecError as err:
        raise SweepConfigError(
            f"search_space={space_cfg.get('name')}: space_class={target!r} cannot be imported "
            f"({err}); expected 'package.module:Class', a subclass of SearchSpace"
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, SearchSpace)):
        raise SweepConfigError(
            f"search_space={space_cfg.get('name')}: space_class={target!r} is not a subclass of "
            "nas_plugin.space.SearchSpace"
        )
    return cls


def check_against_job_config(plan: SweepPlan, job_cfg: DictConfig) -> None:
    """``requires`` must hold; every searched or estimator key must exist in the app's config."""
    for key, wanted in plan.requires.items():
        actual = OmegaConf.select(job_cfg, key, default=None)
        if actual != wanted:
            raise SweepConfigError(
                f"search_space={plan.search_space_name} needs {key}={wanted!r} in the app's "
                f"config, but it is {actual!r}; select the matching config "
                f"(in our pipelines: {key.split('.')[0]}={wanted})"
            )
    if plan.validator:
        _run_validator(plan, job_cfg)
    if plan.equivalent:
        _space_hook(plan, "equivalent", plan.equivalent)
    missing = object()
    for key, what in [
        *[(name, "search space key") for name in plan.space.names],
        *[(name, "estimator key") for name in plan.estimator.config_keys()],
    ]:
        if OmegaConf.select(job_cfg, key, default=missing, throw_on_missing=False) is missing:
            top = sorted(str(k) for k in job_cfg.keys())
            raise SweepConfigError(
                f"{what} '{key}' is not a key of the app's config; the search space may only "
                f"name existing keys (top-level keys: {top})"
            )
    try:
        # The trials' jobs rebuild the estimator from this config: hand them what it prepared.
        plan.estimator_config.update(plan.estimator.prepare(plan.space, job_cfg))
    except ValueError as err:
        raise SweepConfigError(str(err)) from err


def check_compute(plan: SweepPlan, launcher_cfg: DictConfig, job_cfg: DictConfig) -> Any:
    """The trials' compute, checked before any trial: ``train.device``/``train.precision`` (and
    the rest of ``nas_plugin.hardware.device.Runtime``'s keys) must resolve on this machine,
    ``hardware.batch_sizes`` must be positive integers, and ``gpus_per_trial`` must fit the GPUs
    and the launcher, whose config (``hydra.launcher``) gets the GPU settings it needs.

    Returns the ``GpuPlan`` the jobs apply (None without ``gpus_per_trial``)."""
    from nas_plugin.hardware.cost import check_batch_sizes
    from nas_plugin.hardware.device import Runtime
    from nas_plugin.hardware.gpu_slots import plan_gpus

    try:
        with read_write(launcher_cfg), open_dict(launcher_cfg):
            gpus = plan_gpus(plan.gpus_per_trial, launcher_cfg, plan.batch_size)
        train = OmegaConf.select(job_cfg, "train", default=None)
        if isinstance(train, DictConfig) and RUNTIME_KEYS & set(train.keys()):
            Runtime.from_config(train)
            device = str(train.get("device", "auto"))
            if gpus is not None and device not in ("auto", "cuda"):
                raise ValueError(
                    f"train.device = {device!r} with hydra.sweeper.gpus_per_trial="
                    f"{plan.gpus_per_trial}: each trial runs on the GPU(s) it is given, so "
                    "train.device must be auto or cuda"
                )
        hardware = OmegaConf.select(job_cfg, "hardware", default=None)
        if isinstance(hardware, DictConfig) and "batch_sizes" in hardware:
            check_batch_sizes(hardware.batch_sizes)
        task = OmegaConf.select(job_cfg, "task", default=None)
        if isinstance(task, DictConfig):
            from nas_plugin.tasks import detection_data, segmentation_data, vision_data

            # task.augment, task.num_workers, ... (no image read, no scene generated)
            if task.get("dataset") in vision_data.DATASETS:
                vision_data.check_task_config(task)
            elif task.get("dataset") in segmentation_data.DATASETS:
                segmentation_data.check_task_config(task)
            elif task.get("dataset") in detection_data.DATASETS:
                detection_data.check_task_config(task)
    except ValueError as err:
        raise SweepConfigError(str(err)) from err
    return gpus


RUNTIME_KEYS = {"device", "precision", "channels_last", "compile"}


def network_key(
    plan: SweepPlan, job_cfg: DictConfig | None
) -> Callable[[Encoding], Hashable] | None:
    """Encoding -> the key of the network it builds, from the space's ``equivalent`` hook and the
    app's config (None: the space has no hook, every distinct encoding is its own network)."""
    if not plan.equivalent:
        return None
    function = _space_hook(plan, "equivalent", plan.equivalent)
    space = plan.space
    return lambda encoding: function(space.decode(encoding), job_cfg)


def _space_hook(plan: SweepPlan, key: str, spec: str) -> Callable[..., Any]:
    try:
        function = load_object(spec, kind="function")
    except ImportSpecError as err:
        raise SweepConfigError(
            f"search_space={plan.search_space_name}: {key}={spec!r} cannot be "
            f"imported ({err}); expected 'package.module:function'"
        ) from err
    if not callable(function):
        raise SweepConfigError(
            f"search_space={plan.search_space_name}: {key}={spec!r} is not a function"
        )
    return function


def _run_validator(plan: SweepPlan, job_cfg: DictConfig) -> None:
    function = _space_hook(plan, "validate", str(plan.validator))
    try:
        function(plan.space, job_cfg)
    except ValueError as err:
        raise SweepConfigError(f"search_space={plan.search_space_name}: {err}") from err


def format_value(value: Any) -> str:
    """A value in Hydra's override grammar (strings quoted when they need it)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _PLAIN_STRING.match(text) and text.lower() not in _RESERVED:
        return text
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


_PLAIN_STRING = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-./]*$")
_RESERVED = {"true", "false", "null", "nan", "inf"}


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def _int(cfg: Mapping[str, Any], key: str, minimum: int | None) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SweepConfigError(f"hydra.sweeper.{key}={value!r} must be an integer")
    if minimum is not None and value < minimum:
        raise SweepConfigError(f"hydra.sweeper.{key}={value} must be >= {minimum}")
    return value


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise SweepConfigError(
            f"hydra.sweeper.trial_timeout={value!r} must be a number of seconds > 0, or null"
        )
    return float(value)


def _parse_any(key: str, spec: Any) -> Param:
    """Our YAML form, or Hydra's sweep syntax as a string (``choice(..)``, ``interval(..)``)."""
    if isinstance(spec, str):
        override = OverridesParser.create().parse_overrides([f"{key}={spec}"])[0]
        if not override.is_sweep_override():
            raise SearchSpaceError(
                f"search space key '{key}': {spec!r} is a single value, not a search "
                "dimension; allowed: choice(..), range(..), interval(..), tag(log, interval(..)), "
                "a list of choices or {low, high}"
            )
        return _param_from_override(override)
    return parse_param(key, spec)


def _split_arguments(arguments: list[str]) -> tuple[dict[str, Param], list[str]]:
    parser = OverridesParser.create()
    params: dict[str, Param] = {}
    fixed: list[str] = []
    for override in parser.parse_overrides(arguments):
        if override.is_sweep_override():
            param = _param_from_override(override)
            params[param.name] = param
        else:
            fixed.append(override.input_line)
    return params, fixed


def _param_from_override(override: Override) -> Param:
    key = override.get_key_element()
    sweep = override.value()
    if isinstance(sweep, ChoiceSweep):
        return parse_param(key, list(sweep.list))
    if isinstance(sweep, RangeSweep):
        # Hydra's range() excludes its stop; our IntRange includes its high.
        start, stop, step = sweep.start, sweep.stop, sweep.step
        if all(isinstance(v, int) for v in (start, stop, step)):
            values = list(range(start, stop, step))
            if not values:
                raise SearchSpaceError(
                    f"search space key '{key}': range({start},{stop},{step}) is empty"
                )
            return parse_param(key, {"low": values[0], "high": values[-1], "step": step})
        count = math.ceil((stop - start) / step)
        return parse_param(key, [start + i * step for i in range(max(count, 0))])
    if isinstance(sweep, IntervalSweep):
        param = parse_param(
            key, {"low": float(sweep.start), "high": float(sweep.end), "log": "log" in sweep.tags}
        )
        assert isinstance(param, FloatRange)
        return param
    raise SearchSpaceError(f"search space key '{key}': unsupported sweep {override.input_line!r}")
