"""Hierarchical space (Liu et al., 2018): canonical encodings, one-edge mutation, the network,
and an evolution sweep on digits."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_app_in_process
from omegaconf import OmegaConf

from nas_plugin.models import build_model
from nas_plugin.space import Categorical, SearchSpace, SearchSpaceError
from nas_plugin.space.hierarchical import PRIMITIVES, HierarchicalSpace, search_space
from nas_plugin.sweep.plan import SweepConfigError, space_class

MODEL_CFG = REPO / "conf" / "model" / "hierarchical.yaml"
SPACE_YAML = REPO / "conf" / "plugin" / "hydra" / "sweeper" / "search_space" / "hierarchical.yaml"


def _shipped_space() -> SearchSpace:
    spec = OmegaConf.to_container(OmegaConf.load(SPACE_YAML))
    return space_class(spec)(list(SearchSpace.from_dict(spec["params"]).params))


def test_the_shipped_space_is_the_hierarchical_one():
    space = _shipped_space()
    assert isinstance(space, HierarchicalSpace)
    assert space.names == search_space().names  # 10 cell edges first, then 4 motifs x 6 edges
    assert len(space.cell_keys) == 10 and list(space.motif_keys) == ["m0", "m1", "m2", "m3"]


def test_an_unknown_space_class_is_refused_before_any_trial():
    with pytest.raises(SweepConfigError, match="space_class='nas_plugin.space:Nope' cannot be"):
        space_class({"name": "mine", "space_class": "nas_plugin.space:Nope"})
    with pytest.raises(SweepConfigError, match="is not a subclass of nas_plugin.space.Search"):
        space_class({"name": "mine", "space_class": "nas_plugin.space:Categorical"})


def test_mutation_changes_exactly_one_edge_at_one_level():
    space = search_space()
    rng = random.Random(0)
    levels = set()
    for _ in range(300):
        parent = space.sample(rng)
        child = space.mutate(parent, rng)
        before, after = dict(parent), dict(child)
        changed = [k for k in before.keys() & after.keys() if before[k] != after[k]]
        assert len(changed) == 1, changed
        key = changed[0]
        level = 3 if key in space.cell_keys else 2
        levels.add(level)
        if level == 2:
            # Only a motif the cell uses mutates (an unused one does not change the network).
            assert key.split(".")[2] in space.used_motifs(before)
            assert before.keys() == after.keys()
        else:
            # Motifs the new edge starts using appear, motifs no longer used disappear.
            appeared = {k.split(".")[2] for k in after.keys() - before.keys()}
            gone = {k.split(".")[2] for k in before.keys() - after.keys()}
            assert appeared <= {after[key]} and gone <= {before[key]}
    assert levels == {2, 3}


def test_encodings_are_canonical_and_round_trip():
    space = search_space()
    rng = random.Random(1)
    for _ in range(50):
        encoding = space.sample(rng)
        assert space.encode(space.decode(encoding)) == encoding
        assert space.from_json(space.to_json(encoding)) == encoding
        hash(encoding)
    # Two configs that differ only in a motif the cell never uses are one encoding.
    values = OmegaConf.to_container(OmegaConf.load(MODEL_CFG))
    flat = {f"model.cell.{k}": v for k, v in values["cell"].items()}
    for motif, edges in values["motifs"].items():
        flat |= {f"model.motifs.{motif}.{k}": v for k, v in edges.items()}
    flat |= {f"model.cell.{k}": "m0" for k in values["cell"] if values["cell"][k] == "m3"}
    other = {**flat, "model.motifs.m3.e_1_0": "avg_pool_3x3"}
    assert space.encode(flat) == space.encode(other)
    assert not any(k.startswith("model.motifs.m3.") for k, _ in space.encode(flat))


def test_size_counts_distinct_networks():
    space = search_space(motifs=2, motif_nodes=2, cell_nodes=3)
    # Per cell edge: none, m0 or m1; each motif in use has 7 contents (one edge).
    brute = sum(
        7 ** len(set(cell) - {"none"}) for cell in itertools.product(["none", "m0", "m1"], repeat=3)
    )
    assert space.size() == len(set(space.grid())) == brute == 687


@pytest.mark.parametrize(
    "params, message",
    [
        ([Categorical("model.motifs.m0.e_1_0", PRIMITIVES)], "needs level-3 keys"),
        (
            [Categorical("model.cell.e_1_0", ("none", "m1"))],
            "['m1'] are not level-2 motifs of this space; allowed: ['none']",
        ),
        (
            [
                Categorical("model.cell.e_1_0", ("none", "m0")),
                Categorical("model.motifs.m0.e_1_0", ("conv_5x5",)),
            ],
            "['conv_5x5'] are not level-1 primitives",
        ),
        ([Categorical("model.cell.e_0_1", ("none",))], "must go from an earlier node"),
    ],
)
def test_bad_spaces_name_the_key_and_what_is_allowed(params, message):
    with pytest.raises(SearchSpaceError) as err:
        HierarchicalSpace(params)
    assert message in str(err.value)


def _model_cfg(space: SearchSpace, encoding, **overrides):
    cfg = OmegaConf.load(MODEL_CFG)
    for key, value in space.decode(encoding).items():
        OmegaConf.update(cfg, key.removeprefix("model."), value)
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def test_every_sampled_candidate_builds_and_classifies():
    space = search_space()
    rng = random.Random(2)
    x = torch.randn(2, 1, 16, 16)
    for _ in range(4):
        model = build_model(_model_cfg(space, space.sample(rng), channels=8), 10, 1)
        assert model(x).shape == (2, 10)
    # Motif sharing: a motif used on two cell edges is two modules of the same structure.
    model = build_model(OmegaConf.load(MODEL_CFG), 10, 1)
    first_cell = model.cells[0]
    assert repr(first_cell.edges["e_1_0"]) == repr(first_cell.edges["e_3_2"])  # both m0
    assert first_cell.edges["e_1_0"] is not first_cell.edges["e_3_2"]


def test_a_bad_model_config_names_the_key():
    cfg = OmegaConf.load(MODEL_CFG)
    cfg.cell.e_1_0 = "m9"
    with pytest.raises(ValueError, match=r"model.cell.e_1_0 = 'm9' is not allowed: expected none"):
        build_model(cfg, 10, 1)
    cfg = OmegaConf.load(MODEL_CFG)
    cfg.motifs.m0.e_1_0 = "conv_5x5"
    with pytest.raises(ValueError, match=r"model.motifs.m0.e_1_0 = 'conv_5x5' is not allowed"):
        build_model(cfg, 10, 1)


@pytest.mark.e2e
def test_hierarchical_evolution_sweep_on_digits(tmp_path: Path) -> None:
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "-m",
        "model=hierarchical",
        "hydra/sweeper/search_space=hierarchical",
        "hydra/sweeper/strategy=evolution",
        "hydra.sweeper.strategy.population_size=2",
        "hydra.sweeper.strategy.sample_size=2",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.mlflow.experiment=hier",
        "model.channels=8",
        "model.cells=2",
        "train.epochs=1",
        "train.train_fraction=0.3",
        "train.bn_recalibration_images=256",
        "hardware.latency_repeats=3",
        "log_model=false",
        "hydra.sweeper.registry.enabled=false",
    )
    assert result.proc.returncode == 0, result.output
    parent, trials = result.runs("hier")
    assert parent.data.params["search_space"] == "hierarchical"
    assert len(trials) == 3
    cells = [{k: v for k, v in t.data.params.items() if k.startswith("model.")} for t in trials]
    for trial in trials:
        assert 0.0 <= trial.data.metrics["val_accuracy"] <= 1.0
    # The third trial is a mutation of one of the first two: one edge at one level differs.
    child = cells[2]
    assert any(
        sum(parent.get(k) != v for k, v in child.items() if k in parent) == 1
        for parent in cells[:2]
    )
