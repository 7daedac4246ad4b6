"""Zero-cost proxies: the library call, the ``zero_cost`` estimator, pre-screen and report."""

from __future__ import annotations

import copy
import csv
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO, run_app_in_process
from omegaconf import OmegaConf
from torch import nn

from nas_plugin import config_dir
from nas_plugin.estimators import ESTIMATORS, EstimatorError, make_estimator
from nas_plugin.estimators.zero_cost import ZeroCost
from nas_plugin.models import build_model
from nas_plugin.proxies import PROXIES, ProxyError, ensemble_ranks, score
from nas_plugin.proxies.ranking import rank_candidates
from nas_plugin.space import nb201

ESTIMATOR_YAML = REPO / "conf" / "plugin" / "hydra" / "sweeper" / "estimator" / "zero_cost.yaml"
PIPELINE = str(REPO / "pipelines" / "vision.py")
ALL = tuple(PROXIES)


pytestmark = pytest.mark.usefixtures("one_thread")


def images(count: int = 8, channels: int = 1, size: int = 8, seed: int = 0) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(count, channels, size, size, generator=generator)
    return x, torch.randint(0, 3, (count,), generator=generator)


def mlp(width: int = 16, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 3),
    )


def convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Conv2d(4, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def nb201_net() -> nn.Module:
    ops = ("nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3", "none")
    cell = dict(zip(nb201.EDGE_KEYS, ops, strict=True))
    torch.manual_seed(0)
    return build_model({"kind": "nb201", "channels": 4, "cells_per_stage": 1, "cell": cell}, 3, 1)


def mbconv_net() -> nn.Module:
    """timm's EfficientNet builder: BatchNormAct2d, GELU, squeeze-and-excitation gates."""
    stages = {
        "s1": {"kernel": 3, "expansion": 1, "depth": 1, "channels": 8, "se": False, "stride": 1},
        "s2": {"kernel": 5, "expansion": 3, "depth": 2, "channels": 8, "se": True, "stride": 2},
    }
    torch.manual_seed(0)
    model_cfg = {
        "kind": "mbconv",
        "stem_channels": 8,
        "width_mult": 1.0,
        "activation": "gelu",
        "head_channels": 16,
        "dropout": 0.2,
        "stages": stages,
    }
    return build_model(model_cfg, 3, 1)


def mobilenetv3_net() -> nn.Module:
    """A timm model: Hardswish, Hardsigmoid squeeze-and-excitation gates (no second derivative
    in torch: grasp must work around it)."""
    model_cfg = {"kind": "timm_family", "family": "mobilenetv3", "drop_rate": 0.2}
    model_cfg["mobilenetv3"] = {"size": "small", "width": 0.75}
    torch.manual_seed(0)
    return build_model(model_cfg, 3, 1)


@pytest.fixture(scope="module")
def bert() -> tuple[nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    from transformers import AutoModelForSequenceClassification, BertConfig

    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (6, 10), generator=generator)
    mask = torch.ones_like(ids)
    mask[:2, 7:] = 0  # padded examples: attention takes its masked (non-fused) path
    return model, {"input_ids": ids, "attention_mask": mask}, torch.tensor([0, 1, 0, 1, 1, 0])


def vision_case(build: Callable[[], nn.Module]) -> Callable[[Any], tuple]:
    return lambda _: (build(), *images())


CASES = {
    "convnet": vision_case(convnet),
    "nb201": vision_case(nb201_net),
    "mbconv": vision_case(mbconv_net),
    "mobilenetv3": vision_case(mobilenetv3_net),
    "bert": lambda bert: bert,
}


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# -- every proxy on every kind of model ----------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_every_proxy_is_finite_deterministic_and_leaves_the_model_alone(case: str, bert) -> None:
    model, inputs, targets = CASES[case](bert)
    model.train()
    model.get_submodule(next(n for n, _ in model.named_children())).eval()  # a mixed state
    before_state, before_modes = state(model), modes(model)
    before_grad = [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()

    first = score(model, inputs, targets, ALL, seed=3)
    second = score(model, inputs, targets, ALL, seed=3)

    assert list(first) == list(ALL)
    for name, value in first.items():
        assert isinstance(value, float) and math.isfinite(value), (name, value)
    assert first == second
    after = model.state_dict()
    assert all(torch.equal(before_state[k], after[k]) for k in before_state)
    assert modes(model) == before_modes
    assert [p.requires_grad for p in model.parameters()] == before_grad
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched


def test_several_batches_are_accepted_and_averaged() -> None:
    model = convnet()
    (x1, y1), (x2, y2) = images(seed=1), images(seed=2)
    both = score(model, [x1, x2], [y1, y2], ("naswot", "snip"))
    one = score(model, x1, y1, ("naswot", "snip"))
    other = score(model, x2, y2, ("naswot", "snip"))
    assert both["naswot"] == pytest.approx((one["naswot"] + other["naswot"]) / 2)
    assert both["snip"] != one["snip"]


def test_models_returning_a_dict_are_scored_by_their_logits() -> None:
    class DictOutput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.net(x), "features": x}

    x, y = images()
    wrapped = DictOutput()
    assert score(wrapped, x, y, ALL) == score(mlp(), x, y, ALL)


def test_transformer_synflow_uses_ones_embeddings_and_is_positive(bert) -> None:
    model, inputs, targets = bert
    value = score(model, inputs, targets, ["synflow"])["synflow"]
    assert value > 0
    # Token ids do not matter: synflow feeds inputs_embeds of ones.
    other = {**inputs, "input_ids": (inputs["input_ids"] + 1) % 50}
    assert score(model, other, targets, ["synflow"])["synflow"] == value


# -- each proxy orders a constructed pair correctly ------------------------------------------


def zeroed(model: nn.Sequential, index: int, bias: float | None = None) -> nn.Sequential:
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken[index].weight.zero_()
        if bias is not None:
            broken[index].bias.fill_(bias)
    return broken


@pytest.mark.parametrize(
    "proxy, break_layer, bias",
    [
        ("synflow", 3, None),  # a dead hidden layer cuts every path
        ("snip", 5, None),  # a zero classifier: no weight changes the loss
        ("grad_norm", 5, None),
        ("fisher", 5, 0.0),  # all-zero logits: no channel carries any information
        ("jacob_cov", 1, None),  # a zero first layer: the output ignores the input
    ],
)
def test_a_network_with_a_dead_layer_scores_lower(
    proxy: str, break_layer: int, bias: float | None
) -> None:
    x, y = images()
    healthy = mlp()
    dead = zeroed(healthy, break_layer, bias)
    assert score(dead, x, y, [proxy])[proxy] < score(healthy, x, y, [proxy])[proxy]


def test_naswot_scores_collapsed_activation_patterns_lower() -> None:
    x, y = images()
    healthy = mlp()
    # Every first-layer unit far below zero: all examples share one on/off pattern.
    collapsed = zeroed(healthy, 1, bias=-10.0)
    assert score(collapsed, x, y, ["naswot"])["naswot"] < score(healthy, x, y, ["naswot"])["naswot"]


def test_fisher_counts_each_channel_once_per_weight_as_the_reference_code() -> None:
    # Abdelfattah et al.'s code broadcasts a channel's Fisher value to that channel's weights
    # and sums them: a 3x3 conv channel over 2 inputs counts 18 times, a linear unit over 3
    # inputs 3 times. Recomputed here by hand, without hooks.
    torch.manual_seed(0)
    conv, linear = nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.Linear(3, 4)
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)
    x = torch.rand(6, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 0, 1])

    a_conv = conv(x)
    a_conv.retain_grad()
    a_linear = linear(a_conv.relu().mean(dim=(2, 3)))
    a_linear.retain_grad()
    nn.functional.cross_entropy(a_linear, y).backward()
    per_channel_conv = (a_conv * a_conv.grad).detach().sum(dim=(2, 3))  # examples x channels
    per_unit_linear = (a_linear * a_linear.grad).detach()
    expected = 18 * float(0.5 * per_channel_conv.square().mean(0).sum()) + 3 * float(
        0.5 * per_unit_linear.square().mean(0).sum()
    )
    assert score(model, x, y, ["fisher"])["fisher"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("proxy", ["params", "flops"])
def test_bigger_networks_have_more_params_and_flops(proxy: str) -> None:
    x, y = images()
    assert score(mlp(width=32), x, y, [proxy])[proxy] > score(mlp(width=8), x, y, [proxy])[proxy]


def test_params_and_flops_count_what_they_say() -> None:
    x, y = images()
    scores = score(mlp(width=16), x, y, ["params", "flops"])
    assert scores["params"] == 64 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3
    assert scores["flops"] == 2 * (64 * 16 + 16 * 16 + 16 * 3)  # per example


# -- argument errors -------------------------------------------------------------------------


def test_scores_are_fp32_on_the_named_device_whatever_the_caller_autocasts() -> None:
    x, y = images()
    plain = score(convnet(), x, y, ALL, seed=0)
    # A bf16 model, bf16 inputs and an autocast the caller left on: scored in fp32 all the same.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scored = score(convnet().bfloat16(), x.bfloat16(), y, ALL, seed=0, device="cpu")
    assert scored == pytest.approx(plain, rel=1e-2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device = 'cuda' is not available on this machine"):
            score(convnet(), x, y, ("params",), device="cuda")


@pytest.mark.parametrize(
    "proxies, message",
    [
        (["synflw"], "proxy 'synflw' is unknown; allowed: ['synflow'"),
        (["ensemble"], "ensemble_ranks"),
        ([], "no proxy given"),
    ],
)
def test_bad_proxy_names_are_refused(proxies: list[str], message: str) -> None:
    x, y = images()
    with pytest.raises(ProxyError) as err:
        score(mlp(), x, y, proxies)
    assert message in str(err.value)


def test_naswot_needs_two_examples_and_activation_modules() -> None:
    x, y = images(count=1)
    with pytest.raises(ProxyError, match="at least 2 examples"):
        score(mlp(), x, y, ["naswot"])
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x, y = images()
    with pytest.raises(ProxyError, match="has none"):
        score(linear, x, y, ["naswot"])


# -- ensemble ------------------------------------------------------------------------------


def test_ensemble_is_the_mean_normalised_rank() -> None:
    scores = [
        {"a": 1.0, "b": 30.0},
        {"a": 2.0, "b": 10.0},
        {"a": 3.0, "b": 20.0},
    ]
    # a ranks 1, 2, 3; b ranks 3, 1, 2 -> mean ranks 2, 1.5, 2.5 -> normalised by (n - 1).
    assert ensemble_ranks(scores, ["a", "b"]) == pytest.approx([0.5, 0.25, 0.75])
    assert ensemble_ranks(scores, ["a"]) == pytest.approx([0.0, 0.5, 1.0])
    assert ensemble_ranks([{"a": 5.0}], ["a"]) == [1.0]
    assert ensemble_ranks([], ["a"]) == []


def test_ensemble_ranks_ties_together_and_nan_last() -> None:
    scores = [{"a": math.nan}, {"a": 1.0}, {"a": 1.0}, {"a": 2.0}]
    assert ensemble_ranks(scores, ["a"]) == pytest.approx([0.0, 0.5, 0.5, 1.0])


def test_ensemble_errors_name_the_problem() -> None:
    with pytest.raises(ProxyError, match="candidate 1 has no 'b' score"):
        ensemble_ranks([{"a": 1.0, "b": 1.0}, {"a": 2.0}], ["a", "b"])
    with pytest.raises(ProxyError, match="non-empty list"):
        ensemble_ranks([{"a": 1.0}], [])


# -- the vision factory, the estimator and the pre-screen -----------------------------------


def compose(*overrides: str) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return hydra_compose("nb201", overrides=["model.channels=4", *overrides])


def with_cell(ops: tuple[str, ...]) -> list[str]:
    return [f"model.cell.{k}={op}" for k, op in zip(nb201.EDGE_KEYS, ops, strict=True)]


class _Captured(Exception):
    pass


def test_vision_factory_builds_the_model_the_trial_trains(monkeypatch) -> None:
    from nas_plugin.tasks import vision
    from nas_plugin.tasks.vision_proxy import proxy_inputs

    cfg = compose("seed=7", "hardware.measure=false", "train.train_fraction=0.5")
    captured: dict[str, torch.Tensor] = {}

    def capture_untrained(model: nn.Module, *args: Any) -> None:
        captured.update(state(model))
        raise _Captured

    monkeypatch.setattr(vision, "train", capture_untrained)
    with pytest.raises(_Captured):
        vision.run_vision_trial(cfg)

    model, inputs, targets = proxy_inputs(cfg, batch_size=16, batches=2, seed=0)
    built = model.state_dict()
    assert list(built) == list(captured)
    assert all(torch.equal(built[k], captured[k]) for k in captured)
    assert [x.shape for x in inputs] == [(16, 1, 8, 8)] * 2  # raw digits, native 8x8
    assert [y.shape for y in targets] == [(16,)] * 2
    again = proxy_inputs(cfg, batch_size=16, batches=2, seed=0)[1]
    assert all(torch.equal(a, b) for a, b in zip(inputs, again, strict=True))
    assert not torch.equal(proxy_inputs(cfg, 16, 2, seed=1)[1][0], inputs[0])


def test_zero_cost_config_builds_the_estimator_it_documents() -> None:
    config = OmegaConf.to_container(OmegaConf.load(ESTIMATOR_YAML))
    estimator = make_estimator(config)
    assert ESTIMATORS["zero_cost"] is ZeroCost and isinstance(estimator, ZeroCost)
    assert estimator.describe() == {
        "name": "zero_cost",
        "proxies": "synflow,naswot",
        "batch_size": 64,
        "batches": 1,
        "seed": 0,
        "factory": "nas_plugin.tasks.proxy_factory:proxy_inputs",
    }
    assert estimator.overrides() == {} and estimator.config_keys() == []


def test_zero_cost_trial_scores_the_untrained_model_without_training() -> None:
    estimator = make_estimator(
        {"name": "zero_cost", "proxies": ["synflow", "naswot", "snip"], "batch_size": 16}
    )

    def train(cfg: Any) -> None:
        raise AssertionError("the zero_cost estimator must not train")

    metrics = estimator.run_job(compose(), train)
    assert set(metrics) == {"synflow", "naswot", "snip", "params", "proxy_seconds"}
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["params"] > 0 and metrics["proxy_seconds"] > 0
    assert estimator.run_job(compose(), train)["synflow"] == metrics["synflow"]


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"proxies": ["synflow", "synflw"]},
            "proxies=['synflow', 'synflw']: proxy 'synflw' is unknown; allowed: ['synflow'",
        ),
        ({"proxies": "synflow"}, "proxies='synflow' must be a list of proxy names; allowed"),
        ({"proxies": []}, "proxies=[]: no proxy given; allowed"),
        ({"proxies": ["ensemble"]}, "'ensemble' ranks a set of candidates"),
        ({"batch_size": 0}, "hydra.sweeper.estimator.batch_size=0 must be a positive integer"),
        ({"batch_size": "64"}, "batch_size='64' must be a positive integer"),
        ({"batches": -1}, "hydra.sweeper.estimator.batches=-1 must be a positive integer"),
        ({"seed": 1.5}, "hydra.sweeper.estimator.seed=1.5 must be an integer"),
        ({"factory": "nas_plugin.tasks.vision_proxy"}, "must be 'module:function'"),
        ({"factory": "no_such_module_xyz:f"}, "cannot import module 'no_such_module_xyz'"),
        ({"factory": "nas_plugin.tasks.vision_proxy:nope"}, "has no function 'nope'"),
        ({"epochs": 1}, "unknown option(s) ['epochs']; allowed: ['proxies', 'batch_size'"),
    ],
)
def test_bad_zero_cost_config_names_key_value_and_allowed(options: dict, message: str) -> None:
    with pytest.raises(EstimatorError) as err:
        make_estimator({"name": "zero_cost", **options})
    assert message in str(err.value)


