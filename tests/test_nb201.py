"""NAS-Bench-201: the cell strings, the named search space, the torch model, real training."""

from __future__ import annotations

import copy
import itertools
import random
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO, run_app_in_process
from omegaconf import OmegaConf

from nas_plugin.benchmark_table import BenchmarkTable
from nas_plugin.models import build_model
from nas_plugin.models.nb201 import NB201Network, build_nb201
from nas_plugin.space import SearchSpace, SearchSpaceError, nb201

CONF = REPO / "conf"


def model_cfg(**overrides: Any) -> dict[str, Any]:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "nb201.yaml"))
    cfg.update(overrides)
    return cfg


def tiny(ops: tuple[str, ...]) -> NB201Network:
    return NB201Network(ops, channels=4, cells_per_stage=1, num_classes=10, in_chans=1)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- cell strings ----------------------------------------------------------------------------


def test_every_cell_round_trips_and_is_in_the_packaged_table() -> None:
    strings = set()
    for ops in itertools.product(nb201.OPS, repeat=len(nb201.EDGES)):
        arch = nb201.to_arch_str(ops)
        assert nb201.from_arch_str(arch) == ops
        strings.add(arch)
    assert len(strings) == 5**6 == 15_625
    assert strings == set(nb201.all_arch_strs())
    assert set(BenchmarkTable.load("nb201_cifar10").rows) == strings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("|nor_conv_3x3~0|+|none~0|none~1|", "must have 3 nodes"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 edges"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|", "node 3 needs 3 edges"),
        ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "'conv_5x5~0' should be"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "'none~1' should be <op>~0"),
        ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", "'none' should be <op>~0"),
        ("", "must have 3 nodes"),
    ],
)
def test_malformed_strings_are_refused_with_the_expected_form(text: str, message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message):
        nb201.from_arch_str(text)


def test_named_search_space_yaml_equals_the_python_space() -> None:
    spec = OmegaConf.to_container(
        OmegaConf.load(CONF / "plugin" / "hydra" / "sweeper" / "search_space" / "nb201.yaml")
    )
    assert spec["name"] == "nb201"
    assert spec["requires"] == {"model.kind": "nb201"}
    assert SearchSpace.from_dict(spec["params"]).params == nb201.search_space().params


def test_default_model_config_is_the_cell_its_comment_names() -> None:
    cfg = model_cfg()
    assert cfg["kind"] == "nb201"
    assert nb201.arch_str_from_cell(cfg["cell"]) == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
        "skip_connect~2|"
    )


# -- the torch model -------------------------------------------------------------------------


def test_sampled_cells_run_forward_and_backward_on_digit_sized_inputs() -> None:
    rng = random.Random(0)
    images = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([3, 7])
    for _ in range(10):
        ops = tuple(rng.choice(nb201.OPS) for _ in nb201.EDGES)
        cfg = model_cfg(channels=4, cell=dict(zip(nb201.EDGE_KEYS, ops, strict=True)))
        model = build_model(cfg, num_classes=10, in_chans=1)
        logits = model(images)
        assert logits.shape == (2, 10), ops
        torch.nn.functional.cross_entropy(logits, labels).backward()
        assert torch.isfinite(logits).all(), ops
        assert model.classifier.weight.grad is not None, ops


def test_all_none_cell_builds_and_runs() -> None:
    model = tiny(("none",) * 6)
    images = torch.rand(2, 1, 16, 16)
    logits = model(images)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    # No path from the input reaches the classifier: every image gets the same logits.
    assert torch.equal(logits[0], logits[1])
    assert model.classifier.bias.grad is not None


def test_parameter_count_orders_3x3_above_1x1_above_parameter_free_ops() -> None:
    counts = {op: n_params(tiny((op,) * 6)) for op in nb201.OPS}
    assert counts["nor_conv_3x3"] > counts["nor_conv_1x1"] > counts["none"]
    assert counts["none"] == counts["skip_connect"] == counts["avg_pool_3x3"]
    # Edge by edge too: each replacement adds that edge's convolution (and BatchNorm) weights.
    base = ("skip_connect", "none", "avg_pool_3x3", "skip_connect", "none", "avg_pool_3x3")
    for edge in range(6):
        ops = list(base)
        previous = n_params(tiny(tuple(ops)))
        for op in ("nor_conv_1x1", "nor_conv_3x3"):
            ops[edge] = op
            current = n_params(tiny(tuple(ops)))
            assert current > previous, (edge, op)
            previous = current


def test_benchmark_sized_network_matches_nb201_parameter_range() -> None:
    # NAS-Bench-201 reports 0.07M to 1.5M parameters on CIFAR-10 (C=16, N=5).
    smallest = NB201Network(("none",) * 6, channels=16, cells_per_stage=5)
    largest = NB201Network(("nor_conv_3x3",) * 6, channels=16, cells_per_stage=5)
    assert round(n_params(smallest) / 1e6, 2) == 0.07
    assert round(n_params(largest) / 1e6, 2) == 1.53
    assert largest.classifier.in_features == 64  # channels C, 2C, 4C


_DELETE = object()


def edit(cfg: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``cfg`` with the dotted ``path`` set to ``value`` (or deleted)."""
    cfg = copy.deepcopy(cfg)
    *parents, last = path.split(".")
    node = cfg
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return cfg


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "cell.edge_2_1",
            "conv_5x5",
            "model.cell.edge_2_1 = 'conv_5x5' is not allowed: expected one of none, "
            "skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3",
        ),
        ("cell.edge_3_2", _DELETE, "model.cell.edge_3_2 is missing"),
        ("cell.edge_4_0", "none", "model.cell.edge_4_0 is not an NB201 edge"),
        ("cell", "|none~0|+...", "model.cell = '|none~0|+...' is not allowed"),
        ("channels", 0, "model.channels = 0 is not allowed: expected an integer >= 1"),
        ("cells_per_stage", "2", "model.cells_per_stage = '2' is not allowed"),
        ("cells_per_stage", True, "model.cells_per_stage = True is not allowed"),
    ],
)
def test_invalid_model_config_names_key_value_and_allowed(
    path: str, value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_nb201(edit(model_cfg(), path, value), num_classes=10, in_chans=1)


# -- end to end: NB201 cells trained for real on digits ------------------------------------


@pytest.mark.e2e
def test_nb201_sweep_with_full_estimator_trains_cells_on_digits(tmp_path: Path) -> None:
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/estimator=full",
        "hydra.sweeper.objective.metric=val_accuracy",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.mlflow.experiment=nas-nb201-digits",
        "train.epochs=1",
        "hardware.latency_repeats=2",
        "hardware.latency_warmup=0",
    )
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("nas-nb201-digits")
    assert parent.data.params["search_space"] == "nb201"
    assert parent.data.params["estimator.name"] == "full"
    assert len(children) == 2
    for child in children:
        assert child.data.tags["nas.status"] == "ok"
        metrics = child.data.metrics
        assert metrics["val_accuracy"] > 0.1  # 10 classes: chance is 0.1
        assert metrics["params"] > 0 and metrics["flops"] > 0
        assert "cifar10_test_acc" not in metrics  # trained, not looked up
        cell = {key: child.data.params[f"model.cell.{key}"] for key in nb201.EDGE_KEYS}
        assert set(cell.values()) <= set(nb201.OPS)
