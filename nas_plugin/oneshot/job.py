"""The sweeper's glue for one-shot strategies (``darts``, ``gdas``, ``proxyless``, ``enas``).

Before the ordinary trial loop, :func:`run_search_phase` launches the strategy's ``searches``
**independent search jobs** through the sweep's own launcher, ``batch_size`` at a time (so they
run where trials run, side by side with a parallel launcher: in process, joblib workers, SLURM
jobs).
Search ``k`` is seeded with the app's ``seed + k``. Each job (:class:`SearchTask`) opens an
MLflow child run of the sweep named ``search-<k>`` (tags ``nas.role=search``,
``nas.search_index=k``, no ``nas.trial``: it is not a trial and not on the leaderboard), runs
the bilevel search on the app's task and model size, and logs:

- params ``search.<option>`` (``search.seed`` included); tags ``runtime.device``,
  ``runtime.precision``, ``runtime.channels_last``, ``runtime.compile`` (the app's ``train.*``
  as the search ran on them; see :mod:`nas_plugin.hardware.device`);
- per epoch: ``alpha.<edge>.<op>`` (softmax weights), ``search_train_loss``,
  ``search_arch_loss``, ``search_derived_val_accuracy`` (the current argmax cell with inherited
  weights), ``search_skip_edges``, ``search_seconds`` (and ``search_tau``,
  ``search_expected_latency_us`` where they apply; ENAS: ``alpha.*`` are the controller's
  sampled operation frequencies, plus ``search_controller_entropy``, ``search_mean_reward``,
  ``search_baseline``, ``search_none_edges``, ``search_skip_none_fraction``,
  ``search_collapsed``);
- param ``derived_arch`` and tag ``nas.derived_arch`` (the NB201 string); artifacts
  ``search/genotype.json`` (string, per-edge ops, final weights), ``search/alphas.json`` (the
  weights per epoch), ``search/latency_lut.json`` (when a latency term is used).

The strategy's candidates are then the distinct derived cells, in search order, each trained
from scratch once by the sweep's estimator (a cell derived by several searches is trained once:
the later search run gets tag ``nas.same_cell_as=<first search run id>``). :func:`link_search`
tags every trial with the search run(s) that derived it (``nas.search_run_id``, comma-separated
when several) and every search run with its cell's trial (``nas.derived_run_id``).

A failed search is recorded (its run FAILED, ``trial/error.txt``) and the sweep goes on with the
others; only when every search fails does the sweep fail. A resumed sweep reuses the recorded
searches (finished or failed) of the same parent and runs only the missing or interrupted ones,
so the derived cells, and so the trials' numbering, are the same as before. Hydra job
directories: ``<sweep dir>/search-<k>``.

With ``model.kind=autodeeplab`` (``search_space=autodeeplab``; ``darts`` first or second
order, ``gdas``, ``proxyless``, ``enas``) the job runs
:mod:`~nas_plugin.oneshot.autodeeplab_search` (ENAS: :mod:`~nas_plugin.oneshot.autodeeplab_enas`)
on the segmentation task instead: per epoch also ``beta.layer_<k>.<level>.<move>`` (ENAS: the
controller's move frequencies),
``search_path.layer_<k>``, ``search_derived_val_miou`` (darts: ``search_supernet_val_miou``;
ENAS: ``search_mean_child_exp_neg_loss`` or, with ``reward=score``, ``search_mean_child_miou``,
its rewards' mean) instead of ``search_derived_val_accuracy``; the
derived arch string and cell carry the path and the app's ``model.decoder.skip``
(:mod:`nas_plugin.space.autodeeplab`); ``search/betas.json`` too. With ``warmup_epochs`` (darts,
gdas), ``search_arch_loss`` is logged from the first epoch with architecture steps on.

With ``search_space=spinenet`` (the strategy hands its values as ``choices``) the job searches
the SpineNet detection supernet instead (:mod:`~nas_plugin.oneshot.spinenet_search`, DARTS's
relaxation in :mod:`~nas_plugin.oneshot.spinenet_darts`; ENAS:
:mod:`~nas_plugin.oneshot.spinenet_enas`):
per epoch ``prob.<key>.<value>`` (ENAS: the controller's sampling frequencies),
``search_derived_val_map_50`` and ``search_derived_val_map``; ``search/probs.json`` and
``search/choices.json``; the derived cell holds every block's fields and the pyramid's fusion.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from omegaconf import DictConfig

log = logging.getLogger(__name__)

TAG_ROLE = "nas.role"
TAG_DERIVED_ARCH = "nas.derived_arch"
TAG_SEARCH_RUN = "nas.search_run_id"
TAG_DERIVED_RUN = "nas.derived_run_id"
TAG_SEARCH_INDEX = "nas.search_index"
TAG_SAME_CELL = "nas.same_cell_as"


class SearchFailedError(RuntimeError):
    """Every one-shot search job failed; the sweep cannot have a candidate."""


@dataclass
class SearchOutcome:
    """One search of the sweep: its run and derived cell (``None``: the search failed)."""

    index: int
    run_id: str | None
    cell: dict[str, Any] | None  # Auto-DeepLab's: edges, path.layer_<k>, decoder.skip
    error: str | None = None
    reused: bool = False  # recorded by the sweep before a resume
    encoding: Any = None  # the cell as the strategy's candidate (set by run_search_phase)


class SearchTask:
    """The search job's body (picklable, like ``TrackedTask``). Its search index is the Hydra
    job number: :func:`run_search_phase` launches search ``k`` as job ``k``."""

    def __init__(
        self, tracking_uri: str, experiment_id: str, parent_run_id: str, settings: dict[str, Any]
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.settings = settings

    def __call__(self, cfg: DictConfig) -> dict[str, Any]:
        from nas_plugin.tracking.trial import TAG_STATUS, TAG_STRATEGY, TAG_WORKER, worker_name

        index = _job_index()
        seed = int(cfg.seed) + index
        mlflow.set_tracking_uri(self.tracking_uri)
        client = MlflowClient(self.tracking_uri)
        name = f"search-{index}"
        run = client.create_run(
            self.experiment_id,
            run_name=name,
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id,
                MLFLOW_RUN_NAME: name,
                TAG_ROLE: "search",
                TAG_SEARCH_INDEX: str(index),
                TAG_STRATEGY: str(self.settings["method"]),
                TAG_STATUS: "running",
                TAG_WORKER: worker_name(),
            },
        )
        run_id = run.info.run_id
        # search_space=spinenet's values go to search/choices.json, not a param
        params = {**self.settings, "seed": seed}
        params.pop("choices", None)
        client.log_batch(run_id, params=[Param(f"search.{k}", str(v)) for k, v in params.items()])
        try:
            with mlflow.start_run(run_id=run_id):
                result = run_search(cfg, self.settings, seed)
                # Tagged before the run ends: a FINISHED search run always has its cell.
                client.log_batch(
                    run_id,
                    params=[Param("derived_arch", result["arch_str"])],
                    tags=[RunTag(TAG_DERIVED_ARCH, result["arch_str"]), RunTag(TAG_STATUS, "ok")],
                )
        except BaseException as err:
            from nas_plugin.tracking.trial import record_failure as _record_failure

            _record_failure(client, run_id, err)
            err.nas_run_id = run_id  # type: ignore[attr-defined]
            raise
        return {"run_id": run_id, "index": index, **result}


def _search_settings(settings: dict[str, Any]) -> Any:
    """The job's :class:`~nas_plugin.oneshot.settings.SearchSettings` (the keys it knows)."""
    from nas_plugin.oneshot.settings import SearchSettings

    known = set(SearchSettings.__dataclass_fields__) - {"extra"}
    return SearchSettings(**{k: v for k, v in settings.items() if k in known})


