"""A plain torch training loop that reports each epoch and ends once the trial is pruned.

The loop lives with the training code (:mod:`nas_plugin.tasks.reporting`), which reports
through the trial's reporter; inside a NAS sweep that reporter is the tracking layer's, which
hands each report to the pruner (:func:`nas_plugin.pruning.channel.report`).
"""

from __future__ import annotations

from nas_plugin.tasks.reporting import EpochLoop

__all__ = ["EpochLoop"]
