"""The vision trial end to end on digits, and logging models to MLflow."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from torch import nn

from nas_plugin.tasks.vision import run_vision_trial
from nas_plugin.tasks.vision_data import load_vision_data
from nas_plugin.tracking.model_logging import MODEL_URI_TAG, log_model
from nas_plugin.tracking.reporter import mlflow_reporting

CONF = Path(__file__).resolve().parent.parent / "conf"
RESULT_KEYS = {
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "test_loss",
    "train_loss",
    "params",
    "flops",
    "latency_ms",
    "peak_memory_mb",
    "train_seconds",
    "epochs",
}


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A throwaway sqlite tracking store; artifacts land under tmp_path, not the repo."""
    monkeypatch.chdir(tmp_path)  # the default artifact root is ./mlruns
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(previous)


def trial_cfg(**train: object) -> DictConfig:
    return OmegaConf.create(
        {
            "seed": 0,
            "task": OmegaConf.load(CONF / "task" / "digits.yaml"),
            "model": OmegaConf.load(CONF / "model" / "mbconv.yaml"),
            "train": {
                "epochs": 2,
                "batch_size": 64,
                "lr": 0.005,
                "weight_decay": 1.0e-4,
                "optimizer": "adamw",
                "train_fraction": 1.0,
                "num_threads": 1,
                **train,
            },
            "hardware": {"measure": True, "latency_repeats": 5, "latency_warmup": 1},
            "log_model": True,
        }
    )


def test_trial_trains_logs_epochs_and_a_loadable_model(tracking: MlflowClient) -> None:
    with mlflow.start_run() as run, mlflow_reporting():
        result = run_vision_trial(trial_cfg(epochs=2))

    assert set(result) == RESULT_KEYS
    assert all(isinstance(v, float) for v in result.values())
    assert result["val_accuracy"] > 0.3 and result["test_accuracy"] > 0.3  # chance is 0.1
    assert result["epochs"] == 2.0
    assert min(result["params"], result["flops"], result["latency_ms"]) > 0

    history = tracking.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]
    assert history[-1].value == pytest.approx(result["val_accuracy"])
    for key in ("train_loss", "val_loss"):
        assert len(tracking.get_metric_history(run.info.run_id, key)) == 2

    # The logged model resizes and normalises raw 8x8 digits itself and scores like the trial.
    uri = tracking.get_run(run.info.run_id).data.tags[MODEL_URI_TAG]
    val = load_vision_data(trial_cfg().task).val
    logits = mlflow.pyfunc.load_model(uri).predict(val.images.numpy())
    assert logits.shape == (len(val), 10)
    accuracy = float((logits.argmax(axis=1) == val.labels.numpy()).mean())
    assert accuracy == pytest.approx(result["val_accuracy"])


def test_trial_outside_a_run_starts_none(tracking: MlflowClient) -> None:
    cfg = trial_cfg(epochs=1, train_fraction=0.3)
    cfg.hardware.measure = False
    result = run_vision_trial(cfg)

    assert mlflow.active_run() is None
    assert tracking.search_runs(["0"]) == []
    assert set(result) == RESULT_KEYS - {"flops", "latency_ms", "peak_memory_mb"}
    # A low-fidelity trial (1 epoch on 30% of the data) already ranks above chance: BatchNorm
    # statistics are re-estimated before evaluating.
    assert result["val_accuracy"] > 0.3


def test_same_seed_same_trial() -> None:
    cfg = trial_cfg(epochs=1, train_fraction=0.3, optimizer="sgd")
    cfg.hardware.measure = False
    first, second = run_vision_trial(cfg), run_vision_trial(cfg)
    assert first["val_loss"] == second["val_loss"]
    assert first["train_loss"] == second["train_loss"]


def test_a_diverging_trial_raises_floating_point_error() -> None:
    cfg = trial_cfg(epochs=1, train_fraction=0.3, optimizer="sgd", lr=1.0e6)
    cfg.hardware.measure = False
    with pytest.raises(FloatingPointError, match="lower train.lr"):
        run_vision_trial(cfg)


def test_unknown_optimizer_is_rejected() -> None:
    cfg = trial_cfg(optimizer="lbfgs", train_fraction=0.1)
    cfg.hardware.measure = False
    with pytest.raises(ValueError, match="train.optimizer = 'lbfgs' is not allowed"):
        run_vision_trial(cfg)


class Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(x))


class Untraceable(Scale):
    """Python control flow on tensor values: torch.export cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) if x.sum() > 0 else -self.linear(x)


def test_log_model_tags_the_run_and_predicts_in_eval_mode(tracking: MlflowClient) -> None:
    model = Scale().train()
    with mlflow.start_run() as run:
        uri = log_model(model, np.random.rand(3, 4))  # float64 examples are logged as float32

    assert tracking.get_run(run.info.run_id).data.tags[MODEL_URI_TAG] == uri
    assert model.training  # the caller's mode is restored
    x = np.random.rand(5, 4).astype(np.float32)  # another batch size than the example's
    expected = model.eval()(torch.from_numpy(x)).detach().numpy()  # no dropout
    np.testing.assert_allclose(mlflow.pyfunc.load_model(uri).predict(x), expected, rtol=1e-5)


def test_log_model_pickles_what_torch_export_cannot_trace(
    tracking: MlflowClient, caplog: pytest.LogCaptureFixture
) -> None:
    with mlflow.start_run(), caplog.at_level(logging.WARNING):
        uri = log_model(Untraceable(), torch.rand(2, 4))
    assert "logging it pickled instead" in caplog.text
    assert mlflow.pyfunc.load_model(uri).predict(np.ones((4, 4), np.float32)).shape == (4, 3)


def test_log_model_needs_a_run_and_a_batch(tracking: MlflowClient) -> None:
    with pytest.raises(RuntimeError, match="needs an active MLflow run"):
        log_model(Scale(), torch.rand(2, 4))
    with mlflow.start_run(), pytest.raises(ValueError, match="a batch of at least 2 inputs"):
        log_model(Scale(), torch.rand(1, 4))
