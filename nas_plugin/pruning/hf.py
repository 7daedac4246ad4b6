"""A transformers ``TrainerCallback`` that reports each evaluation to the sweep's pruner.

    from nas_plugin.pruning.hf import PruningCallback
    trainer = Trainer(..., args=TrainingArguments(eval_strategy="steps", eval_steps=50, ...),
                      callbacks=[PruningCallback()])

Each evaluation is reported at ``state.global_step`` (or at the epoch with ``per_epoch=True``)
with ``max_step`` the run's ``max_steps`` (or ``num_train_epochs``); when the pruner says stop,
``control.should_training_stop`` ends training after the step, and the app returns its last
values as usual. Outside a NAS sweep it does nothing. One training process (no DDP): every rank
would have to agree on stopping.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from nas_plugin.pruning.channel import report


class PruningCallback(TrainerCallback):
    def __init__(self, metric: str | None = None, per_epoch: bool = False) -> None:
        # The eval metric to report (``eval_accuracy``); None: all of them, from which the
        # sweep's objective metric is taken, with or without its ``eval_`` prefix.
        self.metric = metric
        self.per_epoch = per_epoch
        self.pruned = False

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not metrics:
            return
        if self.metric is not None:
            if self.metric not in metrics:
                raise KeyError(
                    f"PruningCallback(metric={self.metric!r}): the evaluation returned "
                    f"{sorted(metrics)}"
                )
            value: Any = float(metrics[self.metric])
        else:
            numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
            value = {**{k.removeprefix("eval_"): v for k, v in numeric.items()}, **numeric}
        if self.per_epoch:
            step, budget = round(state.epoch or 0), round(state.num_train_epochs) or None
        else:
            step, budget = state.global_step, state.max_steps or None
        if report(step, value, max_step=budget):
            self.pruned = True
            control.should_training_stop = True
