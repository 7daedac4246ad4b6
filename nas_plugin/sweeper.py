"""The NAS sweeper: glue between a strategy, Hydra's launcher and MLflow.

One sweep: validate everything (space, strategy, estimator, the app's config keys, the tracking
store) -> open the parent run -> repeat {ask the strategy for candidates, launch them as Hydra
jobs, tell the strategy their scores} -> leaderboard -> register the best model.

The sweeper never trains anything and the jobs never choose architectures.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import mlflow
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from nas_plugin.estimators import make_estimator
from nas_plugin.estimators.base import Estimator
from nas_plugin.estimators.hyperband import Hyperband, promote
from nas_plugin.launchers import prepare_launcher, runs_jobs_in_process
from nas_plugin.leaderboard import TrialRecord, best_of, progress_line, ranked, render
from nas_plugin.oneshot.job import link_search, run_search_phase
from nas_plugin.predictors import HeldOutCorrelation, PredictorError
from nas_plugin.prescreen import PrescreenConfig, Prescreener, PrescreenError
from nas_plugin.space import Encoding
from nas_plugin.strategies import Strategy, make_strategy
from nas_plugin.sweep_config import (
    SweepConfigError,
    SweepPlan,
    build_plan,
    check_against_job_config,
    format_value,
)
from nas_plugin.sweep_dir import prepare_sweep_dir
from nas_plugin.tracking.resume import (
    Replay,
    find_unfinished,
    fingerprint,
    load_replay,
    record_from_run,
)
from nas_plugin.tracking.screening import SearchAids
from nas_plugin.tracking.secrets import mask_override, mask_secrets
from nas_plugin.tracking.sweep_run import (
    SweepRun,
    TrackingLostError,
    open_store,
    resolve_tracking_uri,
)
from nas_plugin.tracking.trial import TAG_MODEL_URI, TAG_STATUS, TrackedTask, TrialOutcome
from nas_plugin.tracking.warm_start import WarmStartError, load_warm_start

log = logging.getLogger(__name__)

RESUME_MODES = ("auto", "never", "must")
REFILL_MODES = ("auto", "async", "batch")
# Consecutive already-seen proposals after which a strategy counts as exhausted.
MAX_DUPLICATE_PROPOSALS = 100


class SweepAbortedError(CompactHydraException, RuntimeError):
    """Too many trials failed (``max_failures``); finished trials are kept in MLflow."""


class NASSweeperImpl:
    def __init__(self, **_: Any) -> None:
        # The sweeper's settings are read from the composed config in setup(), where
        # interpolations into the app's config (e.g. ${experiment_name}) can still resolve.
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.launcher: Launcher | None = None
        self._composed_pairs: set[tuple[str, Any]] = set()
        self._replay: Replay | None = None
        # Optional: hydra/sweeper/prescreen and hydra/sweeper/predictor.
        self._aids = SearchAids()

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config

    # -- the sweep --------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> list[TrialRecord]:
        assert self.config is not None and self.hydra_context is not None
        sweeper_cfg = OmegaConf.to_container(self.config.hydra.sweeper, resolve=True)
        assert isinstance(sweeper_cfg, dict)
        plan = build_plan(sweeper_cfg, arguments)
        job_cfg = self._check_app_config(plan)
        resume = sweeper_cfg.get("resume", "auto")
        if resume not in RESUME_MODES:
            raise SweepConfigError(
                f"hydra.sweeper.resume={resume!r}; allowed: {list(RESUME_MODES)}"
            )
        strategy = make_strategy(plan.strategy_config, plan.space, plan.seed)
        self._aids = self._search_aids(plan, sweeper_cfg)

        prepare_sweep_dir(Path(str(self.config.hydra.sweep.dir)), self.config)
        mlflow_cfg = sweeper_cfg.get("mlflow") or {}
        uri = resolve_tracking_uri(mlflow_cfg.get("tracking_uri"))
        sweep_run = SweepRun(open_store(uri), uri, str(mlflow_cfg.get("experiment") or "nas"))
        # The hydra node is run-specific (times, output dirs): not part of the sweep's identity.
        app_cfg = {k: v for k, v in OmegaConf.to_container(job_cfg).items() if k != "hydra"}
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
            if getattr(strategy, "needs_search", False):
                raise SweepConfigError(
                    f"hydra.sweeper.warm_start does not apply to strategy '{strategy.name}': its "
                    "one candidate comes from its search job; drop warm_start"
                )
            strategy = warm.wrap(strategy)
        if unfinished is not None:
            sweep_run.attach(unfinished)
            self._replay = load_replay(
                sweep_run.client, sweep_run.experiment_id, unfinished, plan.space, plan.objective
            )
            log.info(
                "Resuming the unfinished sweep (parent run %s): %d finished trials are replayed "
                "to the strategy, %d interrupted ones run again (hydra.sweeper.resume=never "
                "starts afresh).",
                unfinished,
                len(self._replay.finished),
                len(self._replay.interrupted),
            )
        else:
            sweep_run.start(
                mlflow_cfg.get("run_name"),
                params={**_parent_params(plan, strategy), **self._aids.params()},
                files={
                    "search_space.json": json.dumps(plan.space.describe(), indent=2),
                    "sweep_config.yaml": OmegaConf.to_yaml(mask_secrets(sweeper_cfg)),
                    "command_line_overrides.txt": "\n".join(map(mask_override, arguments)) + "\n",
                },
                fingerprint=identity,
            )
            if warm is not None:
                warm.log(sweep_run.client, sweep_run.run_id)
        self._aids.attach(sweep_run.client, sweep_run.run_id)
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
        assert self.task_function is not None
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=self.hydra_context,
            task_function=TrackedTask(self.task_function, context),
            config=self.config,
        )
        prepare_launcher(self.launcher)
        log.info(
            "NAS sweep: %s, strategy=%s, search_space=%s (%s candidates), estimator=%s, "
            "MLflow %s, experiment '%s', parent run %s",
            _budget_text(plan.n_trials, strategy),
            strategy.name,
            plan.search_space_name,
            _size_text(plan.space.size()),
            plan.estimator.name,
            uri,
            sweep_run.experiment_name,
            sweep_run.run_id,
        )

        records: list[TrialRecord] = []
        status, note = "FINISHED", None
        if isinstance(plan.estimator, Hyperband):
            run = self._run_hyperband
        elif self._refill_async(plan, sweeper_cfg):
            run = self._run_trials_async
        else:
            run = self._run_trials
        searches = None
        lost = None
        try:
            if getattr(strategy, "needs_search", False):  # darts/gdas/proxyless: search first
                # `searches` independent searches; their distinct derived cells are the trials
                # (at most n_trials of them).
                searches = run_search_phase(
                    self.hydra_context,
                    self.config,
                    self.task_function,
                    plan.fixed_overrides,
                    strategy,
                    sweep_run,
                    strategy.options.searches,
                    plan.batch_size,
                )
                plan = dataclasses.replace(plan, n_trials=min(plan.n_trials, strategy.n_candidates))
                if strategy.n_candidates > plan.n_trials:
                    log.warning(
                        "The searches derived %d distinct cells; n_trials=%d trains the first %d.",
                        strategy.n_candidates,
                        plan.n_trials,
                        plan.n_trials,
                    )
            run(plan, strategy, sweep_run, records)
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
                finished = sum(1 for r in records if r.ok)
                message = sweep_run.lost_message(lost, cause, finished)
                raise TrackingLostError(message) from err
            raise
        finally:
            if lost is None:
                if warm is not None:
                    warm.tag_trials(sweep_run.client, records)
                if searches is not None:
                    link_search(sweep_run.client, searches, records)
                self._finish(plan, sweep_run, records, sweeper_cfg, status, note)
        return records

    def _refill_async(self, plan: SweepPlan, sweeper_cfg: dict[str, Any]) -> bool:
        """Whether trials start as soon as a worker frees up (no batch barrier)."""
        refill = sweeper_cfg.get("refill", "auto")
        if refill not in REFILL_MODES:
            raise SweepConfigError(
                f"hydra.sweeper.refill={refill!r}; allowed: {list(REFILL_MODES)}"
            )
        if refill == "batch" or plan.batch_size == 1:
            return False
        # The basic launcher runs jobs in this process, through Hydra's global state: one at a
        # time. Launchers that run jobs elsewhere take concurrent launches.
        in_process = runs_jobs_in_process(self.launcher)
        if refill == "async" and in_process:
            raise SweepConfigError(
                "hydra.sweeper.refill=async needs a launcher that runs jobs in other processes "
                "(joblib, submitit, ray); the basic launcher runs one job at a time"
            )
        return not in_process

    def _check_app_config(self, plan: SweepPlan) -> DictConfig:
        """Compose the app's config once with the fixed overrides; check every key we will set.

        Returns the composed config of a trial with no searched key set."""
        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        # Keys first (a clearer message than Hydra's), then whether the values compose.
        for overrides in (plan.fixed_overrides, plan.trial_overrides({})):
            try:
                job_cfg = loader.load_sweep_config(self.config, list(overrides))
            except Exception as err:
                raise SweepConfigError(
                    f"the app's config does not compose with the overrides {overrides}: {err}"
                ) from err
            check_against_job_config(plan, job_cfg)
        return job_cfg

    def _run_trials(
        self,
        plan: SweepPlan,
        strategy: Strategy,
        sweep_run: SweepRun,
        records: list[TrialRecord],
    ) -> None:
        seen: dict[Encoding, TrialRecord] = {}
        while len(records) < plan.n_trials:
            wanted = min(plan.batch_size, plan.n_trials - len(records))
            batch = self._next_candidates(strategy, seen, wanted, plan)
            if not batch:
                _log_exhausted(records)
                return
            new_records = self._launch(plan, batch, len(records), sweep_run, strategy.name)
            self._conclude(plan, strategy, seen, records, new_records)

    def _run_trials_async(
        self,
        plan: SweepPlan,
        strategy: Strategy,
        sweep_run: SweepRun,
        records: list[TrialRecord],
    ) -> None:
        """No batch barrier: up to ``batch_size`` trials in flight, one launch each; when one
        finishes, the strategy hears it and the next candidate starts at once.

        The strategy hears one result, then is asked to fill the free slots, then hears the
        next: so the order of results (tag ``nas.told``) fixes every ask and tell, and a
        resumed sweep replays its finished trials in that order to rebuild the strategy
        exactly, before it waits for anything new."""
        seen: dict[Encoding, TrialRecord] = {}
        in_flight: dict[Future, list[TrialRecord]] = {}
        replay_order = deque(self._replay.tell_order() if self._replay else [])
        next_number, exhausted, told = 0, False, 0
        with ThreadPoolExecutor(max_workers=plan.batch_size) as pool:
            while True:
                while (
                    not exhausted
                    and len(in_flight) < plan.batch_size
                    and (next_number < plan.n_trials)
                ):
                    pending = {r.encoding for batch in in_flight.values() for r in batch}
                    batch = self._next_candidates(strategy, seen, 1, plan, pending)
                    if not batch:
                        exhausted = True
                        _log_exhausted(records)
                        break
                    prepared = self._prepare(plan, batch, next_number)
                    next_number += 1
                    future = pool.submit(self._execute, plan, sweep_run, prepared)
                    in_flight[future] = prepared
                if not in_flight:
                    return
                if replay_order:
                    future = self._replay_next(in_flight, replay_order.popleft())
                else:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    # Several may finish together: the earliest trial first, the others after
                    # the refill (wait() hands them back at once).
                    future = min(done, key=lambda f: in_flight[f][0].number)
                future.result()  # _execute records failures itself; this re-raises bugs
                finished = self._settle(sweep_run, in_flight.pop(future), strategy.name)
                for record in finished:
                    if record.number not in (self._replay.told if self._replay else {}):
                        sweep_run.tag_told(record, told)
                    told += 1
                self._conclude(plan, strategy, seen, records, finished)

    def _replay_next(self, in_flight: dict[Future, list[TrialRecord]], number: int) -> Future:
        """The in-flight (replayed, so already done) trial the strategy heard next last time."""
        for future, batch in in_flight.items():
            if batch[0].number == number:
                return future
        running = sorted(batch[0].number for batch in in_flight.values())
        raise SweepAbortedError(
            f"cannot resume exactly: the strategy heard trial {number} next last time, but "
            f"now trials {running} are in flight; run with hydra.sweeper.resume=never to start "
            "a new sweep"
        )

    def _run_hyperband(
        self,
        plan: SweepPlan,
        strategy: Strategy,
        sweep_run: SweepRun,
        records: list[TrialRecord],
    ) -> None:
        """Successive halving brackets: new candidates at a small budget, the best promoted.

        The strategy hears each candidate once, when its climb ends (not promoted, or at the
        top rung), with the score at the largest budget it reached.
        """
        hyperband = plan.estimator
        assert isinstance(hyperband, Hyperband)
        seen: dict[Encoding, TrialRecord] = {}
        for bracket, rungs in hyperband.cycle():
            wanted = min(rungs[0].candidates, plan.n_trials - len(records))
            climbing = self._next_candidates(strategy, seen, wanted, plan)
            if not climbing:
                _log_exhausted(records)
                return
            for level, rung in enumerate(rungs):
                results: list[TrialRecord] = []
                for start in range(0, len(climbing), plan.batch_size):
                    if len(records) >= plan.n_trials:
                        break
                    chunk = climbing[start : start + plan.batch_size]
                    chunk = chunk[: plan.n_trials - len(records)]
                    budget = {hyperband.budget_key: rung.budget}
                    new_records = self._launch(
                        plan, chunk, len(records), sweep_run, strategy.name, extra=budget
                    )
                    for record in new_records:
                        record.budget, record.rung, record.bracket = rung.budget, level, bracket
                        sweep_run.tag_rung(record, hyperband.budget_key)
                    self._accept(plan, records, new_records)
                    results += new_records
                last_rung = level == len(rungs) - 1 or len(records) >= plan.n_trials
                keep = 0 if last_rung else rungs[level + 1].candidates
                promoted = promote([(r.encoding, _first(r.score)) for r in results], keep)
                for record in results:
                    seen[record.encoding] = record
                    if record.encoding not in promoted:
                        strategy.tell(record.encoding, record.score)
                climbing = promoted
                if not climbing:
                    break
            if len(records) >= plan.n_trials:
                return

    def _conclude(
        self,
        plan: SweepPlan,
        strategy: Strategy,
        seen: dict[Encoding, TrialRecord],
        records: list[TrialRecord],
        finished: list[TrialRecord],
    ) -> None:
        """Tell the strategy about finished trials, then book them."""
        for record in finished:
            seen[record.encoding] = record
            strategy.tell(record.encoding, record.score)
        self._accept(plan, records, finished)

    def _accept(
        self, plan: SweepPlan, records: list[TrialRecord], new_records: list[TrialRecord]
    ) -> None:
        """Book finished trials: scores, Pareto ranks, progress lines, the failure limit."""
        for record in new_records:
            records.append(record)
            self._aids.after_trial(record, len(records))
            if plan.objective.multi:
                _update_pareto_ranks(records)
            best = best_of(records)
            log.info(progress_line(record, len(records), plan.n_trials, best, plan.metric_name))
        failed = sum(1 for r in records if not r.ok)
        if 0 <= plan.max_failures < failed:
            last = next(r for r in reversed(records) if not r.ok)
            raise SweepAbortedError(
                f"{failed} trials failed, more than hydra.sweeper.max_failures="
                f"{plan.max_failures}; stopping the sweep. Last error (trial {last.number}): "
                f"{last.error}"
            )

    def _next_candidates(
        self,
        strategy: Strategy,
        seen: dict[Encoding, TrialRecord],
        wanted: int,
        plan: SweepPlan,
        running: set[Encoding] | None = None,
    ) -> list[Encoding]:
        if self._aids.prescreener is None:
            return self._propose(strategy, seen, wanted, plan, running)
        # Pre-screen: pools from the strategy, only the top of each is trained.
        return self._aids.next_candidates(
            lambda pool, exclude: self._propose(
                strategy, seen, pool, plan, (running or set()) | exclude
            ),
            wanted,
            reject=lambda encoding: strategy.tell(encoding, None),
            space=plan.space,
        )

    def _propose(
        self,
        strategy: Strategy,
        seen: dict[Encoding, TrialRecord],
        wanted: int,
        plan: SweepPlan,
        running: set[Encoding] | None = None,
    ) -> list[Encoding]:
        batch: list[Encoding] = []
        duplicates = 0
        running = running or set()
        while len(batch) < wanted and duplicates < MAX_DUPLICATE_PROPOSALS:
            candidate = strategy.ask()
            if candidate is None:
                break
            if candidate in seen or candidate in batch or candidate in running:
                # Identical candidates are never trained twice: the strategy hears the known score.
                duplicates += 1
                if candidate in seen:
                    known = seen[candidate]
                    strategy.tell(candidate, known.score)
                continue
            duplicates = 0
            batch.append(candidate)
        return batch

    def _launch(
        self,
        plan: SweepPlan,
        batch: list[Encoding],
        first_number: int,
        sweep_run: SweepRun,
        strategy_name: str,
        extra: dict[str, Any] | None = None,
    ) -> list[TrialRecord]:
        """Launch one batch; ``extra`` overrides (a budget) are set on every trial in it."""
        records = self._prepare(plan, batch, first_number, extra)
        self._execute(plan, sweep_run, records)
        return self._settle(sweep_run, records, strategy_name)

    def _prepare(
        self,
        plan: SweepPlan,
        batch: list[Encoding],
        first_number: int,
        extra: dict[str, Any] | None = None,
    ) -> list[TrialRecord]:
        """Number the candidates and compose their configs (sweeper thread only: Hydra's config
        loader is not thread-safe); fill those a resumed sweep already finished."""
        candidates, rejected = [], []
        extra_overrides = [f"{k}={format_value(v)}" for k, v in (extra or {}).items()]
        for encoding in batch:
            architecture = plan.space.decode(encoding)
            record = TrialRecord(
                number=-1,
                encoding=encoding,
                architecture=architecture,
                overrides=[*plan.trial_overrides(architecture), *extra_overrides],
            )
            try:
                self._check_composes(record)
                candidates.append(record)
            except Exception as err:  # noqa: BLE001 - recorded as this trial's failure
                record.status, record.error = "failed", f"config does not compose: {err}"
                rejected.append(record)
        records = [*candidates, *rejected]
        for number, record in enumerate(records, start=first_number):
            record.number = number
            self._replayed(record)
        return records

    def _execute(self, plan: SweepPlan, sweep_run: SweepRun, records: list[TrialRecord]) -> None:
        """Run the trials still undecided, one launch per run of consecutive numbers."""
        assert self.launcher is not None
        pending = [r for r in records if r.status == "running"]
        for group in _consecutive(pending):
            try:
                returns = self.launcher.launch(
                    [r.overrides for r in group], initial_job_idx=group[0].number
                )
            except Exception as err:  # noqa: BLE001 - a dead worker must not end the sweep
                self._recover_lost_batch(plan, sweep_run, group, err)
                continue
            for record, job in zip(group, returns, strict=True):
                _read_job_return(record, job)
                if record.ok:
                    record.score = plan.objective.score(record.metrics)

    def _settle(
        self, sweep_run: SweepRun, records: list[TrialRecord], strategy_name: str
    ) -> list[TrialRecord]:
        failed = next((r for r in records if r.status == "failed"), None)
        if failed is not None and sweep_run.unreachable() is not None:
            # Not the trial's fault: stop before launching more trials into a dead store.
            raise TrackingLostError(f"trial {failed.number} failed: {failed.error}")
        for record in records:
            if record.status == "failed" and record.run_id is None:
                record.run_id = sweep_run.record_unstarted_failure(record, strategy_name)
        return sorted(records, key=lambda r: r.number)

    def _recover_lost_batch(
        self, plan: SweepPlan, sweep_run: SweepRun, group: list[TrialRecord], err: Exception
    ) -> None:
        """The launcher raised (e.g. a joblib worker was killed): keep what finished in MLflow,
        record the rest as failed with the cause, and let the sweep go on."""
        cause = f"the job was lost ({type(err).__name__}: {err})"
        log.warning("A batch of %d trial(s) ended abnormally: %s", len(group), cause)
        for record in group:
            run = sweep_run.trial_run(record.number)
            finished = run is not None and run.data.tags.get(TAG_STATUS) in ("ok", "pruned")
            if finished and run.info.status == "FINISHED":
                known = record_from_run(run, record.number, plan.space, plan.objective)
                for name in ("status", "value", "score", "metrics", "run_id", "seconds"):
                    setattr(record, name, getattr(known, name))
                record.pruned_step = known.pruned_step
                continue
            record.status, record.error = "failed", cause
            if run is not None:
                record.run_id = run.info.run_id
                sweep_run.mark_lost(run.info.run_id, cause)

    def _replayed(self, record: TrialRecord) -> bool:
        """Fill ``record`` from the resumed sweep's finished trial of the same number, if any."""
        known = self._replay.finished.get(record.number) if self._replay else None
        if known is None:
            return False
        if known.encoding != record.encoding:
            raise SweepAbortedError(
                f"cannot resume exactly: trial {record.number} was {known.architecture}, but the "
                f"strategy now proposes {record.architecture}; run with "
                "hydra.sweeper.resume=never to start a new sweep"
            )
        for name in ("status", "value", "score", "metrics", "run_id", "error", "seconds"):
            setattr(record, name, getattr(known, name))
        record.pruned_step = known.pruned_step
        return True

    def _check_composes(self, record: TrialRecord) -> None:
        """Compose a candidate's config before launching it, as Hydra's validate_batch_is_legal
        does, but only while it holds a (key, value) not composed before: composing costs tens
        of milliseconds, and the launcher composes every job again anyway."""
        assert self.hydra_context is not None
        pairs = {(k, _value_kind(v)) for k, v in record.encoding}
        if pairs <= self._composed_pairs:
            return
        self.hydra_context.config_loader.load_sweep_config(self.config, list(record.overrides))
        self._composed_pairs |= pairs

    def _search_aids(self, plan: SweepPlan, sweeper_cfg: dict[str, Any]) -> SearchAids:
        """The configured pre-screen and learned predictor, checked before any trial."""
        try:
            held_out = HeldOutCorrelation.from_config(
                sweeper_cfg.get("predictor"), plan.space, plan.seed
            )
            config = PrescreenConfig.from_config(
                sweeper_cfg.get("prescreen"),
                seed=plan.seed,
                estimator_config=plan.estimator_config,
                has_predictor=held_out is not None,
            )
        except (PredictorError, PrescreenError) as err:
            raise SweepConfigError(str(err)) from err
        if held_out is not None and plan.objective.multi:
            raise SweepConfigError(
                f"hydra.sweeper.predictor.name={held_out.predictor.model} learns one score, but "
                f"the sweep has several objectives {list(plan.objective.metrics)}; select "
                "hydra/sweeper/predictor=none"
            )
        if config is None:
            return SearchAids(None, held_out)

        def compose(encoding: Encoding) -> DictConfig:
            # The proxy scores the network the trial would train.
            return self._compose(plan.trial_overrides(plan.space.decode(encoding)))

        predictor = held_out.predictor if held_out is not None else None
        return SearchAids(Prescreener(config, plan.n_trials, compose, predictor), held_out)

    def _compose(self, overrides: list[str]) -> DictConfig:
        """A trial's config exactly as its job composes it from ``overrides``."""
        assert self.hydra_context is not None
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def _log_missing_model(self, plan: SweepPlan, sweep_run: SweepRun, record: TrialRecord) -> None:
        """A trial about to be registered that logged no model (estimator=supernet logs none
        per trial, to stay cheap): the estimator logs it now, into the trial's run, if the
        app's ``log_model`` is true. A failure is a warning: the sweep's results stand."""
        end_time = None
        try:
            estimator = make_estimator(plan.estimator_config)
            if type(estimator).log_best_model is Estimator.log_best_model:
                return  # this estimator's trials log their own models (or none at all)
            run = sweep_run.client.get_run(record.run_id)
            if run.data.tags.get(TAG_MODEL_URI):
                return
            cfg = self._compose(record.overrides or plan.trial_overrides(record.architecture))
            if not OmegaConf.select(cfg, "log_model", default=False):
                return
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]  # as Hydra hands the job its config
            mlflow.set_tracking_uri(sweep_run.uri)
            # The trial's own run, resumed (it keeps its parent tag), then given back its
            # status and end time: the model lands beside the trial's metrics.
            end_time = run.info.end_time
            with mlflow.start_run(run_id=record.run_id, nested=mlflow.active_run() is not None):
                logged = estimator.log_best_model(cfg)
            if logged:
                log.info("Logged trial %d's model (estimator %s).", record.number, estimator.name)
        except Exception as err:  # noqa: BLE001 - the sweep's results must survive this
            log.warning(
                "Could not log the model of trial %d (run %s), so it cannot be registered; the "
                "sweep's results and leaderboard are kept. %s: %s",
                record.number,
                record.run_id,
                type(err).__name__,
                err,
            )
        if end_time is not None:
            try:
                sweep_run.client.set_terminated(record.run_id, "FINISHED", end_time)
            except Exception:  # noqa: BLE001 - the store may be gone; nothing more to keep
                pass

    def _register(
        self,
        plan: SweepPlan,
        sweep_run: SweepRun,
        records: list[TrialRecord],
        registry: dict[str, Any],
    ) -> None:
        """Register the best trial (or every Pareto-front member) that meets the constraint."""
        name = registry.get("model_name") or sweep_run.experiment_name
        alias = registry.get("alias") or "champion"
        eligible = [
            r
            for r in ranked(records)
            if plan.constraint is None or plan.constraint.holds(r.metrics)
        ]
        if plan.objective.multi and plan.pareto == "front":
            chosen = [r for r in eligible if r.pareto_rank == 0]
        else:
            chosen = eligible[:1]
        if not chosen:
            log.info(
                "No trial satisfies the registry constraint '%s'; nothing registered.",
                plan.constraint,
            )
            return
        versions = []
        for position, record in enumerate(chosen):
            self._log_missing_model(plan, sweep_run, record)
            version = sweep_run.register(
                record,
                name,
                alias if position == 0 else None,
                plan.objective,
                note=str(plan.constraint) if plan.constraint else None,
            )
            if version is None:
                log.info(
                    "Trial %d logged no model, so it was not registered; call "
                    "nas_plugin.log_model(model, input_example) in the task function.",
                    record.number,
                )
                continue
            versions.append(version)
        if versions:
            log.info(
                "Registered %s as '%s' version(s) %s, alias '%s' on version %s: "
                "mlflow.pyfunc.load_model('models:/%s@%s')",
                "the Pareto front" if len(chosen) > 1 else "the best model",
                name,
                ", ".join(versions),
                alias,
                versions[0],
                name,
                alias,
            )

    def _finish(
        self,
        plan: SweepPlan,
        sweep_run: SweepRun,
        records: list[TrialRecord],
        sweeper_cfg: dict[str, Any],
        status: str,
        note: str | None,
    ) -> None:
        self._aids.finish(plan.space)
        rows = int(sweeper_cfg.get("leaderboard_rows") or 10)
        columns = tuple(sweeper_cfg.get("leaderboard_columns") or ())
        table = render(records, plan.objective, rows, columns)
        print(table, flush=True)
        sweep_run.finish(records, plan.objective, table, status, note)
        best = best_of(records)
        if best is not None:
            log.info(
                "Best: trial %d, %s=%.4g, run %s",
                best.number,
                plan.metric_name,
                best.value,
                best.run_id,
            )
            if plan.objective.multi:
                front = sum(1 for r in records if r.pareto_rank == 0)
                log.info(
                    "Pareto front: %d trials (tag nas.pareto_front=true, "
                    "artifact pareto_front.csv)",
                    front,
                )
            registry = sweeper_cfg.get("registry") or {}
            if registry.get("enabled", True):
                self._register(plan, sweep_run, records, registry)
        log.info(
            "Compare the trials in the MLflow UI: mlflow ui --backend-store-uri %s  then open "
            "http://127.0.0.1:5000/#/experiments/%s/runs/%s",
            sweep_run.uri,
            sweep_run.experiment_id,
            sweep_run.run_id,
        )


