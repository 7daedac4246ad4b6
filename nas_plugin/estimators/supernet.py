"""``supernet``: score NB201 cells with weights inherited from one weight-sharing supernet.

The supernet (:class:`~nas_plugin.supernets.nb201.NB201Supernet`, sized by the trial's
``model.channels`` / ``model.cells_per_stage``) is trained **once per sweep** by single-path
one-shot training (SPOS: a uniformly sampled cell per step), then every trial extracts its cell
with the inherited weights, optionally fine-tunes it for ``finetune_steps`` steps, re-estimates
its BatchNorm statistics on ``bn_images`` training images and returns its validation accuracy.
Any strategy then searches at a fraction of a second per trial.

Where the weights live, and who trains them: the **first trial that needs them trains them,
under a file lock**, and logs them as artifact ``supernet/<key>.pt`` (plus ``<key>.json``: the
settings and the training time) of the sweep's **parent run**; every later trial, in any worker
process and in a resumed sweep (which reuses the parent run), downloads them instead. ``key``
hashes the supernet settings, the task and the model size, so one parent may hold several. The
lock is a file under ``cache_dir`` (default ``~/.cache/nas_plugin/supernets``), so concurrent
first trials on one machine train once; workers on other machines that start together may each
train (with the same seed: the same weights) and the last upload wins. The trial that trained
the supernet logs ``supernet_train_seconds`` and tag ``nas.supernet=trained``; the others tag
``nas.supernet=loaded``. Each process keeps the weights in memory after the first trial.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nas_plugin.estimators.base import Estimator, EstimatorError, reject_unknown

TAG_SUPERNET = "nas.supernet"
ARTIFACT_DIR = "supernet"
OPTIONS = [
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "seed",
    "finetune_steps",
    "finetune_lr",
    "bn_images",
    "prefix",
    "cache_dir",
]
# (parent run id, key) -> (supernet, preprocess, data): trials in one process reuse them.
_LOADED: dict[tuple[str, str], Any] = {}


class SupernetEstimator(Estimator):
    name = "supernet"

    def __init__(
        self,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 0.005,
        weight_decay: float = 1e-4,
        seed: int = 0,
        finetune_steps: int = 0,
        finetune_lr: float = 1e-3,
        bn_images: int = 512,
        prefix: str = "model.cell",
        cache_dir: str | None = None,
    ) -> None:
        self.epochs = _int(epochs, "epochs", 1)
        self.batch_size = _int(batch_size, "batch_size", 2)
        self.lr = _number(lr, "lr")
        self.weight_decay = _number(weight_decay, "weight_decay", allow_zero=True)
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

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> SupernetEstimator:
        reject_unknown(cls.name, options, OPTIONS)
        return cls(**options)

    def config_keys(self) -> list[str]:
        return [self.prefix, "model.channels", "model.cells_per_stage", "task"]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "epochs": self.epochs,
            "lr": self.lr,
            "seed": self.seed,
            "finetune_steps": self.finetune_steps,
            "bn_images": self.bn_images,
        }

    def settings(self) -> dict[str, Any]:
        """What the supernet's weights depend on (fine-tuning and BN images do not count)."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
        }

    def run_job(self, cfg: Any, task_function: Callable[[Any], Any]) -> dict[str, float]:
        """Score the trial's cell with inherited weights; ``task_function`` never runs."""
        import mlflow
        import torch

        from nas_plugin.estimators.tabular import _select
        from nas_plugin.models.nb201 import cell_ops
        from nas_plugin.oneshot.spos import evaluate_path

        train_cfg = cfg.get("train") or {}
        torch.set_num_threads(int(train_cfg.get("num_threads", 1)))
        cell = _select(cfg, self.prefix)
        if not isinstance(cell, Mapping):
            raise EstimatorError(
                f"hydra.sweeper.estimator.prefix={self.prefix!r}: the job's config has no NB201 "
                f"cell there (found {cell!r})"
            )
        ops = cell_ops({"cell": cell})
        supernet, preprocess, data, extra = self._supernet(cfg)
        start = time.perf_counter()
        _, metrics = evaluate_path(
            supernet,
            preprocess,
            data,
            ops,
            seed=self.seed,
            finetune_steps=self.finetune_steps,
            finetune_lr=self.finetune_lr,
            batch_size=self.batch_size,
            bn_images=self.bn_images,
        )
        if mlflow.active_run() is not None:
            mlflow.set_tag(TAG_SUPERNET, "trained" if extra else "loaded")
        return {**metrics, **extra, "eval_seconds": time.perf_counter() - start}

    # -- the shared supernet ----------------------------------------------------------------

    def key(self, cfg: Any) -> str:
        from nas_plugin.oneshot.data import task_key

        train_cfg = cfg.get("train") or {}
        identity = {
            **self.settings(),
            "task": json.loads(task_key(cfg.task)),
            "channels": int(cfg.model.channels),
            "cells_per_stage": int(cfg.model.cells_per_stage),
            "train_fraction": float(train_cfg.get("train_fraction", 1.0)),
        }
        text = json.dumps(identity, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _supernet(self, cfg: Any) -> tuple[Any, Any, Any, dict[str, float]]:
        """(supernet, preprocess, data, metrics of its training if this call trained it)."""
        import mlflow
        import torch
        from filelock import FileLock  # a dependency of torch
        from mlflow.tracking import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        from nas_plugin.oneshot.data import task_key, vision_data
        from nas_plugin.oneshot.spos import train_spos
        from nas_plugin.supernets.nb201 import NB201Supernet

        active = mlflow.active_run()
        parent = active.data.tags.get(MLFLOW_PARENT_RUN_ID) if active is not None else None
        if parent is None:
            raise EstimatorError(
                "estimator 'supernet' runs inside a NAS sweep's trial (its weights are an "
                "artifact of the sweep's parent run); no parent run is active"
            )
        key = self.key(cfg)
        if (parent, key) in _LOADED:
            return (*_LOADED[(parent, key)], {})
        train_cfg = cfg.get("train") or {}
        data, preprocess = vision_data(
            task_key(cfg.task), float(train_cfg.get("train_fraction", 1.0)), self.seed
        )
        torch.manual_seed(self.seed)  # the initial weights, should this process train them
        supernet = NB201Supernet(
            int(cfg.model.channels),
            int(cfg.model.cells_per_stage),
            data.num_classes,
            data.in_chans,
        )
        client = MlflowClient()
        cache = Path(self.cache_dir or Path.home() / ".cache" / "nas_plugin" / "supernets")
        cache.mkdir(parents=True, exist_ok=True)
        extra: dict[str, float] = {}
        with FileLock(str(cache / f"{parent}-{key}.lock")):
            state = _download(client, parent, key)
            if state is None:
                extra = train_spos(
                    supernet,
                    preprocess,
                    data,
                    self.epochs,
                    self.batch_size,
                    self.lr,
                    self.seed,
                    self.weight_decay,
                )
                _upload(client, parent, key, supernet, {**self.settings(), **extra})
            else:
                supernet.load_state_dict(state)
        supernet.eval()
        _LOADED[(parent, key)] = (supernet, preprocess, data)
        return supernet, preprocess, data, extra


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
        torch.save(supernet.state_dict(), Path(folder) / f"{key}.pt")
        client.log_artifact(run_id, str(Path(folder) / f"{key}.pt"), ARTIFACT_DIR)


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
