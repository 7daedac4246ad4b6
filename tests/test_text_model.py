"""Transformer builder and space validator, the tokenizer cache, and logging the text model."""

from __future__ import annotations

import random
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

import nas_plugin.tasks.tokenizer as tokenizer_module
from nas_plugin.models import build_model
from nas_plugin.models.transformer import (
    build_transformer,
    resolve_architecture,
    validate_transformer_space,
)
from nas_plugin.space import SearchSpace
from nas_plugin.tasks.text_data import generate_reviews
from nas_plugin.tasks.tokenizer import cache_key, load_tokenizer
from nas_plugin.tracking.model_logging import MODEL_URI_TAG
from nas_plugin.tracking.text_model import log_text_model

CONF = Path(__file__).resolve().parent.parent / "conf"
SPACE_FILE = CONF / "plugin" / "hydra" / "sweeper" / "search_space" / "transformer.yaml"
TEXTS, LABELS = generate_reviews(300, seed=0)


def model_cfg(**overrides: object) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "transformer.yaml"))
    return {**cfg, "num_layers": 1, "hidden_size": 32, "head_dim": 16, **overrides}


def tok_cfg(tmp_path: Path, **overrides: object) -> dict:
    return {"kind": "wordpiece", "vocab_size": 400, "cache_dir": str(tmp_path / "tok"), **overrides}


# -- building ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_type, position",
    [
        ("bert", "absolute"),
        ("distilbert", "absolute"),
        ("distilbert", "sinusoidal"),
        ("deberta-v2", "absolute"),
        ("deberta-v2", "relative"),
        ("deberta-v2", "absolute+relative"),
    ],
)
def test_every_family_builds_and_classifies(model_type: str, position: str) -> None:
    cfg = model_cfg(model_type=model_type, position_embedding_type=position, ffn_ratio=3)
    model = build_transformer(cfg, 3, vocab_size=50, labels=["a", "b", "c"])
    assert model.config.model_type == model_type
    assert model.config.num_attention_heads == 2  # derived: 32 / 16
    assert model.config.num_hidden_layers == 1
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    ids = torch.randint(0, 50, (2, 32))  # a full model.max_length
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert logits.shape == (2, 3)


def test_family_specific_settings_reach_the_config() -> None:
    distil = build_transformer(model_cfg(model_type="distilbert", activation="relu"), 2, 50)
    assert (distil.config.dim, distil.config.hidden_dim, distil.config.activation) == (
        32,
        64,
        "relu",
    )
    relative = build_transformer(
        model_cfg(model_type="deberta-v2", position_embedding_type="relative"), 2, 50
    )
    assert relative.config.relative_attention and not relative.config.position_biased_input
    fixed = build_model(
        model_cfg(num_heads=4, head_dim=None, intermediate_size=40, ffn_ratio=None), 2, 50
    )
    assert (fixed.config.num_attention_heads, fixed.config.intermediate_size) == (4, 40)
    assert fixed.config.max_position_embeddings == 32 and fixed.config.vocab_size == 50


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model_type": "gpt2"}, "model.model_type = 'gpt2' is not allowed"),
        ({"head_dim": 12}, "model.head_dim = 12 does not divide model.hidden_size = 32"),
        ({"head_dim": None, "num_heads": 3}, "model.num_heads = 3 does not divide"),
        ({"num_heads": 2}, "set exactly one"),
        ({"ffn_ratio": None}, "model.ffn_ratio = None and model.intermediate_size = None"),
        ({"activation": "swishy"}, "'swishy' is not a transformers activation"),
        ({"dropout": 1.0}, "model.dropout = 1.0 is not allowed"),
        ({"max_length": 2}, "model.max_length = 2 is not allowed"),
        (
            {"position_embedding_type": "relative"},
            "'relative' makes no sense for model.model_type = 'bert': bert has absolute; it "
            "exists for deberta-v2",
        ),
    ],
)
def test_invalid_architectures_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_architecture(model_cfg(**overrides))


# -- the named space's validator ---------------------------------------------------------------


def named_space(**params: object) -> SearchSpace:
    spec = yaml.safe_load(SPACE_FILE.read_text())["params"]
    return SearchSpace.from_dict({**spec, **params})


def job_cfg(**model: object) -> OmegaConf:
    base = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "transformer.yaml"))
    return OmegaConf.create({"model": {**base, **model}})


def test_the_shipped_space_validates_and_every_candidate_builds() -> None:
    space = named_space()
    validate_transformer_space(space, job_cfg())
    # Heads are derived, so any candidate resolves: sample a few and build them for real.
    rng = random.Random(0)
    for _ in range(5):
        candidate = space.decode(space.sample(rng))
        cfg = {**job_cfg().model, **{k.removeprefix("model."): v for k, v in candidate.items()}}
        build_transformer(cfg, 2, vocab_size=40)


