"""The reporter interface between training code and whoever records it (MLflow in a sweep)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from nas_plugin.tasks.reporting import (
    EpochLoop,
    TrialReporter,
    current_reporter,
    require_model_logging,
    use_reporter,
)
from nas_plugin.tasks.vision import run_vision_trial

CONF = Path(__file__).resolve().parent.parent / "conf"


class Recorder(TrialReporter):
    """What another tracker (W&B, a CSV file...) would implement: everything kept in lists."""

    def __init__(self, prune_at: int | None = None) -> None:
        self.tags: dict[str, Any] = {}
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.reports: list[tuple[int, int | None]] = []
        self.models: list[tuple[torch.nn.Module, torch.Tensor]] = []
        self.prune_at = prune_at

    @property
    def recording(self) -> bool:
        return True

    @property
    def logs_models(self) -> bool:
        return True

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.tags.update(tags)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def report_epoch(
        self, step: int, value: float | Mapping[str, float], max_step: int | None = None
    ) -> bool:
        self.reports.append((step, max_step))
        return self.prune_at is not None and step >= self.prune_at

    def log_image_model(self, model: Any, input_example: Any) -> str | None:
        self.models.append((model, input_example))
        return f"recorder:/{len(self.models)}"

    def log_text_model(
        self, model: Any, tokenizer: Any, max_length: int, input_example: Sequence[str]
    ) -> str | None:
        raise AssertionError("a vision trial logs no text model")


def digits_trial(epochs: int) -> Any:
    return OmegaConf.create(
        {
            "seed": 0,
            "task": OmegaConf.load(CONF / "task" / "digits.yaml"),
            "model": OmegaConf.load(CONF / "model" / "mbconv.yaml"),
            "train": {
                "epochs": epochs,
                "batch_size": 64,
                "lr": 0.005,
                "optimizer": "adamw",
                "train_fraction": 0.3,
                "num_threads": 1,
            },
            "hardware": {"measure": False},
            "log_model": True,
        }
    )


def test_a_vision_trial_reports_everything_to_the_installed_reporter() -> None:
    recorder = Recorder()
    with use_reporter(recorder):
        result = run_vision_trial(digits_trial(epochs=2))

    assert recorder.tags["runtime.device"] == "cpu"
    assert [step for step, _ in recorder.metrics] == [1, 2]
    assert recorder.metrics[-1][1]["val_accuracy"] == pytest.approx(result["val_accuracy"])
    assert recorder.reports == [(1, 2), (2, 2)]  # each epoch, with the budget, to the pruner
    ((model, example),) = recorder.models
    assert example.shape[1:] == (1, 8, 8)  # raw digits, as the logged model takes them
    with torch.no_grad():
        assert model(example).shape == (len(example), 10)


def test_a_pruned_trial_stops_there_and_logs_no_model() -> None:
    recorder = Recorder(prune_at=1)
    with use_reporter(recorder):
        result = run_vision_trial(digits_trial(epochs=3))

    assert result["epochs"] == 1.0 and recorder.reports == [(1, 3)]
    assert recorder.models == []


def test_without_a_reporter_nothing_is_recorded_and_every_epoch_runs() -> None:
    reporter = current_reporter()
    assert not reporter.recording and not reporter.logs_models
    loop = EpochLoop(3)
    assert [epoch for epoch in loop if not loop.report(0.5)] == [1, 2, 3]
    with pytest.raises(RuntimeError, match="no reporter that logs them is installed"):
        require_model_logging("this search")


def test_use_reporter_restores_the_previous_one_even_after_an_error() -> None:
    outer, inner = Recorder(), Recorder()
    with use_reporter(outer):
        with pytest.raises(ValueError), use_reporter(inner):
            assert current_reporter() is inner
            raise ValueError("the trial failed")
        assert current_reporter() is outer
    assert current_reporter() is not outer
