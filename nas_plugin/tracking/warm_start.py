"""Warm starts: begin a search from what an earlier MLflow experiment learned.

``hydra.sweeper.warm_start.experiment=NAME`` reads the finished trials of experiment NAME
(every sweep in it, oldest first, or one sweep: ``parent_run``) before any trial runs:

- ``mode: observations`` (the same search space): the trials are told to the strategy, in the
  order they ran, before its first ask, through the exact-resume replay (``load_replay``): an
  evolution's population, a surrogate's data, a hill climber's start are the earlier ones.
  Their scores are recomputed with this sweep's objective, so its metric must be logged there.
- ``mode: best`` (a related space, another task): the ``top`` best earlier architectures, by the
  earlier sweep's own objective, are this sweep's first candidates. Only their values for keys
  of the new space are kept, each checked against it; keys the new space lacks are dropped and
  keys the earlier trials lack (or values the new space does not allow) are drawn at random
  (seeded), each with one logged warning.

Where a warm start came from is recorded on the parent run (params ``warm_start.*``, tag
``nas.warm_start.parent_runs``, artifact ``warm_start.json``) and, in mode ``best``, on each
seeded trial (tag ``nas.warm_start.source_run``). A resumed sweep takes its warm start from that
record, not from the experiment as it is now (which may have grown since): the strategy is
seeded exactly as the first time, so it proposes the same candidates again.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow.tracking import MlflowClient

from nas_plugin.leaderboard import TrialRecord
from nas_plugin.objective import Objective
from nas_plugin.space import Encoding, SearchSpace, SearchSpaceError
from nas_plugin.space.params import freeze, thaw
from nas_plugin.strategies.base import Score, Strategy
from nas_plugin.strategies.warm import WarmStarted
from nas_plugin.tracking.resume import load_replay, record_from_run
from nas_plugin.tracking.sweep_run import open_store, resolve_tracking_uri
from nas_plugin.tracking.trial import TAG_ENCODING, TAG_STATUS, TAG_TRIAL

log = logging.getLogger(__name__)

MODES = ("observations", "best")
KEY = "hydra.sweeper.warm_start"
ARTIFACT = "warm_start.json"
TAG_PARENT_RUNS = "nas.warm_start.parent_runs"
TAG_SOURCE_RUN = "nas.warm_start.source_run"


class WarmStartError(ValueError):
    """A warm start that cannot work, found before any trial runs."""


@dataclass
class WarmStart:
    """What an earlier experiment hands this sweep, with where each piece came from."""

    experiment: str
    mode: str
    top: int | None
    uri: str
    parent_runs: list[str]
    # mode observations: (encoding, score) told to the strategy, and the run each came from.
    observations: list[tuple[Encoding, Score | None]] = field(default_factory=list)
    # mode best: the first candidates, and the earlier run each came from.
    first: list[Encoding] = field(default_factory=list)
    sources: list[tuple[str, float | None]] = field(default_factory=list)  # (run id, value)

    def wrap(self, strategy: Strategy) -> Strategy:
        return WarmStarted(strategy, self.observations, self.first)

    def params(self) -> dict[str, Any]:
        return {
            "warm_start.experiment": self.experiment,
            "warm_start.mode": self.mode,
            "warm_start.top": "all" if self.top is None else self.top,
            "warm_start.trials": len(self.observations) or len(self.first),
        }

    def describe(self) -> dict[str, Any]:
        """The ``warm_start.json`` artifact: every encoding handed over, with its source run."""
        encodings = [e for e, _ in self.observations] or self.first
        return {
            "experiment": self.experiment,
            "tracking_uri": self.uri,
            "mode": self.mode,
            "parent_runs": self.parent_runs,
            "trials": [
                {"architecture": {k: thaw(v) for k, v in encoding}, "run_id": run, "value": value}
                for encoding, (run, value) in zip(encodings, self.sources, strict=True)
            ],
        }

    def log(self, client: MlflowClient, run_id: str) -> None:
        """Record the warm start's origin on the sweep's parent run."""
        from mlflow.entities import Param, RunTag

        client.log_batch(
            run_id,
            params=[Param(k, str(v)) for k, v in self.params().items()],
            tags=[RunTag(TAG_PARENT_RUNS, ",".join(self.parent_runs)[:5000])],
        )
        client.log_text(run_id, json.dumps(self.describe(), indent=2), ARTIFACT)

    def tag_trials(self, client: MlflowClient, records: list[TrialRecord]) -> None:
        """Mode best: tag each trial that ran a seeded candidate with the run it came from."""
        if self.mode != "best":
            return
        source = {e: run for e, (run, _) in zip(self.first, self.sources, strict=True)}
        for record in records:
            if record.run_id and record.encoding in source:
                client.set_tag(record.run_id, TAG_SOURCE_RUN, source[record.encoding])


def load_warm_start(
    config: Mapping[str, Any] | None,
    sweep_uri: str,
    space: SearchSpace,
    objective: Objective,
    seed: int,
    resuming: str | None = None,
) -> WarmStart | None:
    """Read and check the warm start ``config`` asks for; None when it is off.

    ``resuming``: the parent run of the sweep being resumed. Its warm start is the one it
    recorded (``warm_start.json``), re-read run by run, so a source experiment that has grown
    since changes nothing; without a record, the experiment is read afresh, that sweep left out.
    Raises ``WarmStartError`` naming the key, the value and what is allowed."""
    config = dict(config or {})
    experiment = config.get("experiment")
    if experiment in (None, ""):
        return None
    mode = config.get("mode", "observations")
    if mode not in MODES:
        raise WarmStartError(f"{KEY}.mode={mode!r}; allowed: {list(MODES)}")
    top = config.get("top")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise WarmStartError(f"{KEY}.top={top!r} must be a positive integer (or null: all)")
    if mode == "best" and top is None:
        top = 1
    uri = resolve_tracking_uri(config.get("tracking_uri") or sweep_uri)
    client = open_store(uri)
    recorded = _recorded(sweep_uri, resuming) if resuming is not None else None
    if recorded is not None:
        return _from_record(recorded, client, str(experiment), mode, top, uri, space, objective)
    found = client.get_experiment_by_name(str(experiment))
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise WarmStartError(
            f"{KEY}.experiment={experiment!r}: no such experiment in {uri}; "
            f"experiments there: {names}"
        )
    parents = _parent_runs(client, found.experiment_id, config.get("parent_run"), experiment)
    parents = [p for p in parents if p != resuming]
    warm = WarmStart(str(experiment), mode, top, uri, parents)
    if mode == "observations":
        _observations(warm, client, found.experiment_id, space, objective)
    else:
        _best(warm, client, found.experiment_id, space, config, seed)
    log.info(
        "Warm start from experiment '%s' (%s): %d %s from %d sweep(s).",
        experiment,
        mode,
        len(warm.observations) or len(warm.first),
        "observations told to the strategy" if mode == "observations" else "first candidates",
        len(parents),
    )
    return warm


def _recorded(sweep_uri: str, parent_run: str) -> dict[str, Any] | None:
    """The warm start a sweep recorded on its parent run, if it did."""
    client = MlflowClient(resolve_tracking_uri(sweep_uri))  # the sweep has reached it already
    if ARTIFACT not in {f.path for f in client.list_artifacts(parent_run)}:
        return None
    with tempfile.TemporaryDirectory() as folder:
        with open(client.download_artifacts(parent_run, ARTIFACT, folder)) as handle:
            return json.load(handle)


def _from_record(
    recorded: Mapping[str, Any],
    client: MlflowClient,
    experiment: str,
    mode: str,
    top: int | None,
    uri: str,
    space: SearchSpace,
    objective: Objective,
) -> WarmStart:
    """The warm start a resumed sweep recorded: the same runs, in the same order."""
    warm = WarmStart(experiment, mode, top, uri, list(recorded.get("parent_runs") or []))
    for trial in recorded["trials"]:
        run_id, value = trial["run_id"], trial["value"]
        warm.sources.append((run_id, value))
        if mode == "best":  # the candidates as they were mapped onto this space
            warm.first.append(space.encode(trial["architecture"]))
            continue
        try:
            run = client.get_run(run_id)
        except Exception as err:  # noqa: BLE001 - MLflow raises its own error for a lost run
            raise WarmStartError(
                f"{KEY}: the sweep being resumed was warm-started from run {run_id} of "
                f"experiment {experiment!r}, which cannot be read any more ({err}); resume "
                "with hydra.sweeper.resume=never to start a new sweep"
            ) from err
        record = record_from_run(run, 0, space, objective)
        warm.observations.append((record.encoding, record.score))
    log.info(
        "Warm start as the resumed sweep recorded it: %d %s from experiment '%s'.",
        len(warm.sources),
        "observations" if mode == "observations" else "first candidates",
        experiment,
    )
    return warm


def _parent_runs(
    client: MlflowClient, experiment_id: str, parent_run: str | None, experiment: str
) -> list[str]:
    """The sweeps to read, oldest first."""
    runs = client.search_runs(
        [experiment_id],
        filter_string="tags.`nas.sweep` = 'parent'",
        order_by=["attributes.start_time ASC"],
        max_results=50000,
    )
    ids = [r.info.run_id for r in runs]
    if parent_run is not None:
        if parent_run not in ids:
            raise WarmStartError(
                f"{KEY}.parent_run={parent_run!r} is not a sweep of experiment {experiment!r}; "
                f"its sweeps: {ids}"
            )
        return [parent_run]
    return ids


def _observations(
    warm: WarmStart,
    client: MlflowClient,
    experiment_id: str,
    space: SearchSpace,
    objective: Objective,
) -> None:
    """Every finished trial, in the order it ran, scored by this sweep's objective."""
    by_encoding: dict[Encoding, TrialRecord] = {}
    for parent in warm.parent_runs:
        try:
            replay = load_replay(
                client, experiment_id, parent, space, objective, mark_interrupted=False
            )
        except SearchSpaceError as err:
            raise WarmStartError(_mismatch(warm, parent, str(err))) from err
        except KeyError as err:  # objective.score of a trial that lacks the metric
            raise WarmStartError(
                f"{KEY}.mode=observations scores the earlier trials with this sweep's "
                f"objective, but the trials of experiment {warm.experiment!r} (sweep {parent}) "
                f"have no metric {err}. Use {KEY}.mode=best to seed candidates instead."
            ) from err
        for number in sorted(replay.finished):
            record = replay.finished[number]
            if record.status != "ok":
                continue
            extra = sorted(set(record.architecture) - {k for k, _ in record.encoding})
            if extra:  # encode() ignores keys the space lacks: the same space has none
                raise WarmStartError(
                    _mismatch(warm, parent, f"its trial {number} also sets {extra}")
                )
            known = by_encoding.get(record.encoding)
            # A candidate seen twice (a Hyperband climb) counts once, at its largest budget.
            if known is None or (record.budget or 0) >= (known.budget or 0):
                by_encoding.pop(record.encoding, None)
                by_encoding[record.encoding] = record
    records = list(by_encoding.values())
    if not records:
        raise WarmStartError(_no_trials(warm))
    if warm.top is not None:
        best = sorted(records, key=lambda r: r.score, reverse=True)[: warm.top]
        records = [r for r in records if r in best]  # still in the order they ran
    warm.observations = [(r.encoding, r.score) for r in records]
    warm.sources = [(r.run_id or "", r.value) for r in records]


