"""The sweeper's glue for one-shot strategies (``darts``, ``gdas``, ``proxyless``).

Before the ordinary trial loop, :func:`run_search_phase` launches **one search job** through
the sweep's own launcher (so it runs where trials run: in process, a joblib worker, a SLURM
job). The job (:class:`SearchTask`) opens an MLflow child run of the sweep named ``search``
(tag ``nas.role=search``, no ``nas.trial``: it is not a trial and not on the leaderboard), runs
the bilevel search on the app's task and model size, and logs:

- per epoch: ``alpha.<edge>.<op>`` (softmax weights), ``search_train_loss``,
  ``search_arch_loss``, ``search_derived_val_accuracy`` (the current argmax cell with inherited
  weights), ``search_skip_edges``, ``search_seconds`` (and ``search_tau``,
  ``search_expected_latency_us`` where they apply);
- param ``derived_arch`` and tag ``nas.derived_arch`` (the NB201 string); artifacts
  ``search/genotype.json`` (string, per-edge ops, final weights), ``search/alphas.json`` (the
  weights per epoch), ``search/latency_lut.json`` (when a latency term is used).

The strategy's only candidate is then the derived cell: trial 0, trained from scratch by the
sweep's estimator. :func:`link_search` tags the two runs with each other's id
(``nas.search_run_id`` on the trial, ``nas.derived_run_id`` on the search run). A resumed sweep
reuses a finished search run of the same parent instead of searching again. Its Hydra job
directory is ``<sweep dir>/search``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from omegaconf import DictConfig

TAG_ROLE = "nas.role"
TAG_DERIVED_ARCH = "nas.derived_arch"
TAG_SEARCH_RUN = "nas.search_run_id"
TAG_DERIVED_RUN = "nas.derived_run_id"


class SearchFailedError(RuntimeError):
    """The one-shot search job failed; the sweep cannot have a candidate."""


class SearchTask:
    """The search job's body (picklable, like ``TrackedTask``)."""

    def __init__(
        self, tracking_uri: str, experiment_id: str, parent_run_id: str, settings: dict[str, Any]
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.settings = settings

    def __call__(self, cfg: DictConfig) -> dict[str, Any]:
        from nas_plugin.tracking.trial import TAG_STATUS, TAG_STRATEGY, TAG_WORKER, worker_name

        mlflow.set_tracking_uri(self.tracking_uri)
        client = MlflowClient(self.tracking_uri)
        run = client.create_run(
            self.experiment_id,
            run_name="search",
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id,
                MLFLOW_RUN_NAME: "search",
                TAG_ROLE: "search",
                TAG_STRATEGY: str(self.settings["method"]),
                TAG_STATUS: "running",
                TAG_WORKER: worker_name(),
            },
        )
        run_id = run.info.run_id
        client.log_batch(
            run_id, params=[Param(f"search.{k}", str(v)) for k, v in self.settings.items()]
        )
        try:
            with mlflow.start_run(run_id=run_id):
                result = run_search(cfg, self.settings)
        except BaseException as err:
            from nas_plugin.tracking.trial import _record_failure

            _record_failure(client, run_id, err)
            raise
        client.log_batch(
            run_id,
            params=[Param("derived_arch", result["arch_str"])],
            tags=[RunTag(TAG_DERIVED_ARCH, result["arch_str"]), RunTag(TAG_STATUS, "ok")],
        )
        return {"run_id": run_id, **result}


