"""Search spaces: the YAML forms, validation messages, canonical encodings, conditions."""

import json
import random

import pytest

from nas_plugin.space import (
    Categorical,
    FloatRange,
    IntRange,
    SearchSpace,
    SearchSpaceError,
    parse_param,
)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ([3, 5, 7], Categorical("k", (3, 5, 7))),
        ({"choices": ["relu", "silu"]}, Categorical("k", ("relu", "silu"))),
        ({"choices": [[1, 2], [3]]}, Categorical("k", ((1, 2), (3,)))),
        ({"low": 1, "high": 4}, IntRange("k", 1, 4, 1)),
        ({"low": 8, "high": 32, "step": 8}, IntRange("k", 8, 32, 8)),
        ({"low": 0.0, "high": 1.0}, FloatRange("k", 0.0, 1.0, False)),
        ({"low": 1, "high": 4, "type": "float"}, FloatRange("k", 1.0, 4.0, False)),
        ({"low": 1e-4, "high": 0.1, "log": True}, FloatRange("k", 1e-4, 0.1, True)),
    ],
)
def test_yaml_forms_parse_to_parameters(spec, expected):
    assert parse_param("k", spec) == expected


def test_integer_range_includes_its_upper_bound():
    assert parse_param("k", {"low": 1, "high": 4}).values() == (1, 2, 3, 4)
    assert parse_param("k", {"low": 8, "high": 32, "step": 8}).values() == (8, 16, 24, 32)


@pytest.mark.parametrize(
    "key, spec, message",
    [
        ("model.act", [], "model.act': choices=[]; need a non-empty list"),
        ("model.act", {"choices": []}, "need a non-empty list of choices"),
        ("model.depth", {"low": 5, "high": 2}, "model.depth': low=5 > high=2"),
        ("train.lr", {"low": 0.0, "high": 0.1, "log": True}, "log scale needs low > 0, got low=0"),
        ("train.lr", {"low": -1.0, "high": 0.1, "log": True}, "log scale needs low > 0"),
        ("model.depth", {"low": 1, "high": 3, "step": 0}, "step=0 must be a positive integer"),
        ("model.depth", {"low": 1}, "needs either 'choices' or both 'low' and 'high'"),
        ("model.depth", {"low": "a", "high": 3}, "low='a' is not a number"),
        ("model.depth", {"low": 1, "high": 3, "typo": 1}, "unknown field(s) ['typo']"),
        ("model.act", {"choices": [1, 1]}, "repeat a value"),
        ("model.act", {"choices": [1], "type": "enum"}, "type='enum' is unknown"),
        ("model.act", "relu", "is not a parameter"),
    ],
)
def test_invalid_parameters_name_key_value_and_what_is_allowed(key, spec, message):
    with pytest.raises(SearchSpaceError) as err:
        parse_param(key, spec)
    assert message in str(err.value)
    assert key in str(err.value)


def test_condition_on_a_missing_parameter_is_rejected():
    with pytest.raises(SearchSpaceError, match="condition names 'model.family', which is not"):
        SearchSpace.from_dict(
            {"model.resnet.depth": {"low": 1, "high": 3, "when": {"model.family": "resnet"}}}
        )


def test_condition_value_the_parent_can_never_take_is_rejected():
    with pytest.raises(SearchSpaceError, match="condition value 'vit' can never occur"):
        SearchSpace.from_dict(
            {
                "model.family": ["resnet", "mbv3"],
                "model.depth": {"low": 1, "high": 3, "when": {"model.family": "vit"}},
            }
        )


def test_condition_cycle_is_rejected():
    with pytest.raises(SearchSpaceError, match="cycle"):
        SearchSpace.from_dict(
            {"a": {"choices": [1, 2], "when": {"b": 1}}, "b": {"choices": [1, 2], "when": {"a": 1}}}
        )


def test_empty_space_is_rejected():
    with pytest.raises(SearchSpaceError, match="the search space is empty"):
        SearchSpace.from_dict({})