def _best(
    warm: WarmStart,
    client: MlflowClient,
    experiment_id: str,
    space: SearchSpace,
    config: Mapping[str, Any],
    seed: int,
) -> None:
    """The ``top`` best earlier architectures, mapped onto this sweep's space."""
    metric, direction = _earlier_objective(client, warm, config)
    trials = []
    for parent in warm.parent_runs:
        runs = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and tags.`{TAG_STATUS}` = 'ok'",
            max_results=50000,
        )
        for run in runs:
            value = run.data.metrics.get(metric)
            if TAG_TRIAL in run.data.tags and value is not None and run.info.status == "FINISHED":
                trials.append((value, run))
    if not trials:
        raise WarmStartError(_no_trials(warm, metric))
    trials.sort(key=lambda t: t[0], reverse=direction == "maximize")

    rng = random.Random(seed)
    dropped: set[str] = set()
    filled: set[str] = set()
    kept_seen: set[tuple] = set()
    overlap = False
    for value, run in trials:
        architecture = json.loads(run.data.tags[TAG_ENCODING])
        overlap = overlap or any(k in space.names for k in architecture)
        dropped |= {k for k in architecture if k not in space.names}
        encoding, kept = _complete(space, architecture, rng, filled)
        # Two earlier architectures that differ only in dropped keys are one candidate here.
        if kept in kept_seen or encoding in warm.first:
            continue
        kept_seen.add(kept)
        warm.first.append(encoding)
        warm.sources.append((run.info.run_id, value))
        if len(warm.first) == warm.top:
            break
    if not overlap:
        earlier = sorted(json.loads(trials[0][1].data.tags[TAG_ENCODING]))
        raise WarmStartError(
            f"{KEY}.experiment={warm.experiment!r}: its architectures share no key with this "
            f"search space (space mismatch): they have {earlier}, this space has "
            f"{list(space.names)}"
        )
    if dropped:
        log.warning("Warm start: keys not in this search space are dropped: %s", sorted(dropped))
    if filled:
        log.warning(
            "Warm start: keys the earlier architectures lack or whose values this space does "
            "not allow are drawn at random: %s",
            sorted(filled),
        )