@pytest.mark.parametrize(
    "params, model, message",
    [
        (
            {"model.position_embedding_type": ["absolute", "sinusoidal"]},
            {},
            "model.model_type=bert, model.position_embedding_type=sinusoidal is not a valid "
            "model: .*makes no sense for model.model_type = 'bert'",
        ),
        (
            {
                "model.position_embedding_type": {
                    "choices": ["absolute", "sinusoidal"],
                    "when": {"model.model_type": ["distilbert", "deberta-v2"]},
                }
            },
            {},
            "model.model_type=deberta-v2, model.position_embedding_type=sinusoidal",
        ),
        ({"model.head_dim": [16, 24]}, {}, "hidden_size=32, model.head_dim=24"),
        ({"model.num_heads": [2, 4]}, {}, "searches both model.head_dim and model.num_heads"),
        ({"model.activation": ["gelu", "swishy"]}, {}, "model.activation=swishy"),
        ({}, {"num_heads": 2}, "set exactly one"),  # the app's config contradicts head_dim
    ],
)
def test_nonsensical_spaces_are_refused(params: dict, model: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_transformer_space(named_space(**params), job_cfg(**model))


def test_conditional_position_types_per_family_pass() -> None:
    space = named_space(
        **{
            "model.model_type": ["bert", "distilbert"],
            "model.position_embedding_type": {
                "choices": ["absolute", "sinusoidal"],
                "when": {"model.model_type": "distilbert"},
            },
        }
    )
    validate_transformer_space(space, job_cfg())


# -- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_is_trained_once_cached_and_reloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_tokenizer(tok_cfg(tmp_path), TEXTS)
    assert first.source == "trained"
    assert (first.path / "tokenizer.json").is_file() and first.path.parent == tmp_path / "tok"

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached tokenizer was trained again")

    monkeypatch.setattr(tokenizer_module, "train_tokenizer", no_training)
    second = load_tokenizer(tok_cfg(tmp_path), TEXTS)
    assert second.source == "cached" and second.key == first.key
    text = "the food was not good but the staff was friendly"
    encoded = second.tokenizer(text)
    assert encoded["input_ids"] == first.tokenizer(text)["input_ids"]
    assert set(encoded) == {"input_ids", "attention_mask"}  # no token_type_ids for DistilBERT
    tokens = second.tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "not" in tokens


def test_tokenizer_cache_key_covers_data_and_settings(tmp_path: Path) -> None:
    settings = {"kind": "wordpiece", "vocab_size": 400, "min_frequency": 1, "lowercase": True}
    key = cache_key(TEXTS, settings)
    assert key == cache_key(list(TEXTS), dict(settings))
    assert key != cache_key(TEXTS[:-1], settings)
    assert cache_key(["ab"], settings) != cache_key(["a", "b"], settings)
    assert key != cache_key(TEXTS, {**settings, "vocab_size": 500})
    bpe = load_tokenizer(tok_cfg(tmp_path, kind="bpe"), TEXTS)
    assert bpe.source == "trained" and bpe.key.startswith("bpe-")
    assert bpe.tokenizer.unk_token_id not in bpe.tokenizer("naïve émoji ☕")["input_ids"]


def test_pretrained_tokenizer_from_a_local_path_or_a_fallback(tmp_path: Path) -> None:
    trained = load_tokenizer(tok_cfg(tmp_path), TEXTS)
    local = load_tokenizer(tok_cfg(tmp_path, pretrained=str(trained.path)), TEXTS)
    assert local.source == "pretrained" and len(local.tokenizer) == len(trained.tokenizer)
    # Not a path and not in the local cache: nothing is downloaded, one is trained instead.
    missing = load_tokenizer(tok_cfg(tmp_path, pretrained="no-such-org/no-such-tokenizer"), TEXTS)
    assert missing.source == "cached" and missing.key == trained.key


def test_bad_tokenizer_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task.tokenizer.kind = 'unigram' is not allowed"):
        load_tokenizer(tok_cfg(tmp_path, kind="unigram"), TEXTS)
    with pytest.raises(ValueError, match="task.tokenizer.vocab_size = 10 is not allowed"):
        load_tokenizer(tok_cfg(tmp_path, vocab_size=10), TEXTS)


# -- logging the model -------------------------------------------------------------------------


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.chdir(tmp_path)  # the default artifact root is ./mlruns
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(previous)


def test_logged_model_takes_raw_text_and_returns_label_names(
    tracking: MlflowClient, tmp_path: Path
) -> None:
    tokenizer = load_tokenizer(tok_cfg(tmp_path), TEXTS).tokenizer
    model = build_transformer(
        model_cfg(max_length=16), 2, len(tokenizer), labels=["negative", "positive"]
    )
    with pytest.raises(RuntimeError, match="needs an active MLflow run"):
        log_text_model(model, tokenizer, 16, TEXTS[:2])
    with mlflow.start_run() as run:
        with pytest.raises(ValueError, match="non-empty list of strings"):
            log_text_model(model, tokenizer, 16, [])
        uri = log_text_model(model, tokenizer, 16, TEXTS[:2])
    assert tracking.get_run(run.info.run_id).data.tags[MODEL_URI_TAG] == uri

    loaded = mlflow.pyfunc.load_model(uri)
    assert loaded.metadata.signature.inputs.input_types()[0].name == "string"
    long_text = " and ".join(TEXTS[:10])  # far over 16 tokens: truncated as in training
    for texts in (["some text", long_text], pd.Series(["some text", long_text])):
        predicted = loaded.predict(texts)
        assert list(predicted.columns) == ["label", "score"]
        assert set(predicted["label"]) <= {"negative", "positive"}
        assert predicted["score"].between(0.5, 1.0).all()