def _consecutive(records: list[TrialRecord]) -> list[list[TrialRecord]]:
    """Runs of consecutive trial numbers: each is one launch (job indices are contiguous)."""
    groups: list[list[TrialRecord]] = []
    for record in records:
        if groups and groups[-1][-1].number + 1 == record.number:
            groups[-1].append(record)
        else:
            groups.append([record])
    return groups


def _log_exhausted(records: list[TrialRecord]) -> None:
    log.info(
        "The strategy has no new candidates after %d trials: the search space is exhausted.",
        len(records),
    )


def _first(score: float | tuple[float, ...] | None) -> float | None:
    return score[0] if isinstance(score, tuple) else score


def _update_pareto_ranks(records: list[TrialRecord]) -> None:
    from nas_plugin.pareto import non_dominated_sort

    done = [r for r in records if r.ok and isinstance(r.score, tuple)]
    for rank, front in enumerate(non_dominated_sort([r.score for r in done])):
        for index in front:
            done[index].pareto_rank = rank


def _read_job_return(record: TrialRecord, job: JobReturn) -> None:
    # JobReturn.return_value re-raises a failed job's exception; _return_value does not.
    value = job._return_value
    if job.status == JobStatus.COMPLETED and isinstance(value, TrialOutcome):
        # A pruned trial counts with the score it reached (see nas_plugin.pruning).
        record.status = "ok" if value.pruned_step is None else "pruned"
        record.value, record.pruned_step = value.value, value.pruned_step
        record.metrics, record.run_id, record.seconds = value.metrics, value.run_id, value.seconds
        return
    record.status = "failed"
    if isinstance(value, BaseException):
        record.error = f"{type(value).__name__}: {value}"
        record.run_id = getattr(value, "nas_run_id", None)
    else:
        record.error = f"job ended with status {job.status} and returned {value!r}"