@pytest.fixture
def conditional_space():
    return SearchSpace.from_dict(
        {
            # Declared child-first on purpose: the space orders parents before children.
            "model.resnet.depth": {"low": 1, "high": 3, "when": {"model.family": "resnet"}},
            "model.family": ["resnet", "mobilenetv3"],
            "model.mobilenetv3.size": {
                "choices": ["small", "large"],
                "when": {"model.family": "mobilenetv3"},
            },
            "train.lr": {"low": 1e-4, "high": 1e-1, "log": True},
        }
    )


def test_conditional_parameters_exist_only_when_their_parent_matches(conditional_space):
    rng = random.Random(0)
    for _ in range(50):
        decoded = conditional_space.decode(conditional_space.sample(rng))
        family = decoded["model.family"]
        assert ("model.resnet.depth" in decoded) == (family == "resnet")
        assert ("model.mobilenetv3.size" in decoded) == (family == "mobilenetv3")
        assert 1e-4 <= decoded["train.lr"] <= 1e-1


def test_space_size_counts_conditional_branches():
    space = SearchSpace.from_dict(
        {
            "family": ["a", "b"],
            "depth": {"low": 1, "high": 3, "when": {"family": "a"}},
            "size": {"choices": ["s", "m", "l", "xl"], "when": {"family": "b"}},
            "act": ["relu", "gelu"],
        }
    )
    assert space.size() == (3 + 4) * 2
    assert len(set(space.grid())) == 14


def test_encodings_are_canonical_hashable_and_json_round_trip(conditional_space):
    encoding = conditional_space.encode(
        {
            "train.lr": 0.01,
            "model.family": "resnet",
            "model.resnet.depth": 2,
            "model.mobilenetv3.size": "small",
        }  # inactive: dropped
    )
    assert encoding == (("model.family", "resnet"), ("model.resnet.depth", 2), ("train.lr", 0.01))
    assert hash(encoding) == hash(conditional_space.encode(dict(encoding)))
    text = conditional_space.to_json(encoding)
    assert json.loads(text)[0] == ["model.family", "resnet"]
    assert conditional_space.from_json(text) == encoding
    assert conditional_space.encode(conditional_space.decode(encoding)) == encoding


def test_list_choices_stay_hashable_and_decode_to_lists():
    space = SearchSpace.from_dict({"model.layers": [[1, 1], [2, 2]]})
    encoding = space.sample(random.Random(1))
    assert isinstance(hash(encoding), int)
    assert space.decode(encoding)["model.layers"] in ([1, 1], [2, 2])


def test_encode_rejects_values_outside_the_space(conditional_space):
    with pytest.raises(SearchSpaceError, match="outside the space"):
        conditional_space.encode({"model.family": "vit", "train.lr": 0.01})


def test_mutation_changes_exactly_one_decision_of_an_unconditional_space():
    space = SearchSpace.from_dict({f"s{i}.kernel": [3, 5, 7] for i in range(6)})
    rng = random.Random(0)
    parent = space.sample(rng)
    for _ in range(30):
        child = space.mutate(parent, rng)
        changed = [k for (k, a), (_, b) in zip(parent, child, strict=True) if a != b]
        assert len(changed) == 1


def test_mutation_of_a_parent_decision_resolves_its_children(conditional_space):
    rng = random.Random(3)
    for _ in range(50):
        child = conditional_space.mutate(conditional_space.sample(rng), rng)
        assert conditional_space.encode(dict(child)) == child


def test_neighbours_differ_in_one_decision():
    space = SearchSpace.from_dict({"a": [1, 2, 3], "b": ["x", "y"]})
    start = space.encode({"a": 1, "b": "x"})
    assert sorted(space.neighbours(start)) == sorted(
        [
            space.encode({"a": 2, "b": "x"}),
            space.encode({"a": 3, "b": "x"}),
            space.encode({"a": 1, "b": "y"}),
        ]
    )


def test_float_grid_hits_the_bounds_exactly():
    param = parse_param("lr", {"low": 1e-4, "high": 1e-1, "log": True})
    points = param.grid(4)
    assert points[0] == 1e-4 and points[-1] == 1e-1
    assert points[1] == pytest.approx(1e-3)