def _job_index() -> int:
    from hydra.core.hydra_config import HydraConfig

    return int(HydraConfig.get().job.num) if HydraConfig.initialized() else 0


def run_search(
    cfg: DictConfig, settings: dict[str, Any], seed: int | None = None
) -> dict[str, Any]:
    """Search on the job's task with its model size (``model.channels``,
    ``model.cells_per_stage``), on the app's ``train.device`` / ``train.precision`` /
    ``train.channels_last`` (tags ``runtime.*`` on the active run: what the search used;
    ``train.compile`` does not apply to a supernet); ``seed`` (default: the app's) seeds the
    search, the app's seed the training subset. Logs to the active run; returns the derived
    cell.

    Raises:
        DeviceError: ``train.device`` / ``train.precision`` cannot run here (before any data is
            loaded or trained on).
    """
    import dataclasses

    from nas_plugin.hardware.device import Runtime

    train_cfg = cfg.get("train") or {}
    # Resolved first, before the heavy imports: a device this machine lacks fails at once.
    runtime = dataclasses.replace(Runtime.from_config(train_cfg), compile=False)
    if mlflow.active_run() is not None:
        mlflow.set_tags(runtime.describe())
    if (cfg.get("model") or {}).get("kind") == "autodeeplab":
        return _run_autodeeplab_search(cfg, settings, seed, runtime)
    if "choices" in settings:  # search_space=spinenet (the strategy hands its values)
        return _run_spinenet_search(cfg, settings, seed, runtime)

    from nas_plugin.oneshot.data import vision_data
    from nas_plugin.oneshot.search import search
    from nas_plugin.space.nb201 import EDGE_KEYS
    from nas_plugin.tasks.training import set_threads
    from nas_plugin.tasks.vision_data import task_key

    set_threads(train_cfg)
    data, preprocess = vision_data(
        task_key(cfg.task), float(train_cfg.get("train_fraction", 1.0)), int(cfg.seed)
    )
    search_settings = _search_settings(settings)
    started = time.perf_counter()
    result = search(
        search_settings,
        data,
        preprocess,
        int(cfg.model.channels),
        int(cfg.model.cells_per_stage),
        int(cfg.task.resolution),
        int(cfg.seed) if seed is None else seed,
        log_epoch=lambda epoch, metrics: mlflow.log_metrics(metrics, step=epoch),
        runtime=runtime,
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


def _run_autodeeplab_search(
    cfg: DictConfig, settings: dict[str, Any], seed: int | None, runtime: Any
) -> dict[str, Any]:
    """:func:`run_search` for ``model=autodeeplab``: the Auto-DeepLab supernet of the app's
    ``model.layers`` / ``channels`` / ``aspp`` on its segmentation task (the trial's data,
    split and normalisation); the derived cell carries the path and the app's
    ``model.decoder.skip`` (not searched by the supernet)."""
    from omegaconf import OmegaConf

    from nas_plugin.models.autodeeplab import LEVEL_NAMES, check_model_config, path_levels
    from nas_plugin.oneshot.autodeeplab_search import AutoDeepLabArch, search_autodeeplab
    from nas_plugin.space import autodeeplab
    from nas_plugin.tasks.segmentation import channel_stats
    from nas_plugin.tasks.segmentation_data import load_segmentation_data
    from nas_plugin.tasks.training import set_threads
    from nas_plugin.tasks.vision import Preprocess

    train_cfg = cfg.get("train") or {}
    set_threads(train_cfg)
    model = check_model_config(OmegaConf.to_container(cfg.model, resolve=True))
    data = load_segmentation_data(
        cfg.task, float(train_cfg.get("train_fraction", 1.0)), int(cfg.seed)
    )
    mean, std = channel_stats(data)
    preprocess = Preprocess(int(cfg.task.resolution), mean, std)
    search_settings = _search_settings(settings)
    arch = AutoDeepLabArch(
        len(model["moves"]), model["channels"], model["aspp_channels"], model["rates"]
    )
    started = time.perf_counter()
    result = search_autodeeplab(
        search_settings,
        data,
        preprocess,
        arch,
        int(cfg.seed) if seed is None else seed,
        log_epoch=lambda epoch, metrics: mlflow.log_metrics(metrics, step=epoch),
        runtime=runtime,
    )
    seconds = time.perf_counter() - started
    mlflow.log_metric("search_total_seconds", seconds)
    skip = bool(model["skip"])
    arch_str = autodeeplab.to_arch_str(result.ops, result.moves, skip)
    cell = autodeeplab.derived_cell(result.ops, result.moves, skip)
    genotype = {
        "arch_str": arch_str,
        "cell": cell,
        "path_levels": [LEVEL_NAMES[lv] for lv in path_levels(result.moves)],
        "method": settings["method"],
        "alpha": result.alphas[-1] if result.alphas else None,
        "beta": result.betas[-1] if result.betas else None,
    }
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "genotype.json").write_text(json.dumps(genotype, indent=2))
        (root / "alphas.json").write_text(json.dumps(result.alphas))
        (root / "betas.json").write_text(json.dumps(result.betas))
        mlflow.log_artifacts(folder, "search")
    metrics = {k: v for k, v in result.metrics.items() if not k.startswith(("alpha.", "beta."))}
    return {"arch_str": arch_str, "cell": cell, "seconds": seconds, "metrics": metrics}


