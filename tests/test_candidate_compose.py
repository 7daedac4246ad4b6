"""The sweeper's fast candidate configs (pre-screen, warm-up) are the configs Hydra composes."""

from __future__ import annotations

import random

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nas_plugin.sweep.compose import candidate_composer
from nas_plugin.sweep.plan import build_plan


@pytest.mark.parametrize(
    ("config_name", "overrides"),
    [
        ("nb201", []),  # categorical cell edges
        ("vision", []),  # the mbconv demo space: ints, floats, categoricals
        ("segmentation", []),  # cell edges, trellis moves, a bool
        ("vision", ["hydra/sweeper/estimator=low_fidelity"]),  # estimator overrides kept
    ],
)
def test_fast_candidate_config_equals_hydras_composition(config_name, overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):

        def hydra_compose(trial_overrides):
            cfg = compose(config_name, overrides=[*overrides, *trial_overrides])
            return cfg

        sweeper = compose(config_name, overrides=overrides, return_hydra_config=True)
        sweeper_cfg = OmegaConf.to_container(sweeper.hydra.sweeper, resolve=True)
        plan = build_plan(sweeper_cfg, [])
        fast = candidate_composer(plan, hydra_compose)
        rng = random.Random(0)
        for _ in range(3):
            encoding = plan.space.sample(rng)
            expected = hydra_compose(plan.trial_overrides(plan.space.decode(encoding)))
            got = fast(encoding)
            assert OmegaConf.to_container(got, resolve=True) == OmegaConf.to_container(
                expected, resolve=True
            )


def test_a_searched_config_group_is_composed_by_hydra():
    calls = []
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        sweeper = compose("vision", return_hydra_config=True)
        sweeper_cfg = OmegaConf.to_container(sweeper.hydra.sweeper, resolve=True)
        sweeper_cfg["search_space"] = {"params": {"task": "choice(digits,cifar10)"}}
        plan = build_plan(sweeper_cfg, [])

        def hydra_compose(trial_overrides):
            calls.append(trial_overrides)
            return compose("vision", overrides=trial_overrides, return_hydra_config=True)

        fast = candidate_composer(plan, hydra_compose)
        fast(plan.space.sample(random.Random(0)))
    assert calls[-1][-1] in ("task=digits", "task=cifar10")  # composed by Hydra, not set as a value
