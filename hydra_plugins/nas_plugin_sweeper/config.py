"""The ``hydra/sweeper=nas`` config schema, registered in Hydra's ConfigStore.

Kept free of torch and mlflow imports: Hydra imports every module here when it discovers plugins.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ObjectiveConf:
    # The key of the metric dict a trial returns that the search optimises; null when the task
    # function returns a single number. A list of keys makes the sweep multi-objective (a
    # Pareto front; use a multi-objective strategy such as nsga2).
    metric: Any = None
    # maximize or minimize; for several metrics, one or a list with one per metric.
    direction: Any = "maximize"
    # MnasNet's reward metric * (cost / target) ** weight as the one objective, e.g.
    # {cost: latency_ms, target: 2.0, weight: -0.07}; null: the metric itself.
    reward: Any = None


@dataclass
class MLflowConf:
    # null: MLflow's own default (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working
    # directory). Relative SQLite/file paths are made absolute so that jobs in other processes or
    # other working directories write to the same store.
    tracking_uri: str | None = None
    # One experiment per sweep config; every sweep is one parent run in it.
    experiment: str = "nas"
    # Name of the sweep's parent run; null: "sweep-<date>-<time>".
    run_name: str | None = None


@dataclass
class RegistryConf:
    # Register the best trial's logged model at the end of the sweep.
    enabled: bool = True
    # Registered model name; null: the experiment name.
    model_name: str | None = None
    # Alias pointing at the newly registered best version.
    alias: str = "champion"
    # Only trials meeting this may be registered, e.g. "latency_ms <= 5"; null: any trial.
    constraint: str | None = None
    # Multi-objective sweeps: "best" registers the front member best on the first metric;
    # "front" registers every Pareto-front member as its own version (alias on the best).
    pareto: str = "best"


@dataclass
class WarmStartConf:
    # Start from an earlier MLflow experiment of this name; null: off (a cold start).
    experiment: str | None = None
    # "observations" (same search space): its finished trials are told to the strategy before
    # the first ask (an evolution's population starts from them); "best" (a related space or
    # another task): its best architectures are the first candidates of this sweep.
    mode: str = "observations"
    # observations: only the N best (null: all); best: how many architectures (null: 1).
    top: int | None = None
    # Store of the earlier experiment; null: this sweep's own (hydra.sweeper.mlflow).
    tracking_uri: str | None = None
    # One sweep (parent run id) of the experiment; null: every sweep in it, oldest first.
    parent_run: str | None = None
    # mode best: the metric and direction that rank the earlier trials; null: the earlier
    # sweep's own objective (its first metric).
    metric: str | None = None
    direction: str | None = None


@dataclass
class NASSweeperConf:
    _target_: str = "hydra_plugins.nas_plugin_sweeper.nas_sweeper.NASSweeper"
    defaults: list[Any] = field(
        default_factory=lambda: [
            {"strategy": "random"},
            {"search_space": "custom"},
            {"estimator": "full"},
            {"pruner": "none"},
            {"prescreen": "none"},
            {"predictor": "none"},
        ]
    )
    # How many distinct candidates to evaluate (each is one Hydra job and one MLflow child run).
    n_trials: int = 10
    # Candidates handed to the launcher at once (a parallel launcher runs them side by side).
    batch_size: int = 1
    # "auto": with a launcher that runs jobs in other processes (joblib, submitit, ray) and
    # batch_size > 1, keep batch_size trials in flight and start the next candidate as soon as
    # one finishes (no batch barrier); "async": the same, an error with the basic launcher;
    # "batch": launch in batches and wait for each (same seed, same candidates on every run).
    refill: str = "auto"
    # Seeds the strategy: the same seed proposes the same candidates.
    seed: int = 0
    # Stop the sweep once more than this many trials have failed; -1 never stops.
    max_failures: int = 3
    # Seconds a trial may run before it is stopped and recorded as failed; null: no limit.
    trial_timeout: float | None = None
    # Exact resume of a killed sweep: "auto" continues the unfinished sweep with the same config
    # and command line if there is one (its finished trials are replayed, the interrupted ones
    # run again); "never" always starts afresh; "must" fails if there is nothing to resume.
    resume: str = "auto"
    # GPUs each trial gets to itself (0: none assigned; trials use train.device as configured).
    # With the joblib launcher each worker process claims its own GPUs and sets
    # CUDA_VISIBLE_DEVICES (n_jobs = -1 becomes the number of GPU slots); it sets submitit's
    # gpus_per_node and Ray's num_gpus. Tag nas.gpus on each trial. See
    # nas_plugin/hardware/gpu_slots.py.
    gpus_per_trial: int = 0
    objective: ObjectiveConf = field(default_factory=ObjectiveConf)
    # Search space over the app's own config keys, merged with the chosen search_space's params:
    # {key: [choices]} | {key: {low, high[, step]}} (integers, high included) |
    # {key: {low, high, log}} (floats) | any of these with when: {other_key: value}.
    # Hydra sweep syntax works too: choice(a,b), range(1,5) (5 excluded, as in Hydra),
    # interval(0.1,1.0), tag(log, interval(1e-4,1e-1)).
    params: dict[str, Any] = field(default_factory=dict)
    # Chosen from the config groups hydra/sweeper/{strategy,search_space,estimator}.
    strategy: Any = MISSING
    search_space: Any = MISSING
    estimator: Any = MISSING
    # Stops unpromising trials early from their reported curves (hydra/sweeper/pruner group:
    # none | median | asha | curve; the job reports with nas_plugin.report or a callback).
    pruner: Any = MISSING
    # Optional: hydra/sweeper/prescreen (none | zero_cost), hydra/sweeper/predictor (none | gp |
    # mlp).
    prescreen: Any = MISSING
    predictor: Any = MISSING
    mlflow: MLflowConf = field(default_factory=MLflowConf)
    registry: RegistryConf = field(default_factory=RegistryConf)
    # Transfer from an earlier search (see WarmStartConf); off unless warm_start.experiment is set.
    warm_start: WarmStartConf = field(default_factory=WarmStartConf)
    # Rows of the leaderboard printed at the end (the CSV artifact has every trial).
    leaderboard_rows: int = 10
    # Metrics shown beside the objective in the printed leaderboard (hardware cost, say).
    leaderboard_columns: list[str] = field(default_factory=lambda: ["params", "latency_ms"])


ConfigStore.instance().store(
    group="hydra/sweeper", name="nas", node=NASSweeperConf, provider="nas_plugin"
)