def _value_kind(value: Any) -> Any:
    # OmegaConf checks a number or a bool by its type only (no range validators), so one
    # composition per type suffices; a string may be an enum member, so each string counts.
    if isinstance(value, bool | int | float):
        return (type(value).__name__,)
    return value


def _parent_params(plan: SweepPlan, strategy: Strategy) -> dict[str, Any]:
    params: dict[str, Any] = {
        "n_trials": plan.n_trials,
        "batch_size": plan.batch_size,
        "seed": plan.seed,
        "max_failures": plan.max_failures,
        **plan.objective.describe(),
        "search_space": plan.search_space_name,
        "search_space.size": _size_text(plan.space.size()),
        "strategy": strategy.name,
    }
    params.update({f"strategy.{k}": v for k, v in plan.strategy_config.items() if k != "name"})
    params.update({f"estimator.{k}": v for k, v in plan.estimator.describe().items()})
    params.update({f"pruner.{k}" if k != "name" else "pruner": v for k, v in plan.pruner.items()})
    return params


def _budget_text(n_trials: int, strategy: Strategy) -> str:
    """``40 trials``; for a one-shot strategy ``2 searches, then at most 40 trials``."""
    if getattr(strategy, "needs_search", False):
        searches = strategy.options.searches  # type: ignore[attr-defined]
        return f"{searches} search{'es' if searches > 1 else ''}, then at most {n_trials} trials"
    return f"{n_trials} trials"


def _size_text(size: float) -> str:
    return "infinite" if size == float("inf") else str(int(size))
