"""Pruning: stop unpromising trials early, inside a Hydra multirun.

Hydra's sweepers cannot prune because a job never talks back while it runs. Here a job reports
intermediate values with :func:`report` (or a ready callback: :class:`EpochLoop` for a plain
torch loop, :mod:`nas_plugin.pruning.hf` for the transformers ``Trainer``,
:mod:`nas_plugin.pruning.lightning` for PyTorch Lightning) and learns whether to stop; the
rule (``hydra/sweeper/pruner=median|asha|curve``) decides from the curves of the sweep's other
trials, read from MLflow (see :mod:`nas_plugin.pruning.channel` for why MLflow is the channel).

Rules see numbers only (:mod:`nas_plugin.pruning.base`); one module per rule.
"""

from __future__ import annotations

from nas_plugin.pruning.asha import ASHARule
from nas_plugin.pruning.base import Curve, Decision, PrunerError, PruningRule
from nas_plugin.pruning.channel import TrialChannel, active_channel, report
from nas_plugin.pruning.config import NO_PRUNING, RULES, check_pruner, make_rule
from nas_plugin.pruning.curve import CurveRule
from nas_plugin.pruning.loop import EpochLoop
from nas_plugin.pruning.median import MedianRule

__all__ = [
    "NO_PRUNING",
    "RULES",
    "ASHARule",
    "Curve",
    "CurveRule",
    "Decision",
    "EpochLoop",
    "MedianRule",
    "PrunerError",
    "PruningRule",
    "TrialChannel",
    "active_channel",
    "check_pruner",
    "make_rule",
    "report",
]
