"""Transformer encoders for text classification, built from ``transformers`` configs (no hub).

``kind: transformer`` describes one encoder in family-neutral terms; the builder maps them onto
the family's own config names and builds it with ``AutoConfig.for_model`` and
``AutoModelForSequenceClassification.from_config`` (random weights, nothing downloaded):

- ``model_type``: ``bert``, ``distilbert`` or ``deberta-v2``;
- ``num_layers``, ``hidden_size``;
- attention heads, which must divide the hidden size: either ``head_dim`` (then
  ``num_heads = hidden_size / head_dim`` is derived, so a search over hidden sizes and head
  sizes never builds an invalid model) or ``num_heads`` itself; exactly one of them is set;
- the FFN: ``ffn_ratio`` (``intermediate_size = ffn_ratio * hidden_size``) or
  ``intermediate_size``; exactly one of them is set;
- ``activation`` (a ``transformers`` activation name), ``dropout`` and ``attention_dropout``
  (null: the same as ``dropout``);
- ``position_embedding_type``: ``absolute`` (learned; every family), ``sinusoidal``
  (DistilBERT's fixed embeddings), ``relative`` or ``absolute+relative`` (DeBERTa-v2's
  disentangled relative attention, without / with absolute embeddings);
- ``max_length``: tokens per text; the position embeddings have exactly this many positions.

``validate_transformer_space`` is the named search space's validator: it checks, before any trial
runs, that every combination the space can produce resolves to a valid model, e.g. that no head
count fails to divide a hidden size and no position embedding type is searched for a family that
does not have it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel
from transformers.activations import ACT2FN

from nas_plugin.space import Param, SearchSpace
from nas_plugin.space.params import values_of

# Position embedding types each family has (the first is the family's default).
POSITION_TYPES: dict[str, tuple[str, ...]] = {
    "bert": ("absolute",),
    "distilbert": ("absolute", "sinusoidal"),
    "deberta-v2": ("absolute", "relative", "absolute+relative"),
}
MODEL_TYPES = tuple(POSITION_TYPES)
# [CLS], [SEP] and at least one token of text.
MIN_LENGTH = 3


@dataclass(frozen=True)
class Architecture:
    """A model config resolved to concrete, checked numbers (derived values filled in)."""

    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    activation: str
    dropout: float
    attention_dropout: float
    position_embedding_type: str
    max_length: int

    def as_params(self) -> dict[str, Any]:
        """Flat ``arch.*`` values for MLflow, derived ones included."""
        return {f"arch.{key}": value for key, value in asdict(self).items()}


def resolve_architecture(model_cfg: Mapping[str, Any]) -> Architecture:
    """Check ``model_cfg`` and derive heads and FFN size; raise ``ValueError`` naming the key."""
    model_type = model_cfg.get("model_type")
    if model_type not in POSITION_TYPES:
        raise ValueError(
            f"model.model_type = {model_type!r} is not allowed: expected one of "
            f"{', '.join(MODEL_TYPES)}"
        )
    num_layers = _int(model_cfg, "num_layers", 1)
    hidden_size = _int(model_cfg, "hidden_size", 2)
    head_dim, num_heads = model_cfg.get("head_dim"), model_cfg.get("num_heads")
    if (head_dim is None) == (num_heads is None):
        raise ValueError(
            f"model.head_dim = {head_dim!r} and model.num_heads = {num_heads!r}: set exactly one "
            "(head_dim derives num_heads = hidden_size / head_dim); set the other to null"
        )
    if head_dim is not None:
        head_dim = _int(model_cfg, "head_dim", 1)
        if hidden_size % head_dim:
            raise ValueError(
                f"model.head_dim = {head_dim} does not divide model.hidden_size = {hidden_size}: "
                "pick hidden sizes that are multiples of every head size"
            )
        num_heads = hidden_size // head_dim
    else:
        num_heads = _int(model_cfg, "num_heads", 1)
        if hidden_size % num_heads:
            raise ValueError(
                f"model.num_heads = {num_heads} does not divide model.hidden_size = "
                f"{hidden_size}: search model.head_dim instead (num_heads is then derived and "
                "always divides), or pick head counts that divide every hidden size"
            )

    ratio, intermediate = model_cfg.get("ffn_ratio"), model_cfg.get("intermediate_size")
    if (ratio is None) == (intermediate is None):
        raise ValueError(
            f"model.ffn_ratio = {ratio!r} and model.intermediate_size = {intermediate!r}: set "
            "exactly one (ffn_ratio gives intermediate_size = ffn_ratio * hidden_size)"
        )
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or ratio <= 0:
            raise ValueError(f"model.ffn_ratio = {ratio!r} is not allowed: expected a number > 0")
        intermediate = max(1, round(ratio * hidden_size))
    else:
        intermediate = _int(model_cfg, "intermediate_size", 1)

    activation = model_cfg.get("activation", "gelu")
    if activation not in ACT2FN:
        raise ValueError(
            f"model.activation = {activation!r} is not a transformers activation: expected one "
            f"of {', '.join(sorted(ACT2FN))}"
        )
    dropout = _probability(model_cfg, "dropout", model_cfg.get("dropout", 0.1))
    attention = model_cfg.get("attention_dropout")
    attention_dropout = (
        dropout if attention is None else _probability(model_cfg, "attention_dropout", attention)
    )
    position = model_cfg.get("position_embedding_type", "absolute")
    allowed = POSITION_TYPES[model_type]
    if position not in allowed:
        families = [t for t, types in POSITION_TYPES.items() if position in types]
        where = f"; it exists for {', '.join(families)}" if families else ""
        raise ValueError(
            f"model.position_embedding_type = {position!r} makes no sense for model.model_type = "
            f"{model_type!r}: {model_type} has {', '.join(allowed)}{where}"
        )
    return Architecture(
        model_type=model_type,
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_heads=num_heads,
        intermediate_size=intermediate,
        activation=activation,
        dropout=dropout,
        attention_dropout=attention_dropout,
        position_embedding_type=position,
        max_length=_int(model_cfg, "max_length", MIN_LENGTH),
    )


def transformer_config(
    model_cfg: Mapping[str, Any],
    num_classes: int,
    vocab_size: int,
    pad_token_id: int = 0,
    labels: Sequence[str] | None = None,
) -> Any:
    """The ``transformers`` config of ``model_cfg`` (a ``PretrainedConfig`` subclass)."""
    arch = resolve_architecture(model_cfg)
    if num_classes < 2:
        raise ValueError(f"num_classes = {num_classes}: a classifier needs at least 2 classes")
    names = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} label names for {num_classes} classes")
    common = {
        "vocab_size": vocab_size,
        "pad_token_id": pad_token_id,
        "max_position_embeddings": arch.max_length,
        # The pipeline of the logged model turns predicted ids into these names.
        "id2label": dict(enumerate(names)),
        "label2id": {name: i for i, name in enumerate(names)},
    }
    return AutoConfig.for_model(arch.model_type, **common, **_FAMILY_KWARGS[arch.model_type](arch))


def build_transformer(
    model_cfg: Mapping[str, Any],
    num_classes: int,
    vocab_size: int,
    *,
    pad_token_id: int = 0,
    labels: Sequence[str] | None = None,
) -> PreTrainedModel:
    """A randomly initialised ``AutoModelForSequenceClassification`` for ``model_cfg``.

    Registered as ``kind: transformer`` in ``nas_plugin.models.BUILDERS``; through
    ``build_model(model_cfg, num_classes, vocab_size)`` the third argument is the tokenizer's
    vocabulary size. The model returns ``SequenceClassifierOutput`` (use ``.logits``).
    """
    config = transformer_config(model_cfg, num_classes, vocab_size, pad_token_id, labels)
    return AutoModelForSequenceClassification.from_config(config)


def _bert(arch: Architecture) -> dict[str, Any]:
    return {
        "hidden_size": arch.hidden_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_heads,
        "intermediate_size": arch.intermediate_size,
        "hidden_act": arch.activation,
        "hidden_dropout_prob": arch.dropout,
        "attention_probs_dropout_prob": arch.attention_dropout,
        "classifier_dropout": arch.dropout,
        "type_vocab_size": 1,  # single texts: one segment
    }


def _distilbert(arch: Architecture) -> dict[str, Any]:
    return {
        "dim": arch.hidden_size,
        "n_layers": arch.num_layers,
        "n_heads": arch.num_heads,
        "hidden_dim": arch.intermediate_size,
        "activation": arch.activation,
        "dropout": arch.dropout,
        "attention_dropout": arch.attention_dropout,
        "seq_classif_dropout": arch.dropout,
        "sinusoidal_pos_embds": arch.position_embedding_type == "sinusoidal",
    }


def _deberta_v2(arch: Architecture) -> dict[str, Any]:
    relative = "relative" in arch.position_embedding_type
    return {
        "hidden_size": arch.hidden_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_heads,
        "intermediate_size": arch.intermediate_size,
        "hidden_act": arch.activation,
        "hidden_dropout_prob": arch.dropout,
        "attention_probs_dropout_prob": arch.attention_dropout,
        "pooler_dropout": arch.dropout,
        "pooler_hidden_size": arch.hidden_size,
        "type_vocab_size": 0,
        "relative_attention": relative,
        "position_biased_input": arch.position_embedding_type != "relative",
        # DeBERTa's disentangled attention: content-to-position and position-to-content.
        "pos_att_type": ["p2c", "c2p"] if relative else None,
        "max_relative_positions": arch.max_length if relative else -1,
    }


_FAMILY_KWARGS: dict[str, Callable[[Architecture], dict[str, Any]]] = {
    "bert": _bert,
    "distilbert": _distilbert,
    "deberta-v2": _deberta_v2,
}


# -- the named search space's validator --------------------------------------------------------

# Keys whose values are only valid together; every other model key is checked on its own.
_COUPLED = (
    frozenset({"model.model_type", "model.position_embedding_type"}),
    frozenset({"model.hidden_size", "model.head_dim", "model.num_heads"}),
    frozenset({"model.ffn_ratio", "model.intermediate_size"}),
)
# Above this many combinations of one coupled group the check would take too long to be worth it.
_MAX_COMBINATIONS = 100_000


def validate_transformer_space(space: SearchSpace, job_cfg: DictConfig) -> None:
    """Raise ``ValueError`` if some candidate of ``space`` would not build a valid model.

    Called by the sweeper before any trial (``validate:`` of ``search_space=transformer``).
    Each coupled group of keys (model type with position embedding type; hidden size with head
    size or head count; FFN ratio with FFN size) is checked over every combination the space can
    produce, conditions included; every other searched ``model.*`` key value by value. Each
    combination is completed into a whole candidate (the first value of every other active
    parameter) and checked as a trial would build it: over the app's ``model`` config.
    """
    base = OmegaConf.to_container(job_cfg.model, resolve=True)
    if not isinstance(base, dict):
        raise ValueError("the app's config has no 'model' mapping for search_space=transformer")
    searched = [name for name in space.names if name.startswith("model.")]
    for pair in (
        ("model.head_dim", "model.num_heads"),
        ("model.ffn_ratio", "model.intermediate_size"),
    ):
        if set(pair) <= set(searched):
            raise ValueError(
                f"the space searches both {pair[0]} and {pair[1]}, but a model takes exactly one "
                "of them (the other is derived): search only one, e.g. with "
                "hydra/sweeper/search_space=custom and your own hydra.sweeper.params"
            )
    groups = [group & set(searched) for group in _COUPLED]
    groups += [{name} for name in searched if not any(name in g for g in _COUPLED)]
    for group in [g for g in groups if g] or [set()]:
        for values in _combinations(space, group):
            try:
                resolve_architecture({**base, **_nested(_complete(space, values))})
            except ValueError as err:
                chosen = ", ".join(f"{k}={v}" for k, v in values.items()) or "the app's config"
                raise ValueError(f"the candidate {chosen} is not a valid model: {err}") from err


def _combinations(space: SearchSpace, keys: set[str]) -> Iterator[dict[str, Any]]:
    """Every assignment of ``keys`` (and the parameters they depend on) the space allows."""
    if not keys:
        yield {}
        return
    params = _with_ancestors(space, keys)
    # Float intervals contribute their two ends: the checks here are monotone in them.
    if math.prod(len(values_of(p, 2)) for p in params) > _MAX_COMBINATIONS:
        # Too many to enumerate: each value with the others' first values (a conditional value
        # whose parent's first value does not activate it is then not checked).
        for param in params:
            for value in values_of(param, 2):
                yield {param.name: value}
        return
    sub = SearchSpace(params)
    for encoding in sub.grid(float_points=2):
        yield sub.decode(encoding)


def _complete(space: SearchSpace, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The whole candidate: ``wanted`` values, the first value of every other active parameter."""
    decided: dict[str, Any] = {}
    for param in space.params:
        if space.is_active(param, decided):
            decided[param.name] = wanted.get(param.name, values_of(param, 1)[0])
    return decided


def _with_ancestors(space: SearchSpace, keys: set[str]) -> list[Param]:
    chosen: dict[str, Param] = {}
    pending = [space[k] for k in keys]
    while pending:
        param = pending.pop()
        if param.name in chosen:
            continue
        chosen[param.name] = param
        if param.condition is not None:
            pending.append(space[param.condition.parent])
    return [p for p in space.params if p.name in chosen]  # the space's (dependency) order


def _nested(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"model.hidden_size": 64}`` -> ``{"hidden_size": 64}`` (keys under ``model.`` only)."""
    return {k.removeprefix("model."): v for k, v in values.items() if k.startswith("model.")}


def _int(cfg: Mapping[str, Any], key: str, low: int) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"model.{key} = {value!r} is not allowed: expected an integer >= {low}")
    return value


def _probability(cfg: Mapping[str, Any], key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"model.{key} = {value!r} is not allowed: expected 0 <= p < 1")
    return float(value)