def run_search(cfg: DictConfig, settings: dict[str, Any]) -> dict[str, Any]:
    """Search on the job's task with its model size (``model.channels``,
    ``model.cells_per_stage``) and seed; log to the active run. Returns the derived cell."""
    import torch

    from nas_plugin.oneshot.data import task_key, vision_data
    from nas_plugin.oneshot.search import SearchSettings, search
    from nas_plugin.space.nb201 import EDGE_KEYS

    train_cfg = cfg.get("train") or {}
    torch.set_num_threads(int(train_cfg.get("num_threads", 1)))
    seed = int(cfg.seed)
    data, preprocess = vision_data(
        task_key(cfg.task), float(train_cfg.get("train_fraction", 1.0)), seed
    )
    known = set(SearchSettings.__dataclass_fields__) - {"extra"}
    search_settings = SearchSettings(**{k: v for k, v in settings.items() if k in known})
    started = time.perf_counter()
    result = search(
        search_settings,
        data,
        preprocess,
        int(cfg.model.channels),
        int(cfg.model.cells_per_stage),
        int(cfg.task.resolution),
        seed,
        log_epoch=lambda epoch, metrics: mlflow.log_metrics(metrics, step=epoch),
    )
    seconds = time.perf_counter() - started
    mlflow.log_metric("search_total_seconds", seconds)
    genotype = {
        "arch_str": result.arch_str,
        "cell": dict(zip(EDGE_KEYS, result.ops, strict=True)),
        "method": settings["method"],
        "weights": result.alphas[-1] if result.alphas else None,
    }
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "genotype.json").write_text(json.dumps(genotype, indent=2))
        (root / "alphas.json").write_text(json.dumps(result.alphas))
        if result.lut is not None:
            (root / "latency_lut.json").write_text(json.dumps(result.lut, indent=2))
        mlflow.log_artifacts(folder, "search")
    return {
        "arch_str": result.arch_str,
        "cell": genotype["cell"],
        "seconds": seconds,
        "metrics": {k: v for k, v in result.metrics.items() if not k.startswith("alpha.")},
    }


def run_search_phase(
    hydra_context: Any,
    config: DictConfig,
    task_function: Any,
    fixed_overrides: list[str],
    strategy: Any,
    sweep_run: Any,
) -> str:
    """Run (or, on resume, reuse) the search job; give the strategy its derived cell.

    Returns the search run's id."""
    from hydra.core.plugins import Plugins
    from hydra.core.utils import JobStatus

    previous = _finished_search(sweep_run)
    if previous is not None:
        run_id, cell = previous
        strategy.derive(cell)
        return run_id
    launcher = Plugins.instance().instantiate_launcher(
        hydra_context=hydra_context,
        task_function=SearchTask(
            sweep_run.uri, sweep_run.experiment_id, sweep_run.run_id, strategy.search_settings()
        ),
        config=config,
    )
    overrides = [*fixed_overrides, "hydra.sweep.subdir=search"]
    (job,) = launcher.launch([overrides], initial_job_idx=0)
    value = job._return_value  # .return_value re-raises a failed job's exception
    if job.status != JobStatus.COMPLETED or not isinstance(value, dict):
        raise SearchFailedError(
            f"the {strategy.name} search job failed ({type(value).__name__}: {value}); see the "
            "sweep's MLflow child run 'search' (trial/error.txt)"
        )
    strategy.derive(value["cell"])
    return str(value["run_id"])


def link_search(client: MlflowClient, search_run_id: str, trial_run_ids: list[str]) -> None:
    """Tag the search run and the derived architecture's trial run(s) with each other's id."""
    for run_id in trial_run_ids:
        client.set_tag(run_id, TAG_SEARCH_RUN, search_run_id)
    if trial_run_ids:
        client.set_tag(search_run_id, TAG_DERIVED_RUN, ",".join(trial_run_ids))


def _finished_search(sweep_run: Any) -> tuple[str, dict[str, str]] | None:
    runs = sweep_run.client.search_runs(
        [sweep_run.experiment_id],
        filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{sweep_run.run_id}' and "
        f"tags.`{TAG_ROLE}` = 'search' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs or TAG_DERIVED_ARCH not in runs[0].data.tags:
        return None
    from nas_plugin.space.nb201 import EDGE_KEYS, from_arch_str

    ops = from_arch_str(runs[0].data.tags[TAG_DERIVED_ARCH])
    return runs[0].info.run_id, dict(zip(EDGE_KEYS, ops, strict=True))
