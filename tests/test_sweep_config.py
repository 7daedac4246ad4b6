"""From the sweeper's config and command line to a validated plan (no trial runs here)."""

import pytest

from nas_plugin.space import Categorical, FloatRange, IntRange
from nas_plugin.sweep.plan import SweepConfigError, build_plan, format_value

BASE = {
    "n_trials": 4,
    "batch_size": 1,
    "seed": 0,
    "max_failures": 3,
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "strategy": {"name": "random"},
    "search_space": {"name": "custom", "params": {}},
    "estimator": {"name": "full"},
    "params": {"model.depth": {"low": 1, "high": 3}},
}


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.act=choice(relu,gelu)", Categorical("model.act", ("relu", "gelu"))),
        ("model.act=relu,gelu", Categorical("model.act", ("relu", "gelu"))),
        # Hydra's range() excludes its stop: range(1,5) is 1..4.
        ("model.width=range(1,5)", IntRange("model.width", 1, 4, 1)),
        ("model.width=range(8,33,8)", IntRange("model.width", 8, 32, 8)),
        ("train.lr=interval(0.1,1.0)", FloatRange("train.lr", 0.1, 1.0, False)),
        ("train.lr=tag(log,interval(1e-4,1e-1))", FloatRange("train.lr", 1e-4, 1e-1, True)),
    ],
)
def test_hydra_sweep_syntax_on_the_command_line_becomes_a_parameter(override, expected):
    plan = build_plan(BASE, [override])
    assert plan.space[expected.name] == expected


def test_plain_overrides_are_fixed_for_every_trial_and_estimator_overrides_follow():
    config = {**BASE, "estimator": {"name": "low_fidelity", "epochs": 1, "data_fraction": 0.5}}
    plan = build_plan(config, ["train.batch_size=32", "model=mbconv"])
    assert plan.fixed_overrides == ["train.batch_size=32", "model=mbconv"]
    assert plan.trial_overrides({"model.depth": 2}) == [
        "train.batch_size=32",
        "model=mbconv",
        "train.epochs=1",
        "train.train_fraction=0.5",
        "model.depth=2",
    ]


def test_params_merge_named_space_then_sweeper_params_then_command_line():
    config = {
        **BASE,
        "search_space": {"name": "x", "params": {"a": [1, 2], "b": [1, 2]}},
        "params": {"b": [3, 4], "c": [5, 6]},
    }
    plan = build_plan(config, ["c=choice(7,8)"])
    assert plan.space["a"].values() == (1, 2)
    assert plan.space["b"].values() == (3, 4)
    assert plan.space["c"].values() == (7, 8)


def test_hydra_syntax_is_accepted_inside_params_too():
    plan = build_plan({**BASE, "params": {"train.lr": "tag(log, interval(0.001, 0.1))"}}, [])
    assert plan.space["train.lr"] == FloatRange("train.lr", 0.001, 0.1, True)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_trials": 0}, "hydra.sweeper.n_trials=0 must be >= 1"),
        ({"batch_size": "two"}, "hydra.sweeper.batch_size='two' must be an integer"),
        ({"max_failures": -2}, "hydra.sweeper.max_failures=-2 must be >= -1"),
        ({"objective": {"metric": "acc", "direction": "best"}}, "direction='best'; allowed"),
        ({"params": {"train.lr": "0.1"}}, "'train.lr': '0.1' is a single value, not a search"),
        ({"estimator": {"name": "oracle"}}, "estimator.name='oracle' is unknown; allowed"),
        (
            {"estimator": {"name": "low_fidelity", "data_fraction": 1.5}},
            "data_fraction=1.5 must be in (0, 1]",
        ),
        ({"estimator": {"name": "low_fidelity", "epochs": 0}}, "epochs=0 must be a positive"),
        (
            {"estimator": {"name": "low_fidelity", "epochs": None}},
            "epochs, data_fraction and resolution are all null",
        ),
        ({"estimator": {"name": "full", "epochs": 3}}, "estimator 'full': unknown option(s)"),
        (
            {"strategy": {"name": "evolution", "population_size": "big"}},
            "population_size='big' must be a positive integer",
        ),
        ({"params": {}}, "the search space is empty"),
    ],
)
def test_invalid_sweeper_config_is_one_clear_message(change, message):
    with pytest.raises(SweepConfigError) as err:
        build_plan({**BASE, **change}, [])
    assert message in str(err.value)


def test_empty_hydra_range_is_rejected():
    with pytest.raises(SweepConfigError, match=r"range\(5,5,1\) is empty"):
        build_plan(BASE, ["model.width=range(5,5)"])


@pytest.mark.parametrize(
    "value, text",
    [
        (3, "3"),
        (0.25, "0.25"),
        (True, "true"),
        (None, "null"),
        ("relu", "relu"),
        ("hard_swish", "hard_swish"),
        ("true", "'true'"),
        ("a b", "'a b'"),
        ("it's", "'it\\'s'"),
        ([1, 2], "[1,2]"),
        ("3", "'3'"),
    ],
)
def test_values_are_written_in_hydra_override_grammar(value, text):
    assert format_value(value) == text


def test_formatted_values_parse_back_to_the_same_value():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for value in [3, 0.001, True, None, "relu", "true", "a b", "it's", [1, 2], "3", 1e-5]:
        parsed = parser.parse_overrides([f"k={format_value(value)}"])[0].value()
        assert parsed == value