def _run_spinenet_search(
    cfg: DictConfig, settings: dict[str, Any], seed: int | None, runtime: Any
) -> dict[str, Any]:
    """:func:`run_search` for ``model=spinenet``: the SpineNet supernet of the app's model
    config on its detection task (the trial's data and split), over the sweep's values
    (``settings["choices"]``, logged as ``search/choices.json``); the derived cell holds every
    block's fields and the pyramid's fusion."""
    from omegaconf import OmegaConf

    from nas_plugin.oneshot.spinenet_enas import search_spinenet_enas
    from nas_plugin.oneshot.spinenet_search import search_spinenet
    from nas_plugin.space import spinenet
    from nas_plugin.tasks.detection_data import load_detection_data
    from nas_plugin.tasks.training import set_threads

    train_cfg = cfg.get("train") or {}
    set_threads(train_cfg)
    base = OmegaConf.to_container(cfg.model, resolve=True)
    choices = {k: list(v) for k, v in settings["choices"].items()}
    data = load_detection_data(cfg.task, float(train_cfg.get("train_fraction", 1.0)), int(cfg.seed))
    search_settings = _search_settings(settings)
    started = time.perf_counter()
    search = search_spinenet_enas if search_settings.method == "enas" else search_spinenet
    result = search(
        search_settings,
        data,
        base,
        choices,
        int(cfg.task.resolution),
        int(cfg.seed) if seed is None else seed,
        log_epoch=lambda epoch, metrics: mlflow.log_metrics(metrics, step=epoch),
        runtime=runtime,
    )
    seconds = time.perf_counter() - started
    mlflow.log_metric("search_total_seconds", seconds)
    arch_str = spinenet.to_arch_str(result.cell)
    genotype = {
        "arch_str": arch_str,
        "cell": result.cell,
        "method": settings["method"],
        "probs": result.probs[-1] if result.probs else None,
    }
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "genotype.json").write_text(json.dumps(genotype, indent=2))
        (root / "probs.json").write_text(json.dumps(result.probs))
        (root / "choices.json").write_text(json.dumps(choices, indent=2))
        mlflow.log_artifacts(folder, "search")
    metrics = {k: v for k, v in result.metrics.items() if not k.startswith("prob.")}
    return {"arch_str": arch_str, "cell": result.cell, "seconds": seconds, "metrics": metrics}


