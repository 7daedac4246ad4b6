"""On a CUDA machine (skipped elsewhere; ``nox -s gpu``): a DARTS search and an SPOS supernet, and
the OFA app, on the GPU at bf16; their runs say so and what they register loads on a CPU-only
process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_app, run_without_gpu, sweep_runs
from sklearn.datasets import load_digits

pytestmark = pytest.mark.gpu

CUDA_BF16 = ["train.device=cuda", "train.precision=bf16"]


def predict_without_gpu(tracking_uri: str, model_uri: str, cwd: Path) -> tuple[list[int], float]:
    """(output shape, accuracy) of ``model_uri`` on the last 100 digits, loaded with
    mlflow.pyfunc in a fresh process that sees no GPU."""
    digits = load_digits()
    np.save(cwd / "inputs.npy", (digits.images[-100:] / 16.0)[:, None].astype(np.float32))
    np.save(cwd / "labels.npy", digits.target[-100:])
    check = (
        "import json, mlflow, numpy as np, torch\n"
        "assert not torch.cuda.is_available()\n"
        f"mlflow.set_tracking_uri({tracking_uri!r})\n"
        f"model = mlflow.pyfunc.load_model({model_uri!r})\n"
        "out = np.asarray(model.predict(np.load('inputs.npy')))\n"
        "hits = out.argmax(1) == np.load('labels.npy')\n"
        "print(json.dumps([list(out.shape), float(hits.mean())]))\n"
    )
    shape, accuracy = run_without_gpu(check, cwd)
    return shape, accuracy


def test_darts_search_and_supernet_on_cuda_in_bf16_register_a_cpu_loadable_cell(tmp_path):
    result = run_app(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/strategy=darts",
        "hydra.sweeper.strategy.epochs=2",
        "hydra/sweeper/estimator=supernet",
        "hydra.sweeper.estimator.epochs=2",
        f"hydra.sweeper.estimator.cache_dir={tmp_path / 'locks'}",
        "hydra.sweeper.objective.metric=val_accuracy",
        "hydra.sweeper.leaderboard_columns=[]",
        "hydra.sweeper.mlflow.experiment=gpu-oneshot",
        "hydra.sweeper.registry.enabled=true",
        "log_model=true",
        "model.channels=8",
        "hardware.measure=true",
        "hardware.latency_repeats=3",
        *CUDA_BF16,
    )
    assert result.proc.returncode == 0, result.output
    _, searches, trials = sweep_runs(result.client(), "gpu-oneshot", result.output)
    assert len(searches) == 1 and len(trials) == 1
    for run in (searches[0], trials[0]):
        assert run.data.tags["runtime.device"].startswith("cuda"), run.data.tags
        assert run.data.tags["runtime.precision"] == "bf16"
    assert trials[0].data.tags["hardware.device"].startswith("cuda")
    assert trials[0].data.metrics["latency_ms"] > 0
    shape, accuracy = predict_without_gpu(
        result.tracking_uri, "models:/gpu-oneshot@champion", tmp_path
    )
    assert shape == [100, 10] and accuracy > 0.1  # above chance, on a CPU-only process


def test_ofa_on_cuda_in_bf16_registers_subnets_that_load_on_the_cpu(tmp_path):
    result = run_app(
        tmp_path,
        str(REPO / "pipelines" / "ofa.py"),
        "train.epochs={full: 2, kernel: 1, depth: 1, expand: 1}",
        "train.bn_recalibration_images=256",
        "search.candidates=4",
        "search.latency_repeats=5",
        "search.budgets=[1.0]",
        "mlflow.model_name=ofa-gpu",
        *CUDA_BF16,
    )
    assert result.proc.returncode == 0, result.output
    client = result.client()
    runs = client.search_runs([client.get_experiment_by_name("ofa-digits").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("ofa.role") == "parent"]
    assert parent.data.tags["runtime.device"].startswith("cuda")
    assert parent.data.tags["runtime.precision"] == "bf16"
    (version,) = client.search_model_versions("name='ofa-gpu'")
    shape, accuracy = predict_without_gpu(
        result.tracking_uri, f"models:/ofa-gpu/{version.version}", tmp_path
    )
    assert shape == [100, 10] and accuracy > 0.1
