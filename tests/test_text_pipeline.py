"""The text trial in process, and our text pipeline as a real multirun read back from MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import REPO, clean_env, run_app_in_process
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from nas_plugin.tasks.text import run_text_trial
from nas_plugin.tasks.text_data import load_text_data
from nas_plugin.tracking.model_logging import MODEL_URI_TAG
from nas_plugin.tracking.reporter import mlflow_reporting

CONF = REPO / "conf"
PIPELINE = str(REPO / "pipelines" / "text.py")
EXPERIMENT = "nas-text-text_classification"
RESULT_KEYS = {
    *(f"{split}_{metric}" for split in ("val", "test") for metric in ("accuracy", "loss")),
    "val_macro_f1",
    "test_macro_f1",
    "train_loss",
    "params",
    "flops",
    "latency_ms",
    "peak_memory_mb",
    "train_seconds",
    "epochs",
}


def trial_cfg(tmp_path: Path, **train: object) -> DictConfig:
    """conf/text.yaml's job keys with a tiny model and data set; caches under tmp_path."""
    cfg = OmegaConf.create(
        {
            **{k: v for k, v in OmegaConf.load(CONF / "text.yaml").items() if k != "hydra"},
            "task": OmegaConf.load(CONF / "task" / "text_classification.yaml"),
            "model": OmegaConf.load(CONF / "model" / "transformer.yaml"),
        }
    )
    cfg.merge_with(
        {
            "task": {
                "embedded": {"size": 300},
                "cache_dir": str(tmp_path / "datasets"),
                "tokenizer": {"cache_dir": str(tmp_path / "tokenizers")},
            },
            "model": {"num_layers": 1, "hidden_size": 32, "head_dim": 16, "max_length": 24},
            "train": {"epochs": 2, **train},
            "hardware": {"latency_repeats": 3, "latency_warmup": 1},
        }
    )
    return cfg


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    """One throwaway sqlite store for the module: creating one takes seconds."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the default artifact root is ./mlruns
        previous = mlflow.get_tracking_uri()
        uri = f"sqlite:///{root}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        yield MlflowClient(uri)
        mlflow.set_tracking_uri(previous)


# -- the trial in process ----------------------------------------------------------------------


def test_trial_logs_epochs_architecture_tokenizer_and_a_model_that_scores_alike(
    tracking: MlflowClient, tmp_path: Path
) -> None:
    cfg = trial_cfg(tmp_path)
    with mlflow.start_run() as run, mlflow_reporting():
        result = run_text_trial(cfg)

    assert set(result) == RESULT_KEYS
    assert all(isinstance(v, float) for v in result.values())
    assert min(result["params"], result["flops"], result["latency_ms"]) > 0
    assert result["peak_memory_mb"] > 0 and result["epochs"] == 2.0
    logged = tracking.get_run(run.info.run_id).data
    for key in ("val_accuracy", "val_loss", "train_loss", "val_macro_f1"):
        history = tracking.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [1, 2], key
    assert logged.params["arch.num_heads"] == "2"  # derived: hidden 32 / head_dim 16
    assert logged.params["arch.intermediate_size"] == "64"  # ffn_ratio 2
    assert logged.tags["tokenizer.source"] == "trained"

    # The logged pipeline (raw text in, label names out) scores the validation split alike.
    data = load_text_data(cfg.task)
    predicted = mlflow.pyfunc.load_model(logged.tags[MODEL_URI_TAG]).predict(data.val.texts)
    truth = [data.class_names[i] for i in data.val.labels]
    accuracy = sum(p == t for p, t in zip(predicted["label"], truth, strict=True)) / len(truth)
    assert accuracy == pytest.approx(result["val_accuracy"])


def test_trial_outside_a_run_starts_none_and_reuses_the_tokenizer(
    tracking: MlflowClient, tmp_path: Path
) -> None:
    cfg = trial_cfg(tmp_path, epochs=1)
    cfg.hardware.measure = False
    runs = len(tracking.search_runs(["0"]))
    first, second = run_text_trial(cfg), run_text_trial(cfg)
    assert mlflow.active_run() is None
    assert len(tracking.search_runs(["0"])) == runs
    assert set(first) == RESULT_KEYS - {"flops", "latency_ms", "peak_memory_mb"}
    assert first == {**second, "train_seconds": first["train_seconds"]}  # same seed, same trial
    assert len(list((tmp_path / "tokenizers").iterdir())) == 1


def test_cost_is_measured_at_the_configured_sequence_length(tmp_path: Path) -> None:
    cfg = trial_cfg(tmp_path, epochs=1, train_fraction=0.2)
    cfg.log_model = False
    full = run_text_trial(cfg)
    cfg.hardware.seq_length = 8
    short = run_text_trial(cfg)
    assert short["flops"] < full["flops"] and short["params"] == full["params"]
    cfg.hardware.seq_length = 25
    with pytest.raises(ValueError, match="hardware.seq_length = 25 is not allowed"):
        run_text_trial(cfg)


def test_a_diverging_trial_raises_floating_point_error(tmp_path: Path) -> None:
    cfg = trial_cfg(tmp_path, epochs=1, optimizer="sgd", lr=1.0e8, grad_clip=0.0, warmup_fraction=0)
    cfg.hardware.measure = False
    with pytest.raises(FloatingPointError, match="lower train.lr"):
        run_text_trial(cfg)


def test_a_vision_model_is_refused(tmp_path: Path) -> None:
    cfg = trial_cfg(tmp_path)
    cfg.model = OmegaConf.load(CONF / "model" / "mbconv.yaml")
    with pytest.raises(ValueError, match="select model=transformer"):
        run_text_trial(cfg)


# -- end to end --------------------------------------------------------------------------------

TINY = [
    "train.epochs=1",
    "task.embedded.size=300",
    "hardware.latency_repeats=3",
    "hardware.latency_warmup=1",
]


@pytest.mark.e2e
def test_text_sweep_registers_a_champion_that_predicts_raw_text_in_a_new_process(
    tmp_path: Path,
) -> None:
    result = run_app_in_process(
        tmp_path,
        PIPELINE,
        "-m",
        *TINY,
        f"task.tokenizer.cache_dir={tmp_path / 'tokenizers'}",
        f"task.cache_dir={tmp_path / 'datasets'}",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.strategy.population_size=2",
        "hydra.sweeper.strategy.sample_size=1",
    )
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs(EXPERIMENT)
    assert parent.data.params["search_space"] == "transformer"
    assert parent.data.params["strategy"] == "evolution"
    assert len(children) == 3
    client = result.client()
    for child in children:
        params, metrics, tags = child.data.params, child.data.metrics, child.data.tags
        assert tags["nas.status"] == "ok"
        assert params["model.model_type"] in ("bert", "distilbert", "deberta-v2")
        hidden, head_dim = int(params["model.hidden_size"]), int(params["model.head_dim"])
        assert int(params["arch.num_heads"]) == hidden // head_dim
        for key in ("val_accuracy", "test_accuracy", "params", "flops", "latency_ms"):
            assert metrics[key] > 0, key
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1]
        arch = json.loads(
            open(client.download_artifacts(child.info.run_id, "trial/architecture.json")).read()
        )
        assert arch["model.max_length"] == int(params["arch.max_length"])
        assert tags["nas.model_uri"].startswith("models:/")
    # The first trial trains the tokenizer; the others find it in the cache.
    assert [c.data.tags["tokenizer.source"] for c in children] == ["trained", "cached", "cached"]

    best = max(children, key=lambda c: c.data.metrics["val_accuracy"])
    version = client.get_model_version_by_alias(EXPERIMENT, "champion")
    assert version.tags["run_id"] == best.info.run_id

    check = (
        "import json, mlflow\n"
        f"mlflow.set_tracking_uri({result.tracking_uri!r})\n"
        f"model = mlflow.pyfunc.load_model('models:/{EXPERIMENT}@champion')\n"
        "print(json.dumps(list(model.predict(['some text', 'the food was not good'])['label'])))\n"
    )
    # Offline: loading must not reach the Hugging Face hub.
    env = {**clean_env(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    labels = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(labels) == 2 and set(labels) <= {"negative", "positive"}


@pytest.mark.e2e
def test_a_position_type_its_family_lacks_is_refused_before_any_trial(tmp_path: Path) -> None:
    result = run_app_in_process(
        tmp_path, PIPELINE, "-m", "model.position_embedding_type=choice(absolute,sinusoidal)"
    )
    assert result.proc.returncode != 0
    assert "search_space=transformer: the candidate model.model_type=bert" in result.output
    assert "'sinusoidal' makes no sense for model.model_type = 'bert'" in result.output
    assert "Launching" not in result.output
