"""A candidate's trial config for what the sweeper scores itself (pre-screen, warm-up).

Hydra composes a config in about 0.15 s, several times what a zero-cost proxy needs on a small
network, and a warm-up composes a thousand. When every searched key is a plain value of the app's
config (not a config group, which only Hydra can swap in), the candidate's config is the config
composed once without searched keys, with its values set: the same values Hydra would parse back
from the override strings, and interpolations still resolve against them. Otherwise every
candidate is composed by Hydra.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from nas_plugin.space import Encoding
from nas_plugin.sweep.plan import SweepPlan

_MISSING = object()


def candidate_composer(
    plan: SweepPlan, compose: Callable[[list[str]], Any], base: Any = None
) -> Callable[[Encoding], Any]:
    """Encoding -> the config its trial would compose (what a proxy builds the network from);
    ``base``: ``compose(plan.trial_overrides({}))`` when the caller has it already."""
    if base is None:
        base = compose(plan.trial_overrides({}))
    if not _values_only(plan, base):
        return lambda encoding: compose(plan.trial_overrides(plan.space.decode(encoding)))

    def compose_values(encoding: Encoding) -> DictConfig:
        cfg = copy.deepcopy(base)
        with open_dict(cfg):
            for key, value in plan.space.decode(encoding).items():
                OmegaConf.update(cfg, key, value, merge=False)
        return cfg

    return compose_values


def _values_only(plan: SweepPlan, base: Any) -> bool:
    """Whether every searched key is an existing value of ``base`` and none a config group."""
    if not isinstance(base, DictConfig):
        return False
    choices = OmegaConf.select(base, "hydra.runtime.choices", default=None) or {}
    for key in plan.space.names:
        if "/" in key or key in choices:
            return False
        value = OmegaConf.select(base, key, default=_MISSING, throw_on_missing=False)
        if value is _MISSING or isinstance(value, DictConfig):
            return False
    return True
