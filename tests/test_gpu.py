"""On a CUDA machine (skipped elsewhere; ``nox -s gpu``): trials on the GPU, their tags, a model
that loads on a CPU-only process, GPU hardware cost and one GPU per parallel trial."""

from __future__ import annotations

import mlflow
import pytest
import torch
from conftest import REPO, cpu_only_predictions, run_app
from omegaconf import OmegaConf
from sklearn.datasets import load_digits
from test_text_pipeline import trial_cfg

from nas_plugin.hardware.cost import cost_tags, measure_cost
from nas_plugin.models import build_model
from nas_plugin.tasks.text import run_text_trial
from nas_plugin.tracking.model_logging import MODEL_URI_TAG
from nas_plugin.tracking.reporter import mlflow_reporting

pytestmark = pytest.mark.gpu

PIPELINE = str(REPO / "pipelines" / "vision.py")
TINY = [
    "train.epochs=1",
    "hardware.latency_repeats=3",
    "hardware.latency_warmup=1",
    "hydra.sweeper.strategy.population_size=2",
    "hydra.sweeper.strategy.sample_size=1",
]


def test_vision_sweep_on_cuda_tags_every_trial_and_registers_a_model_that_loads_on_cpu(tmp_path):
    result = run_app(
        tmp_path, PIPELINE, "-m", *TINY, "train.device=cuda", "hydra.sweeper.n_trials=4"
    )
    assert result.proc.returncode == 0, result.output
    _, children = result.runs("nas-vision-digits")
    assert len(children) == 4
    for child in children:
        tags = child.data.tags
        assert tags["nas.status"] == "ok", tags.get("nas.error")
        assert tags["runtime.device"].startswith("cuda"), tags
        assert tags["runtime.precision"] in ("bf16", "16-mixed")  # precision auto on a GPU
    digits = load_digits()
    predicted = cpu_only_predictions(
        result.tracking_uri,
        "models:/nas-vision-digits@champion",
        (digits.images[-50:] / 16.0)[:, None],
        tmp_path,
    )
    assert predicted["pyfunc"] == predicted["torch"] == [50, 10]
    assert predicted["agree"] == 1.0


def test_text_trial_on_cuda_in_bf16(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    cfg = trial_cfg(tmp_path, epochs=1, device="cuda", precision="bf16")
    with mlflow.start_run() as run, mlflow_reporting():
        result = run_text_trial(cfg)
    assert result["val_accuracy"] > 0
    tags = mlflow.get_run(run.info.run_id).data.tags
    assert tags["runtime.device"].startswith("cuda:0 (")
    assert tags["runtime.precision"] == "bf16"
    assert tags["hardware.latency_timer"] == "cuda_events"
    # The logged pipeline was saved from the CPU: it predicts raw text there.
    predicted = mlflow.pyfunc.load_model(tags[MODEL_URI_TAG]).predict(["a fine meal", "awful"])
    assert len(predicted) == 2


def test_hardware_cost_on_cuda_uses_cuda_events_and_the_allocators_peak():
    cfg = OmegaConf.load(REPO / "conf" / "model" / "mbconv.yaml")
    model = build_model(cfg, num_classes=10, in_chans=3).cuda()
    cost = measure_cost(model, (3, 32, 32), latency_repeats=5, warmup=2, batch_sizes=(1, 64))
    assert cost["latency_ms"] == cost["latency_ms_bs1"] > 0
    assert cost["latency_ms_bs64"] > 0
    weights_mb = sum(p.numel() * 4 for p in model.parameters()) / 2**20
    assert cost["peak_memory_mb"] > weights_mb
    tags = cost_tags(model)
    assert tags["hardware.device"].startswith("cuda:0 (")
    assert tags["hardware.latency_timer"] == "cuda_events"
    assert tags["hardware.memory"] == "cuda_max_memory_allocated"


def test_gpus_per_trial_gives_each_joblib_worker_its_own_gpu(tmp_path):
    gpus = torch.cuda.device_count()
    result = run_app(
        tmp_path,
        PIPELINE,
        "-m",
        *TINY,
        "train.device=cuda",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={gpus}",
        f"hydra.sweeper.batch_size={gpus}",
        "hydra.sweeper.gpus_per_trial=1",
        f"hydra.sweeper.n_trials={2 * gpus}",
    )
    assert result.proc.returncode == 0, result.output
    _, children = result.runs("nas-vision-digits")
    gpu_of: dict[str, str] = {}
    for child in children:
        tags = child.data.tags
        assert tags["nas.status"] == "ok", tags.get("nas.error")
        # Each trial sees only its GPU, as cuda:0.
        assert tags["runtime.device"].startswith("cuda:0"), tags
        assert gpu_of.setdefault(tags["nas.worker"], tags["nas.gpus"]) == tags["nas.gpus"]
    assert len(set(gpu_of.values())) == len(gpu_of) <= gpus  # distinct GPUs per worker
