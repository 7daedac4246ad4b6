"""``hydra.sweeper.pruner``: which rule, with which settings, checked before any trial."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas_plugin.pruning.asha import ASHARule
from nas_plugin.pruning.base import PrunerError, PruningRule
from nas_plugin.pruning.curve import CurveRule
from nas_plugin.pruning.median import MedianRule

RULES: dict[str, type[PruningRule]] = {cls.name: cls for cls in (MedianRule, ASHARule, CurveRule)}
NO_PRUNING = "none"


def make_rule(config: Mapping[str, Any] | None) -> PruningRule | None:
    """The rule ``hydra.sweeper.pruner`` selects, or ``None`` for ``none``; raises
    :class:`PrunerError` naming the key, the value and what is allowed."""
    options = dict(config or {})
    name = options.pop("name", NO_PRUNING)
    if name == NO_PRUNING:
        if options:
            raise PrunerError(
                f"hydra.sweeper.pruner: option(s) {sorted(options)} given, but the pruner is "
                f"'none'; pick one with hydra/sweeper/pruner={{{','.join(RULES)}}}"
            )
        return None
    if name not in RULES:
        raise PrunerError(
            f"hydra.sweeper.pruner.name={name!r} is unknown; allowed: {[NO_PRUNING, *RULES]}"
        )
    return RULES[name].from_config(options)


def check_pruner(
    config: Mapping[str, Any] | None, multi_objective: bool, estimator: str
) -> dict[str, Any]:
    """Validate ``hydra.sweeper.pruner`` against the sweep; its settings with every default."""
    rule = make_rule(config)
    if rule is None:
        return {"name": NO_PRUNING}
    if multi_objective:
        raise PrunerError(
            f"hydra.sweeper.pruner={rule.name} needs one objective to rank trials by; this sweep "
            "has several (hydra.sweeper.objective.metric is a list): use pruner=none"
        )
    if estimator == "hyperband":
        raise PrunerError(
            f"hydra.sweeper.pruner={rule.name} and estimator=hyperband both stop trials early; "
            "pick one (estimator=full with a pruner, or pruner=none with hyperband)"
        )
    return rule.describe()
