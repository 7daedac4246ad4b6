"""The NAS sweeper: glue between Hydra and the sweep's collaborators in :mod:`nas_plugin.sweep`.

One sweep: validate everything (space, strategy, estimator, the app's config keys, the tracking
store) -> open the parent run (:mod:`~nas_plugin.sweep.start`) -> repeat {ask the strategy for
candidates, launch them as Hydra jobs, tell the strategy their scores} (:mod:`~.loop`,
:mod:`~.refill` or :mod:`~.rungs`) -> leaderboard, plots, the best model registered
(:mod:`~.finish`).

Only this module knows Hydra's launcher, config loader and task function; the sweeper never
trains anything and the jobs never choose architectures.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from nas_plugin.estimators.hyperband import Hyperband
from nas_plugin.launchers import prepare_launcher, runs_jobs_in_process
from nas_plugin.leaderboard import TrialRecord
from nas_plugin.strategies import make_strategy
from nas_plugin.sweep.finish import finish_sweep
from nas_plugin.sweep.ledger import Ledger, SweepAbortedError
from nas_plugin.sweep.loop import run_batches
from nas_plugin.sweep.oneshot_phase import budget_text, link_trials, needs_search, search_first
from nas_plugin.sweep.plan import (
    SweepConfigError,
    SweepPlan,
    build_plan,
    check_against_job_config,
    check_compute,
    network_key,
)
from nas_plugin.sweep.plots import log_sweep_plots
from nas_plugin.sweep.proposals import Proposer
from nas_plugin.sweep.refill import run_async, use_async_refill
from nas_plugin.sweep.replay import Replayer
from nas_plugin.sweep.rungs import run_hyperband
from nas_plugin.sweep.search_aids import SearchAids
from nas_plugin.sweep.start import OpenedSweep, open_sweep, resume_mode, size_text
from nas_plugin.sweep.sweep_dir import prepare_sweep_dir
from nas_plugin.sweep.trials import LaunchedTrials
from nas_plugin.tracking.scaling import report_end_of_sweep
from nas_plugin.tracking.sweep_run import TrackingLostError
from nas_plugin.tracking.trial import TrackedTask

__all__ = ["NASSweeperImpl", "SweepAbortedError"]

log = logging.getLogger(__name__)


class NASSweeperImpl:
    def __init__(self, **_: Any) -> None:
        # The sweeper's settings are read from the composed config in setup(), where
        # interpolations into the app's config (e.g. ${experiment_name}) can still resolve.
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config

    def sweep(self, arguments: list[str]) -> list[TrialRecord]:
        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None
        sweeper_cfg = OmegaConf.to_container(self.config.hydra.sweeper, resolve=True)
        assert isinstance(sweeper_cfg, dict)
        plan = build_plan(sweeper_cfg, arguments)
        job_cfg = self._check_app_config(plan)
        # train.device/precision, hardware.batch_sizes, gpus_per_trial (sets hydra.launcher).
        gpus = check_compute(plan, self.config.hydra.launcher, job_cfg)
        resume_mode(sweeper_cfg)
        strategy = make_strategy(plan.strategy_config, plan.space, plan.seed)
        aids = SearchAids.from_config(plan, sweeper_cfg, self._compose, job_cfg)

        prepare_sweep_dir(Path(str(self.config.hydra.sweep.dir)), self.config)
        # The hydra node is run-specific (times, output dirs): not part of the sweep's identity.
        app_cfg = {k: v for k, v in OmegaConf.to_container(job_cfg).items() if k != "hydra"}
        opened = open_sweep(plan, strategy, sweeper_cfg, arguments, app_cfg, aids.params())
        sweep_run, strategy = opened.sweep_run, opened.strategy
        aids.attach(sweep_run.client, sweep_run.run_id)
        context = sweep_run.trial_context(
            space_keys=plan.space.names,
            metric=plan.objective.metrics[0] if plan.objective.metrics else None,
            required_metrics=plan.objective.required,
            strategy=strategy.name,
            estimator=plan.estimator.describe(),
            estimator_config=plan.estimator_config,
            timeout_s=plan.trial_timeout,
            direction=plan.objective.directions[0],
            pruner=plan.pruner,
        )
        context = dataclasses.replace(context, gpus=gpus)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=self.hydra_context,
            task_function=TrackedTask(self.task_function, context),
            config=self.config,
        )
        prepare_launcher(self.launcher)
        log.info(
            "NAS sweep: %s, strategy=%s, search_space=%s (%s candidates), estimator=%s, "
            "MLflow %s, experiment '%s', parent run %s",
            budget_text(plan.n_trials, strategy),
            strategy.name,
            plan.search_space_name,
            size_text(plan.space.size()),
            plan.estimator.name,
            sweep_run.uri,
            sweep_run.experiment_name,
            sweep_run.run_id,
        )
        use_async = use_async_refill(
            sweeper_cfg.get("refill", "auto"), plan.batch_size, runs_jobs_in_process(self.launcher)
        )

        ledger = Ledger(
            strategy,
            plan.objective,
            plan.n_trials,
            plan.max_failures,
            plan.metric_name,
            aids.after_trial,
        )
        status, note, lost, searches = "FINISHED", None, None, None
        try:
            if needs_search(strategy):  # darts/gdas/proxyless: search first
                plan, searches = search_first(
                    self.hydra_context, self.config, self.task_function, plan, strategy, sweep_run
                )
            self._run(plan, ledger, aids, opened, use_async, job_cfg)
            # A strategy's report on the parent run (compound: the scaling curve).
            report_end_of_sweep(strategy, sweep_run.client, sweep_run.run_id, plan.metric_name)
        except BaseException as err:
            status = "FAILED"
            note = (
                str(err) if isinstance(err, SweepAbortedError) else f"{type(err).__name__}: {err}"
            )
            # The store went away (MLflow has given up retrying): say so, and write nothing
            # more, which would only wait through MLflow's retries again.
            lost = sweep_run.unreachable() if isinstance(err, Exception) else None
            if lost is not None:
                cause = str(err) if isinstance(err, TrackingLostError) else note
                finished = sum(1 for r in ledger.records if r.ok)
                message = sweep_run.lost_message(lost, cause, finished)
                raise TrackingLostError(message) from err
            raise
        finally:
            if lost is None:
                records = ledger.records
                if opened.warm is not None:
                    opened.warm.tag_trials(sweep_run.client, records)
                if searches is not None:
                    link_trials(sweep_run, searches, records)
                aids.finish(plan.space)
                log_sweep_plots(sweep_run, plan, records, aids)
                finish_sweep(plan, sweep_run, records, sweeper_cfg, status, note, self._compose)
        return ledger.records

    def _run(
        self,
        plan: SweepPlan,
        ledger: Ledger,
        aids: SearchAids,
        opened: OpenedSweep,
        use_async: bool,
        job_cfg: DictConfig,
    ) -> None:
        """Wire the collaborators for this plan and run the loop that fits its estimator;
        ``job_cfg``: a trial's config with no searched key set (what ``equivalent`` hooks read)."""
        assert self.launcher is not None
        sweep_run = opened.sweep_run
        ledger.n_trials = plan.n_trials  # the one-shot searches may have derived fewer cells
        screen = None
        if aids.prescreener is not None:

            def screen(propose: Any, wanted: int, reject: Any) -> list:
                return aids.next_candidates(propose, wanted, reject, plan.space)

        proposer = Proposer(ledger.strategy, ledger.seen, screen, network_key(plan, job_cfg))
        replayer = Replayer(opened.replay)
        trials = LaunchedTrials(
            plan, self.launcher.launch, self._compose, sweep_run, ledger.strategy.name, replayer
        )
        if isinstance(plan.estimator, Hyperband):
            budget_key = plan.estimator.budget_key

            def on_rung(record: TrialRecord) -> None:
                sweep_run.tag_rung(record, budget_key)

            run_hyperband(plan.estimator, ledger, proposer, trials, plan.batch_size, on_rung)
        elif use_async:
            run_async(ledger, proposer, trials, plan.batch_size, replayer, sweep_run.tag_told)
        else:
            run_batches(ledger, proposer, trials, plan.batch_size)

    def _check_app_config(self, plan: SweepPlan) -> DictConfig:
        """Compose the app's config once with the fixed overrides; check every key we will set.

        Returns the composed config of a trial with no searched key set."""
        # Keys first (a clearer message than Hydra's), then whether the values compose.
        for overrides in (plan.fixed_overrides, plan.trial_overrides({})):
            try:
                job_cfg = self._compose(list(overrides))
            except Exception as err:
                raise SweepConfigError(
                    f"the app's config does not compose with the overrides {overrides}: {err}"
                ) from err
            check_against_job_config(plan, job_cfg)
        return job_cfg

    def _compose(self, overrides: list[str]) -> DictConfig:
        """A trial's config exactly as its job composes it from ``overrides``."""
        assert self.hydra_context is not None and self.config is not None
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