def run_search_phase(
    hydra_context: Any,
    config: DictConfig,
    task_function: Any,
    fixed_overrides: list[str],
    strategy: Any,
    sweep_run: Any,
    n_searches: int = 1,
    batch_size: int = 1,
) -> list[SearchOutcome]:
    """Run (or, on resume, reuse) the ``n_searches`` search jobs, ``batch_size`` per launch;
    give the strategy each successful search's cell, in search order.

    Returns every search's outcome, by index."""
    from hydra.core.plugins import Plugins

    outcomes = _recorded_searches(sweep_run)
    outcomes = {k: o for k, o in outcomes.items() if k < n_searches}
    pending = [k for k in range(n_searches) if k not in outcomes]
    if outcomes:
        log.info(
            "Resuming: %d of %d searches are recorded and reused; %d to run.",
            len(outcomes),
            n_searches,
            len(pending),
        )
    elif n_searches > 1:
        log.info(
            "strategy=%s: %d independent searches (app seed + 0 ... + %d), then every distinct "
            "derived cell trained once as a trial.",
            strategy.name,
            n_searches,
            n_searches - 1,
        )
    if pending:
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context,
            task_function=SearchTask(
                sweep_run.uri, sweep_run.experiment_id, sweep_run.run_id, strategy.search_settings()
            ),
            config=config,
        )
        for group in _launch_groups(pending, batch_size):
            outcomes.update(_launch(launcher, group, fixed_overrides))
    ordered = [outcomes[k] for k in range(n_searches)]
    first: dict[Any, SearchOutcome] = {}
    for outcome in ordered:
        if outcome.cell is None:
            log.warning(
                "Search %d failed (%s); MLflow run %s. The sweep goes on with the other searches.",
                outcome.index,
                outcome.error,
                outcome.run_id,
            )
            continue
        outcome.encoding = strategy.derive(outcome.cell)
        earlier = first.setdefault(outcome.encoding, outcome)
        if earlier is not outcome:
            log.info(
                "Search %d derived the same cell as search %d: it is trained once.",
                outcome.index,
                earlier.index,
            )
            if outcome.run_id and earlier.run_id:
                sweep_run.client.set_tag(outcome.run_id, TAG_SAME_CELL, earlier.run_id)
    if not first:
        raise SearchFailedError(
            f"every {strategy.name} search job failed ({ordered[-1].error}); see the sweep's "
            "MLflow child runs 'search-<k>' (trial/error.txt)"
        )
    if n_searches > 1:
        log.info(
            "%d searches: %d distinct derived cells, %d failed.",
            n_searches,
            len(first),
            sum(o.cell is None for o in ordered),
        )
    return ordered


