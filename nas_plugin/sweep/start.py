"""Open a sweep's parent run: resume an unfinished sweep of the same identity, or start one.

Also where a warm start joins: it wraps the strategy and is logged on a new parent run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from nas_plugin.strategies import Strategy
from nas_plugin.sweep.oneshot_phase import needs_search
from nas_plugin.sweep.plan import SweepConfigError, SweepPlan
from nas_plugin.tracking.resume import Replay, find_unfinished, fingerprint, load_replay
from nas_plugin.tracking.secrets import mask_override, mask_secrets
from nas_plugin.tracking.sweep_run import SweepRun, open_store, resolve_tracking_uri
from nas_plugin.tracking.warm_start import WarmStart, WarmStartError, load_warm_start

log = logging.getLogger("nas_plugin.sweeper")

RESUME_MODES = ("auto", "never", "must")


def resume_mode(sweeper_cfg: dict[str, Any]) -> str:
    resume = sweeper_cfg.get("resume", "auto")
    if resume not in RESUME_MODES:
        raise SweepConfigError(f"hydra.sweeper.resume={resume!r}; allowed: {list(RESUME_MODES)}")
    return resume


@dataclass
class OpenedSweep:
    sweep_run: SweepRun
    strategy: Strategy  # wrapped by the warm start, if any
    warm: WarmStart | None
    replay: Replay | None  # a resumed sweep's finished trials


def open_sweep(
    plan: SweepPlan,
    strategy: Strategy,
    sweeper_cfg: dict[str, Any],
    arguments: list[str],
    app_cfg: dict[str, Any],
    extra_params: dict[str, Any],
) -> OpenedSweep:
    """``app_cfg``: the app's composed config without its ``hydra`` node (part of the
    sweep's identity with the sweeper's config and the command line); ``extra_params``: more
    params for a new parent run (the pre-screen's and predictor's)."""
    resume = resume_mode(sweeper_cfg)
    mlflow_cfg = sweeper_cfg.get("mlflow") or {}
    uri = resolve_tracking_uri(mlflow_cfg.get("tracking_uri"))
    sweep_run = SweepRun(open_store(uri), uri, str(mlflow_cfg.get("experiment") or "nas"))
    identity = fingerprint(sweeper_cfg, arguments, app_cfg)
    unfinished = None
    if resume != "never":
        unfinished = find_unfinished(sweep_run.client, sweep_run.experiment_id, identity)
    if unfinished is None and resume == "must":
        raise SweepConfigError(
            "hydra.sweeper.resume=must, but no unfinished sweep with the same config and "
            f"command line is in experiment '{sweep_run.experiment_name}'"
        )
    try:
        warm_cfg = sweeper_cfg.get("warm_start")
        warm = load_warm_start(warm_cfg, uri, plan.space, plan.objective, plan.seed, unfinished)
    except WarmStartError as err:
        raise SweepConfigError(str(err)) from err
    if warm is not None:
        if needs_search(strategy):
            raise SweepConfigError(
                f"hydra.sweeper.warm_start does not apply to strategy '{strategy.name}': its "
                "one candidate comes from its search job; drop warm_start"
            )
        strategy = warm.wrap(strategy)
    replay = None
    if unfinished is not None:
        sweep_run.attach(unfinished)
        replay = load_replay(
            sweep_run.client, sweep_run.experiment_id, unfinished, plan.space, plan.objective
        )
        log.info(
            "Resuming the unfinished sweep (parent run %s): %d finished trials are replayed "
            "to the strategy, %d interrupted ones run again (hydra.sweeper.resume=never "
            "starts afresh).",
            unfinished,
            len(replay.finished),
            len(replay.interrupted),
        )
    else:
        sweep_run.start(
            mlflow_cfg.get("run_name"),
            params={**parent_params(plan, strategy), **extra_params},
            files={
                "search_space.json": json.dumps(plan.space.describe(), indent=2),
                "sweep_config.yaml": OmegaConf.to_yaml(mask_secrets(sweeper_cfg)),
                "command_line_overrides.txt": "\n".join(map(mask_override, arguments)) + "\n",
            },
            fingerprint=identity,
        )
        if warm is not None:
            warm.log(sweep_run.client, sweep_run.run_id)
    return OpenedSweep(sweep_run, strategy, warm, replay)


def parent_params(plan: SweepPlan, strategy: Strategy) -> dict[str, Any]:
    params: dict[str, Any] = {
        "n_trials": plan.n_trials,
        "batch_size": plan.batch_size,
        "seed": plan.seed,
        "max_failures": plan.max_failures,
        **plan.objective.describe(),
        "search_space": plan.search_space_name,
        "search_space.size": size_text(plan.space.size()),
        "strategy": strategy.name,
    }
    params.update({f"strategy.{k}": v for k, v in plan.strategy_config.items() if k != "name"})
    params.update({f"estimator.{k}": v for k, v in plan.estimator.describe().items()})
    params.update({f"pruner.{k}" if k != "name" else "pruner": v for k, v in plan.pruner.items()})
    return params


def size_text(size: float) -> str:
    return "infinite" if size == float("inf") else str(int(size))
