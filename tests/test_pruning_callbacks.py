"""The ready callbacks: a real transformers ``Trainer`` stopped by the sweep's pruner, and a real
PyTorch Lightning ``Trainer`` in a Hydra multirun stopped by it."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from conftest import run_app
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


# A foreign Lightning app on digits: an MLP whose learning rate is searched. With lr 0.001 it
# stays near chance while lr 0.5 passes 0.8 after two epochs, so median stopping (one warm-up
# epoch) stops the second trial at epoch 2 of 4.
LIGHTNING_APP = """
import hydra
import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset, random_split

from nas_plugin.pruning.lightning import PruningCallback


class MLP(pl.LightningModule):
    def __init__(self, width, lr):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, 10)
        )
        self.lr = lr

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    x, y = load_digits(return_X_y=True)
    data = TensorDataset(torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y))
    train, val = random_split(data, [1400, 397], torch.Generator().manual_seed(0))
    callback = PruningCallback("val_acc")
    trainer = pl.Trainer(
        max_epochs=cfg.epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    model, val_loader = MLP(cfg.model.width, cfg.model.lr), DataLoader(val, batch_size=400)
    trainer.fit(model, DataLoader(train, batch_size=64, shuffle=True), val_loader)
    epochs_done = trainer.current_epoch
    # A final validation outside fit: not a report (it would be one epoch past the budget).
    (final,) = trainer.validate(model, val_loader, verbose=False)
    return {"val_acc": final["val_acc"], "epochs_done": epochs_done}


if __name__ == "__main__":
    main()
"""

LIGHTNING_CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - override hydra/sweeper/strategy: grid
  - override hydra/sweeper/pruner: median
  - _self_
model: {width: 32, lr: 0.5}
epochs: 4
hydra:
  sweeper:
    n_trials: 2
    objective: {metric: val_acc, direction: maximize}
    mlflow: {experiment: lightning}
    registry: {enabled: false}
    pruner: {warmup_steps: 1, min_trials: 1}
    params:
      model.lr: [0.5, 0.001]
"""


@pytest.mark.e2e
def test_lightning_trainer_in_a_multirun_stops_when_pruned(write_app):
    cwd = write_app(LIGHTNING_APP, LIGHTNING_CONFIG)
    result = run_app(cwd, "train.py", "-m")
    assert result.proc.returncode == 0, result.output
    parent, (good, bad) = result.runs("lightning")
    client = result.client()

    def reported(run):
        return [m.step for m in client.get_metric_history(run.info.run_id, REPORT_METRIC)]

    # Every validation was reported at its epoch; the good trial ran its 4 epochs.
    assert good.data.tags["nas.status"] == "ok" and reported(good) == [1, 2, 3, 4]
    assert good.data.metrics["epochs_done"] == 4
    # The bad one was stopped by the Trainer right after epoch 2, recorded as pruned there.
    assert bad.info.status == "FINISHED"
    assert bad.data.tags["nas.status"] == "pruned"
    assert bad.data.tags["nas.pruned_step"] == "2"
    assert "below the median" in bad.data.tags["nas.prune_reason"]
    assert reported(bad) == [1, 2] and bad.data.metrics["epochs_done"] == 2
    assert bad.data.metrics["val_acc"] < 0.3 < good.data.metrics["val_acc"]
    assert parent.data.metrics["trials_pruned"] == 1
    # The sweeper booked (and told the strategy) the pruned trial with the value it reached.
    value = bad.data.metrics["val_acc"]
    assert f"trial 1 pruned at step 2 val_acc={value:.4g}" in result.output
    # Lightning wrote no logs or checkpoints into the app's directory.
    assert sorted(p.name for p in cwd.iterdir()) == [
        "config.yaml", "mlflow.db", "mlruns", "multirun", "train.py"
    ]  # fmt: skip


def test_lightning_callback_refuses_a_metric_the_module_does_not_log():
    import lightning.pytorch as pl

    from nas_plugin.pruning.lightning import PruningCallback

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch, _):
            return torch.nn.functional.cross_entropy(self.layer(batch[0]), batch[1])

        def validation_step(self, batch, _):
            self.log("val_loss", torch.nn.functional.cross_entropy(self.layer(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    options = dict(max_epochs=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer = pl.Trainer(callbacks=[PruningCallback("val_acc")], **options)
    with pytest.raises(KeyError, match=r"monitor='val_acc'.*logged \['val_loss'\]"):
        trainer.fit(Tiny(), loader, loader)
    # strict=False skips a validation without the metric.
    pl.Trainer(callbacks=[PruningCallback("val_acc", strict=False)], **options).fit(
        Tiny(), loader, loader
    )