def test_prescreen_ranks_composed_configs() -> None:
    configs = [
        compose(*with_cell(("none",) * 6)),
        compose(*with_cell(("nor_conv_3x3",) * 6)),
        compose(*with_cell(("nor_conv_1x1",) * 6)),
    ]
    by_params = rank_candidates(configs, proxy="params", batch_size=16)
    assert by_params[0] < by_params[2] < by_params[1]
    by_synflow = rank_candidates(configs, proxy="synflow", batch_size=16)
    assert by_synflow == rank_candidates(configs, proxy="synflow", batch_size=16)
    assert by_synflow[0] < min(by_synflow[1:])  # no path through the cells at all
    ensemble = rank_candidates(configs, proxy="ensemble", batch_size=16, ensemble=["params"])
    assert ensemble == pytest.approx([0.0, 1.0, 0.5])
    with pytest.raises(ProxyError, match="unknown"):
        rank_candidates(configs, proxy="synflw")


# -- end to end ------------------------------------------------------------------------------


@pytest.mark.e2e
def test_zero_cost_sweep_logs_the_proxies_of_every_trial(tmp_path: Path) -> None:
    result = run_app_in_process(
        tmp_path,
        PIPELINE,
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/estimator=zero_cost",
        "hydra.sweeper.objective.metric=synflow",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.mlflow.experiment=nas-nb201-zero-cost",
    )
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("nas-nb201-zero-cost")
    assert parent.data.params["estimator.name"] == "zero_cost"
    assert parent.data.params["estimator.proxies"] == "synflow,naswot"
    assert len(children) == 4
    best = max(children, key=lambda c: c.data.metrics["synflow"])
    assert parent.data.tags["nas.best_run_id"] == best.info.run_id
    client = result.client()
    for child in children:
        metrics = child.data.metrics
        assert child.data.tags["nas.status"] == "ok"
        assert child.data.tags["nas.estimator"] == "zero_cost"
        assert metrics["synflow"] > 0 and math.isfinite(metrics["naswot"])
        assert metrics["params"] > 0 and metrics["proxy_seconds"] > 0
        assert "val_accuracy" not in metrics  # nothing was trained
    # The logged score is reproducible in this process from the trial's config.
    from nas_plugin.tasks.vision_proxy import proxy_inputs

    config = client.download_artifacts(best.info.run_id, "trial/config.yaml", str(tmp_path))
    model, inputs, targets = proxy_inputs(OmegaConf.load(config), 64, 1, 0)
    assert score(model, inputs, targets, ["synflow"])["synflow"] == pytest.approx(
        best.data.metrics["synflow"], rel=1e-9
    )


