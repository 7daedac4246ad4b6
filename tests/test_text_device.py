"""The text trial on ``train.device`` / ``train.precision`` (CPU machine): bf16 autocast on the
CPU runs and is recorded; a device this machine lacks is an error naming ``train.device``."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from test_text_pipeline import trial_cfg

from nas_plugin.hardware.device import DeviceError
from nas_plugin.tasks.text import run_text_trial
from nas_plugin.tasks.text_data import load_text_data
from nas_plugin.tracking.model_logging import MODEL_URI_TAG
from nas_plugin.tracking.reporter import mlflow_reporting


def test_bf16_text_trial_records_its_runtime_and_logs_a_model_that_predicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default artifact root is ./mlruns
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    cfg = trial_cfg(tmp_path, epochs=1, device="cpu", precision="bf16")
    cfg.hardware.batch_sizes = [1, 4]
    with mlflow.start_run() as run, mlflow_reporting():
        result = run_text_trial(cfg)

    assert result["val_accuracy"] > 0 and result["latency_ms_bs4"] > 0
    tags = MlflowClient(uri).get_run(run.info.run_id).data.tags
    assert tags["runtime.device"] == "cpu"
    assert tags["runtime.precision"] == "bf16"
    assert tags["runtime.channels_last"] == "false"  # not a thing for a transformer
    assert tags["hardware.device"].startswith("cpu (")
    assert tags["hardware.latency_timer"] == "perf_counter"
    # The logged pipeline takes raw text and names labels, as for an fp32 trial.
    data = load_text_data(cfg.task)
    predicted = mlflow.pyfunc.load_model(tags[MODEL_URI_TAG]).predict(data.val.texts[:5])
    assert set(predicted["label"]) <= set(data.class_names)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_cpu_machine_is_an_error_naming_train_device(tmp_path: Path) -> None:
    cfg = trial_cfg(tmp_path, device="cuda")
    with pytest.raises(DeviceError, match=r"train.device = 'cuda' is not available.*it has: cpu"):
        run_text_trial(cfg)


def test_fp16_on_the_cpu_is_an_error_naming_train_precision(tmp_path: Path) -> None:
    cfg = trial_cfg(tmp_path, device="cpu", precision="16-mixed")
    with pytest.raises(
        DeviceError, match=r"train.precision = '16-mixed' is not allowed on the CPU"
    ):
        run_text_trial(cfg)