def _earlier_objective(
    client: MlflowClient, warm: WarmStart, config: Mapping[str, Any]
) -> tuple[str, str]:
    """The metric and direction that rank the earlier trials: configured, else the newest
    earlier sweep's own objective (its first metric, for a multi-objective sweep)."""
    params = client.get_run(warm.parent_runs[-1]).data.params if warm.parent_runs else {}
    metric = config.get("metric") or params.get("objective.metric", "objective").split(",")[0]
    direction = (
        config.get("direction") or params.get("objective.direction", "maximize").split(",")[0]
    )
    if direction not in ("maximize", "minimize"):
        raise WarmStartError(f"{KEY}.direction={direction!r}; allowed: ['maximize', 'minimize']")
    return str(metric), str(direction)


def _complete(
    space: SearchSpace, architecture: Mapping[str, Any], rng: random.Random, filled: set[str]
) -> tuple[Encoding, tuple]:
    """``architecture``'s values for the space's keys, each checked; the rest drawn at random.

    Returns the encoding and the (key, value) pairs taken from ``architecture``."""
    decided: dict[str, Any] = {}
    kept = []
    for param in space.params:
        if not space.is_active(param, decided):
            continue
        value = freeze(architecture.get(param.name))
        if param.name in architecture and param.contains(value):
            decided[param.name] = value
            kept.append((param.name, value))
        else:
            filled.add(param.name)
            decided[param.name] = param.sample(rng)
    return tuple(decided.items()), tuple(kept)


def _mismatch(warm: WarmStart, parent: str, detail: str) -> str:
    return (
        f"{KEY}.mode=observations needs the same search space, but experiment "
        f"{warm.experiment!r} (sweep {parent}) does not fit this one: {detail}. "
        f"Use {KEY}.mode=best for a related space."
    )


def _no_trials(warm: WarmStart, metric: str | None = None) -> str:
    what = f" with metric {metric!r}" if metric else ""
    return (
        f"{KEY}.experiment={warm.experiment!r} has no finished trials{what} to start from "
        f"({len(warm.parent_runs)} sweep(s) in {warm.uri})"
    )
