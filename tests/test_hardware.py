"""measure_cost: parameter count, FLOPs, CPU latency and peak inference memory of real models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from nas_plugin.hardware.cost import check_batch_sizes, cost_tags, measure_cost
from nas_plugin.models import build_model

MBCONV = Path(__file__).resolve().parent.parent / "conf" / "model" / "mbconv.yaml"
MIB = 2**20


def mbconv(**overrides: object) -> nn.Module:
    cfg = OmegaConf.merge(OmegaConf.load(MBCONV), overrides)
    return build_model(cfg, num_classes=10, in_chans=1)


def test_costs_of_an_mbconv_network_are_positive() -> None:
    cost = measure_cost(mbconv(), (1, 16, 16), latency_repeats=5, warmup=1)
    assert set(cost) == {"params", "flops", "latency_ms", "peak_memory_mb"}
    assert all(isinstance(value, float) and value > 0 for value in cost.values()), cost


def test_a_wider_deeper_network_costs_more() -> None:
    small = measure_cost(mbconv(width_mult=0.5), (1, 16, 16), latency_repeats=3, warmup=1)
    big = measure_cost(
        mbconv(width_mult=1.5, stages={"s3": {"depth": 3}}), (1, 16, 16), latency_repeats=3
    )
    assert big["params"] > small["params"]
    assert big["flops"] > small["flops"]
    assert big["peak_memory_mb"] > small["peak_memory_mb"]


def test_flops_are_two_per_multiply_accumulate() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    cost = measure_cost(model, (1, 8, 8), latency_repeats=1, warmup=0)
    assert cost["params"] == 64 * 10 + 10
    assert cost["flops"] == 2 * 64 * 10


def test_peak_memory_counts_weights_and_simultaneously_live_activations() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1)
    )
    cost = measure_cost(model, (1, 64, 64), latency_repeats=1, warmup=0)

    weights = sum(p.numel() for p in model.parameters()) * 4
    feature_map = 64 * 64 * 64 * 4
    # At most two 64x64x64 float maps are alive at once (an op's input and its output), plus
    # the 1x64x64 input image.
    expected = weights + 2 * feature_map + 64 * 64 * 4
    assert cost["peak_memory_mb"] * MIB == pytest.approx(expected, rel=0.01)


def test_train_and_eval_states_are_restored() -> None:
    model = mbconv().train()
    model.bn1.eval()  # e.g. a frozen BatchNorm
    before = [m.training for m in model.modules()]
    measure_cost(model, (1, 16, 16), latency_repeats=1, warmup=0)
    assert [m.training for m in model.modules()] == before


def test_rejects_nonsensical_repeats() -> None:
    with pytest.raises(ValueError, match="latency_repeats"):
        measure_cost(nn.Linear(2, 2), (2,), latency_repeats=0)


def test_batch_sizes_time_each_size_and_latency_ms_is_batch_one() -> None:
    cost = measure_cost(mbconv(), (1, 16, 16), latency_repeats=3, warmup=1, batch_sizes=(8, 1))
    assert {"latency_ms_bs1", "latency_ms_bs8"} <= set(cost)
    assert cost["latency_ms"] == cost["latency_ms_bs1"]
    assert all(isinstance(value, float) and value > 0 for value in cost.values()), cost


def test_cpu_figures_say_they_come_from_the_cpu() -> None:
    # (measure_configured_cost sets these as tags of the active run; see test_text_device.py)
    tags = cost_tags(mbconv())
    assert tags == {
        "hardware.device": f"cpu ({torch.get_num_threads()} threads)",
        "hardware.latency_timer": "perf_counter",
        "hardware.memory": "live_tensors",
    }


@pytest.mark.parametrize("bad", [4, [], [0, 64], [1.5], "1,64"])
def test_bad_batch_sizes_are_an_error_naming_the_key(bad) -> None:
    with pytest.raises(ValueError, match=r"hardware.batch_sizes = .* positive integers"):
        check_batch_sizes(bad)