@pytest.mark.e2e
def test_correlation_report_logs_its_table_and_scatter_plot(tmp_path: Path, capsys) -> None:
    from nas_plugin.proxies.report import correlation_report, main_correlate

    experiment = "nas-nb201-tiny"
    result = run_app_in_process(
        tmp_path,
        PIPELINE,
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/estimator=full",
        "hydra.sweeper.objective.metric=val_accuracy",
        "hydra.sweeper.n_trials=5",
        f"hydra.sweeper.mlflow.experiment={experiment}",
        "hydra.sweeper.leaderboard_columns=[]",
        "model.channels=4",
        "train.epochs=1",
        "train.bn_recalibration_images=256",
        "hardware.measure=false",
    )
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs(experiment)
    assert len(children) == 5

    proxies = ("synflow", "naswot", "params", "ensemble")
    table = correlation_report(result.tracking_uri, experiment, proxies=proxies, batch_size=32)
    assert [row["proxy"] for row in table] == list(proxies)
    for row in table:
        assert row["trials"] == 5 and row["seconds_per_arch"] > 0
        assert -1.0 <= row["spearman"] <= 1.0 and -1.0 <= row["kendall"] <= 1.0
    printed = capsys.readouterr().out
    assert "Zero-cost proxies vs val_accuracy: 5 trials" in printed and "synflow" in printed

    client = result.client()
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "zero_cost")} == {
        "zero_cost/correlation.csv",
        "zero_cost/scores.csv",
        "zero_cost/scatter.png",
    }

    def artifact(path: str) -> Path:
        return Path(client.download_artifacts(parent.info.run_id, path, str(tmp_path)))

    rows = list(csv.DictReader(io.StringIO(artifact("zero_cost/correlation.csv").read_text())))
    assert [r["proxy"] for r in rows] == list(proxies)
    assert float(rows[0]["spearman"]) == pytest.approx(table[0]["spearman"])
    scores = list(csv.DictReader(io.StringIO(artifact("zero_cost/scores.csv").read_text())))
    assert sorted(r["run_id"] for r in scores) == sorted(c.info.run_id for c in children)
    for row, child in zip(scores, children, strict=True):
        assert float(row["val_accuracy"]) == pytest.approx(child.data.metrics["val_accuracy"])
    assert artifact("zero_cost/scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The command-line entry point: the same report, and a clear error for a missing experiment.
    uri = ["--tracking-uri", result.tracking_uri]
    assert main_correlate([*uri, "--experiment", experiment, "--proxies", "params"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main_correlate([*uri, "--experiment", "nope"])
    assert exit_info.value.code == 2
    assert "experiment 'nope' does not exist" in capsys.readouterr().err