def _launch_groups(indices: list[int], size: int) -> list[list[int]]:
    """Consecutive indices (a launch numbers its jobs from ``initial_job_idx`` on), at most
    ``size`` per launch."""
    groups: list[list[int]] = []
    for k in indices:
        if groups and groups[-1][-1] + 1 == k and len(groups[-1]) < size:
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


def _launch(launcher: Any, group: list[int], fixed: list[str]) -> dict[int, SearchOutcome]:
    from hydra.core.utils import JobStatus

    overrides = [[*fixed, f"hydra.sweep.subdir=search-{k}"] for k in group]
    try:
        jobs = launcher.launch(overrides, initial_job_idx=group[0])
    except Exception as err:  # noqa: BLE001 - a lost worker fails its searches, not the sweep
        cause = f"the job was lost ({type(err).__name__}: {err})"
        return {k: SearchOutcome(k, None, None, cause) for k in group}
    done = {}
    for k, job in zip(group, jobs, strict=True):
        value = job._return_value  # .return_value re-raises a failed job's exception
        if job.status == JobStatus.COMPLETED and isinstance(value, dict):
            done[k] = SearchOutcome(k, str(value["run_id"]), dict(value["cell"]))
        else:
            error = f"{type(value).__name__}: {value}"
            done[k] = SearchOutcome(k, getattr(value, "nas_run_id", None), None, error)
    return done


def link_search(client: MlflowClient, searches: Sequence[SearchOutcome], records: Any) -> None:
    """Tag every trial with the search run(s) that derived its cell, and every search run with
    that trial."""
    by_cell: dict[Any, list[str]] = {}
    for outcome in searches:
        if outcome.encoding is not None and outcome.run_id is not None:
            by_cell.setdefault(outcome.encoding, []).append(outcome.run_id)
    for record in records:
        search_runs = by_cell.get(record.encoding)
        if not search_runs or record.run_id is None:
            continue
        client.set_tag(record.run_id, TAG_SEARCH_RUN, ",".join(search_runs))
        for run_id in search_runs:
            client.set_tag(run_id, TAG_DERIVED_RUN, record.run_id)


def _recorded_searches(sweep_run: Any) -> dict[int, SearchOutcome]:
    """The sweep's recorded searches by index (a resumed sweep's): finished ones with their
    cell, failed ones as failures. Searches killed mid-run are marked interrupted, to run
    again."""
    from nas_plugin.space import autodeeplab, spinenet
    from nas_plugin.space.nb201 import EDGE_KEYS, from_arch_str
    from nas_plugin.tracking.resume import STATUS_INTERRUPTED
    from nas_plugin.tracking.trial import TAG_ERROR, TAG_STATUS

    runs = sweep_run.client.search_runs(
        [sweep_run.experiment_id],
        filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{sweep_run.run_id}' and "
        f"tags.`{TAG_ROLE}` = 'search'",
        order_by=["attributes.start_time ASC"],
        max_results=10000,
    )
    found: dict[int, SearchOutcome] = {}
    for run in runs:
        tags, run_id = run.data.tags, run.info.run_id
        index = int(tags.get(TAG_SEARCH_INDEX, 0))  # runs of a single-search sweep: index 0
        if run.info.status == "FINISHED" and TAG_DERIVED_ARCH in tags:
            arch_str = tags[TAG_DERIVED_ARCH]
            if spinenet.is_arch_str(arch_str):  # every block's fields, the fusion
                cell = spinenet.from_arch_str(arch_str)
            elif autodeeplab.is_arch_str(arch_str):  # cell, path and decoder skip
                cell = autodeeplab.from_arch_str(arch_str)
            else:
                cell = dict(zip(EDGE_KEYS, from_arch_str(arch_str), strict=True))
            found[index] = SearchOutcome(index, run_id, cell, reused=True)
        elif tags.get(TAG_STATUS) == "failed" and run.info.status == "FAILED":
            found[index] = SearchOutcome(index, run_id, None, tags.get(TAG_ERROR), reused=True)
        elif tags.get(TAG_STATUS) != STATUS_INTERRUPTED:
            sweep_run.client.set_tag(run_id, TAG_STATUS, STATUS_INTERRUPTED)
            sweep_run.client.set_terminated(run_id, "KILLED")
    return found
