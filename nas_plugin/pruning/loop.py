"""A plain torch training loop that reports each epoch and ends once the trial is pruned."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from nas_plugin.pruning.channel import report


class EpochLoop:
    """Epochs ``1..epochs`` that stop coming once the sweep's pruner says stop::

        loop = EpochLoop(cfg.train.epochs)
        for epoch in loop:
            train_one_epoch(model)
            loop.report({"val_accuracy": evaluate(model)})   # or one number
        return {"val_accuracy": ..., "epochs": loop.epochs_done}

    Outside a sweep (or with ``pruner=none``) every epoch runs. A dict of metrics is reported
    as the sweep's objective metric, so one call serves whatever the sweep optimises.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = int(epochs)
        self.epoch = 0
        self.pruned = False

    def __iter__(self) -> Iterator[int]:
        for epoch in range(1, self.epochs + 1):
            if self.pruned:
                return
            self.epoch = epoch
            yield epoch

    @property
    def epochs_done(self) -> int:
        return self.epoch

    def report(self, value: float | Mapping[str, float]) -> bool:
        """Report this epoch's value; True if the trial is pruned (the loop then ends)."""
        self.pruned = report(self.epoch, value, max_step=self.epochs) or self.pruned
        return self.pruned
