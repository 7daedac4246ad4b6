"""A PyTorch Lightning callback that reports each validation to the sweep's pruner.

    from nas_plugin.pruning.lightning import PruningCallback
    trainer = lightning.Trainer(max_epochs=20, callbacks=[PruningCallback("val_acc")])

Importable only where ``lightning`` (or ``pytorch_lightning``) is installed; nas_plugin does
not depend on it. Each validation during ``fit`` is reported at its 1-based epoch with
``max_step`` the
trainer's ``max_epochs``; when the pruner says stop, ``trainer.should_stop`` ends training
(Lightning keeps training up to ``min_epochs``, if set). Outside a NAS sweep it does nothing.
Tested with Lightning 2.6 (tests/test_pruning_callbacks.py: a real multirun on digits).
"""

from __future__ import annotations

from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    try:
        import pytorch_lightning as pl
    except ImportError as err:
        raise ImportError(
            "nas_plugin.pruning.lightning needs PyTorch Lightning: pip install lightning"
        ) from err

from nas_plugin.pruning.channel import report


class PruningCallback(pl.Callback):
    def __init__(self, monitor: str | None = None, strict: bool = True) -> None:
        # The logged metric to report (``val_acc``); None: all callback metrics, from which
        # the sweep's objective metric is taken.
        self.monitor = monitor
        # A validation without ``monitor`` is an error, as in Lightning's EarlyStopping: a
        # misspelt name would otherwise never prune anything. False: that validation is skipped
        # (a metric logged only on some validations).
        self.strict = strict
        self.pruned = False

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        # Only fit's validations: a trainer.validate() after fit would otherwise be reported as
        # one epoch past the budget, and could mark a fully trained trial as pruned.
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if self.monitor is not None and self.monitor not in metrics:
            if not self.strict:
                return
            raise KeyError(
                f"PruningCallback(monitor={self.monitor!r}): the validation logged "
                f"{sorted(metrics)}; log it with self.log({self.monitor!r}, ...) in "
                "validation_step, or pass strict=False"
            )
        value: Any = metrics[self.monitor] if self.monitor is not None else metrics
        max_epochs = trainer.max_epochs if (trainer.max_epochs or 0) > 0 else None
        if report(trainer.current_epoch + 1, value, max_step=max_epochs):
            self.pruned = True
            trainer.should_stop = True
