"""The ready callbacks: a real transformers ``Trainer`` stopped by the sweep's pruner, and the
PyTorch Lightning callback where Lightning is installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from nas_plugin.pruning.channel import REPORT_METRIC, TrialChannel, activate


@pytest.fixture
def sweep(tmp_path):
    """A real store with a finished sibling trial that reported 1.0 at every step."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("callbacks")
    parent = client.create_run(experiment).info.run_id
    sibling = client.create_run(
        experiment, tags={"mlflow.parentRunId": parent, "nas.trial": "0"}
    ).info.run_id
    client.log_batch(sibling, metrics=[Metric(REPORT_METRIC, 1.0, 0, s) for s in range(0, 41)])
    client.set_terminated(sibling)
    own = client.create_run(
        experiment, tags={"mlflow.parentRunId": parent, "nas.trial": "1"}
    ).info.run_id

    def channel(metric: str) -> TrialChannel:
        return TrialChannel(
            client,
            experiment_id=experiment,
            parent_run_id=parent,
            run_id=own,
            trial=1,
            metric=metric,
            pruner={"name": "median", "warmup_steps": 5, "min_trials": 1},
        )

    return client, channel


# transformers' Trainer (even TrainingArguments) needs accelerate, which nas_plugin does not
# depend on; the next test drives the callback with transformers' real state objects instead.
@pytest.mark.skipif(
    importlib.util.find_spec("accelerate") is None,
    reason="accelerate is not installed (transformers' Trainer needs it)",
)
def test_transformers_trainer_stops_when_pruned(sweep, tmp_path):
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        Trainer,
        TrainingArguments,
    )

    from nas_plugin.pruning.hf import PruningCallback

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    rng = np.random.default_rng(0)
    data = [
        {"input_ids": rng.integers(1, 32, 8).tolist(), "labels": int(rng.integers(0, 2))}
        for _ in range(48)
    ]

    def accuracy(prediction):
        return {
            "accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())
        }

    callback = PruningCallback()
    trainer = Trainer(
        model=BertForSequenceClassification(config),
        args=TrainingArguments(
            output_dir=str(tmp_path / "out"),
            max_steps=40,
            per_device_train_batch_size=8,
            eval_strategy="steps",
            eval_steps=5,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
        ),
        train_dataset=data[:32],
        eval_dataset=data[32:],
        compute_metrics=accuracy,
        callbacks=[callback],
    )
    client, make_channel = sweep
    # The sweep optimises "accuracy": the callback finds it under the Trainer's eval_ prefix.
    channel = make_channel("accuracy")
    with activate(channel):
        trainer.train()
    # Evaluated at 5 (warm-up) and 10, where it is below the sibling's 1.0: stopped there.
    assert callback.pruned and channel.pruned_step == 10
    assert trainer.state.global_step == 10 < trainer.state.max_steps
    history = client.get_metric_history(channel.run_id, REPORT_METRIC)
    assert [m.step for m in history] == [5, 10]


def test_transformers_callback_on_real_trainer_state(sweep):
    """The callback as the Trainer drives it: on_evaluate with its TrainerState and
    TrainerControl after each evaluation (the arguments object is not read)."""
    from transformers import TrainerControl, TrainerState

    from nas_plugin.pruning.hf import PruningCallback

    callback = PruningCallback("eval_accuracy")
    state, control = TrainerState(max_steps=40), TrainerControl()
    # Outside a sweep: nothing happens.
    state.global_step = 10
    callback.on_evaluate(None, state, control, metrics={"eval_accuracy": 0.0})
    assert not control.should_training_stop

    client, make_channel = sweep
    channel = make_channel("eval_accuracy")
    stopped_at = None
    with activate(channel):
        for step in range(5, 41, 5):
            state.global_step = step
            callback.on_evaluate(None, state, control, metrics={"eval_accuracy": 0.5})
            if control.should_training_stop:
                stopped_at = step
                break
    assert stopped_at == 10 and callback.pruned and channel.pruned_step == 10
    assert [m.step for m in client.get_metric_history(channel.run_id, REPORT_METRIC)] == [5, 10]
    # Per epoch: the epoch and the epoch budget come from the state too.
    epochs = PruningCallback(per_epoch=True)
    state, control = TrainerState(epoch=6.0, num_train_epochs=20), TrainerControl()
    with activate(make_channel("accuracy")) as per_epoch:
        epochs.on_evaluate(None, state, control, metrics={"eval_accuracy": 0.5, "epoch": 6.0})
    assert control.should_training_stop and per_epoch.pruned_step == 6
    with pytest.raises(KeyError, match="eval_f1"):
        PruningCallback("eval_f1").on_evaluate(None, state, control, metrics={"eval_loss": 1.0})


@pytest.mark.skipif(
    importlib.util.find_spec("lightning") is None,
    reason="PyTorch Lightning is not installed (optional; nas_plugin does not depend on it)",
)
def test_lightning_trainer_stops_when_pruned(sweep):
    import lightning.pytorch as pl

    from nas_plugin.pruning.lightning import PruningCallback

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.layer(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_acc", (self.layer(x).argmax(-1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    callback = PruningCallback("val_acc")
    trainer = pl.Trainer(
        max_epochs=20,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    _, make_channel = sweep
    channel = make_channel("val_acc")
    with activate(channel):
        trainer.fit(Tiny(), loader, loader)
    # Epoch 6 is the first after the 5-step warm-up: below the sibling's 1.0, stopped there.
    assert callback.pruned and channel.pruned_step == 6
    assert trainer.current_epoch < 20
