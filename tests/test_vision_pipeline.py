"""End to end: our vision pipeline as a real multirun on digits, read back from MLflow."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, predict_in_new_process, run_app_in_process
from sklearn.datasets import load_digits

pytestmark = pytest.mark.e2e

PIPELINE = str(REPO / "pipelines" / "vision.py")
TINY = [
    "train.epochs=2",
    "hardware.latency_repeats=3",
    "hardware.latency_warmup=1",
]


def test_demo_pipeline_search_registers_a_champion_that_predicts_in_a_new_process(tmp_path):
    result = run_app_in_process(
        tmp_path,
        PIPELINE,
        "-m",
        *TINY,
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.strategy.population_size=2",
        "hydra.sweeper.strategy.sample_size=1",
    )
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("nas-vision-digits")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["strategy"] == "evolution"
    assert parent.data.params["search_space"] == "mbconv"
    assert len(children) == 3
    client = result.client()
    for child in children:
        params, metrics = child.data.params, child.data.metrics
        assert child.data.tags["nas.status"] == "ok"
        # The decoded architecture, as flat keys the compare view lines up.
        assert params["model.stages.s2.kernel"] in ("3", "5", "7")
        assert params["model.activation"] in ("relu", "hard_swish", "silu")
        for key in (
            "val_accuracy",
            "test_accuracy",
            "params",
            "flops",
            "latency_ms",
            "peak_memory_mb",
        ):
            assert metrics[key] > 0, key
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2]  # epochs; the final value adds no step
        # The trial's config reproduces it: the architecture in it is the one in its params.
        config = open(client.download_artifacts(child.info.run_id, "trial/config.yaml")).read()
        arch = json.loads(
            open(client.download_artifacts(child.info.run_id, "trial/architecture.json")).read()
        )
        assert f"kernel: {arch['model.stages.s2.kernel']}" in config
        assert child.data.tags["nas.model_uri"].startswith("models:/")

    best = max(children, key=lambda c: c.data.metrics["val_accuracy"])
    version = client.get_model_version_by_alias("nas-vision-digits", "champion")
    assert version.tags["run_id"] == best.info.run_id
    assert float(version.tags["metric.val_accuracy"]) == pytest.approx(
        best.data.metrics["val_accuracy"]
    )
    assert "Registered the best model as 'nas-vision-digits'" in result.output

    # In a new process, from the registry alone.
    digits = load_digits()
    shape, accuracy = predict_in_new_process(
        result.tracking_uri,
        "models:/nas-vision-digits@champion",
        (digits.images[-200:] / 16.0)[:, None],
        digits.target[-200:],
        tmp_path,
    )
    assert shape == (200, 10)
    assert accuracy > 0.3  # 10 classes: chance is 0.1


def test_timm_family_space_with_low_fidelity_estimator(tmp_path):
    result = run_app_in_process(
        tmp_path,
        PIPELINE,
        "-m",
        *TINY,
        "model=timm_family",
        "hydra/sweeper/search_space=timm_family",
        "hydra/sweeper/strategy=random",
        "hydra/sweeper/estimator=low_fidelity",
        "hydra.sweeper.estimator.data_fraction=0.5",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.registry.enabled=false",
    )
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("nas-vision-digits")
    assert parent.data.params["estimator.name"] == "low_fidelity"
    assert len(children) == 2
    client = result.client()
    for child in children:
        params = child.data.params
        family = params["model.family"]
        assert family in ("resnet", "mobilenetv3", "mobilenetv2", "efficientnet")
        assert any(key.startswith(f"model.{family}.") for key in params)
        assert child.data.tags["nas.estimator"] == "low_fidelity"
        assert params["estimator.epochs"] == "1" and params["estimator.data_fraction"] == "0.5"
        # The estimator's 1 epoch overrode the config's train.epochs=2.
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert len(history) == 1
    assert client.search_registered_models() == []


def test_mbconv_space_without_the_mbconv_model_is_refused_before_any_trial(tmp_path):
    result = run_app_in_process(tmp_path, PIPELINE, "-m", "model=timm_family")
    assert result.proc.returncode != 0
    assert "search_space=mbconv needs model.kind='mbconv'" in result.output
    assert "model=mbconv" in result.output
