"""EfficientNet compound scaling: the constrained grid, scaling from the best, the scaled timm
network, and a sweep whose parent run carries the scaling curve."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import REPO, run_app_in_process
from omegaconf import OmegaConf

from nas_plugin.models import build_model
from nas_plugin.models.compound import multipliers
from nas_plugin.space import SearchSpace
from nas_plugin.strategies import StrategyError, make_strategy

MODEL_CFG = REPO / "conf" / "model" / "compound.yaml"
SPACE_YAML = REPO / "conf" / "plugin" / "hydra" / "sweeper" / "search_space" / "compound.yaml"


def _space(**params) -> SearchSpace:
    spec = OmegaConf.to_container(OmegaConf.load(SPACE_YAML))["params"]
    spec.update({f"model.compound.{k}": v for k, v in params.items()})
    return SearchSpace.from_dict(spec)


def _value(encoding, name):
    return dict(encoding)[f"model.compound.{name}"]


def test_the_grid_phase_keeps_the_points_near_the_flops_target_then_scales_the_best():
    strategy = make_strategy({"name": "compound"}, _space(), seed=0)
    grid = []
    while len(grid) < len(strategy.grid):
        grid.append(strategy.ask())
    for encoding in grid:
        a, b, g = (_value(encoding, c) for c in ("alpha", "beta", "gamma"))
        assert abs(a * b**2 * g**2 - 2) <= 0.2 and _value(encoding, "phi") == 1
    # Every point of the 3 x 3 x 3 grid within 10 % of 2 is tried, and only those.
    assert len(grid) == 6
    best = grid[3]
    for encoding in grid:
        strategy.tell(encoding, 0.9 if encoding == best else 0.5)
    scaled = [strategy.ask(), strategy.ask()]
    assert [_value(e, "phi") for e in scaled] == [2, 3]
    for encoding in scaled:
        assert all(_value(encoding, c) == _value(best, c) for c in ("alpha", "beta", "gamma"))
    assert strategy.ask() is None


@pytest.mark.parametrize(
    "options, space, message",
    [
        ({"tolerance": 0}, {}, "no (alpha, beta, gamma) of the grid [1.0, 1.2, 1.4] x"),
        ({"tolerance": 1.5}, {}, "tolerance=1.5 must be in [0, 1)"),
        ({"target": 0}, {}, "target=0 must be a number > 0"),
        ({}, {"phi": [2, 3]}, "must include 1 (the grid phase runs at phi = 1)"),
        ({"prefix": "model.scale"}, {}, "searches exactly ['model.scale.alpha'"),
    ],
)
def test_bad_options_are_refused_before_any_trial(options, space, message):
    with pytest.raises(StrategyError) as err:
        make_strategy({"name": "compound", **options}, _space(**space), seed=0)
    assert message in str(err.value)


def test_depth_width_and_resolution_follow_alpha_beta_gamma_to_the_phi():
    cfg = OmegaConf.load(MODEL_CFG)
    cfg.compound = {"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "phi": 2}
    depth, width, resolution = multipliers(cfg)
    assert depth == pytest.approx(0.5 * 1.2**2)
    assert width == pytest.approx(0.25 * 1.1**2)
    assert resolution == round(16 * 1.15**2) == 21
    base = build_model(OmegaConf.load(MODEL_CFG), num_classes=10, in_chans=1)
    cfg.compound = {"alpha": 1.4, "beta": 1.3, "gamma": 1.3, "phi": 3}
    scaled = build_model(cfg, num_classes=10, in_chans=1)
    blocks = [sum(len(stage) for stage in m.net.blocks) for m in (base, scaled)]
    stems = [m.net.conv_stem.out_channels for m in (base, scaled)]
    assert blocks[1] > blocks[0] and stems[1] > stems[0]
    assert scaled.resolution == round(16 * 1.3**3)
    assert scaled(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_a_bad_model_config_names_the_key():
    cfg = OmegaConf.load(MODEL_CFG)
    cfg.compound.beta = 0.5
    with pytest.raises(ValueError, match=r"model.compound.beta = 0.5 is not allowed: expected a "):
        build_model(cfg, 10, 1)
    cfg = OmegaConf.load(MODEL_CFG)
    cfg.base = "efficientnet_b9"
    with pytest.raises(ValueError, match=r"model.base = 'efficientnet_b9' is not allowed"):
        build_model(cfg, 10, 1)


@pytest.mark.e2e
def test_compound_sweep_logs_each_scaled_model_and_the_curve(tmp_path: Path) -> None:
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "-m",
        "model=compound",
        "hydra/sweeper/search_space=compound",
        "hydra/sweeper/strategy=compound",
        "model.compound.alpha=choice(1.2)",
        "model.compound.beta=choice(1.0,1.1)",
        "model.compound.gamma=choice(1.3)",
        "model.compound.phi=choice(1,2)",
        "model.base_depth=0.25",
        "hydra.sweeper.mlflow.experiment=compound",
        "hydra.sweeper.registry.enabled=false",
        "log_model=false",
        "train.epochs=1",
        "train.train_fraction=0.3",
        "train.bn_recalibration_images=256",
        "hardware.latency_repeats=3",
    )
    assert result.proc.returncode == 0, result.output
    parent, trials = result.runs("compound")
    # One grid point within 10 % of 2 (1.2 * 1.0 * 1.3^2; not 1.2 * 1.1^2 * 1.3^2), then phi = 2.
    phis = [t.data.params["model.compound.phi"] for t in trials]
    assert phis == ["1", "2"]
    assert all(t.data.metrics["flops"] > 0 for t in trials)
    found = {c: parent.data.params[f"scaling.{c}"] for c in ("alpha", "beta", "gamma")}
    assert {c: trials[1].data.params[f"model.compound.{c}"] for c in found} == found
    client = result.client()
    history = client.get_metric_history(parent.info.run_id, "scaling/val_accuracy")
    assert [m.step for m in history] == [1, 2]
    flops = client.get_metric_history(parent.info.run_id, "scaling/flops")
    assert flops[1].value > flops[0].value
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert "scaling_curve.png" in artifacts
