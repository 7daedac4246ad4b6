"""Log a trained text classifier and its tokenizer to MLflow, ready for raw text in ``pyfunc``.

The model is logged with MLflow's ``transformers`` flavor as a ``text-classification`` pipeline:
the weights (safetensors) and the tokenizer files are saved inside the model artifact, so loading
needs neither the network nor this package. Through ``mlflow.pyfunc`` it takes a list (or a
``pandas.Series``) of raw strings and returns a ``pandas.DataFrame`` with one row per text: the
predicted class name in ``label`` and its probability in ``score``::

    model = mlflow.pyfunc.load_model("models:/nas-text-text_classification@champion")
    model.predict(["the food was not good but the staff was friendly"])
    #       label     score
    # 0  positive  0.98...
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Sequence

import mlflow
import mlflow.transformers
from huggingface_hub import ModelCard
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from nas_plugin.tracking.model_logging import MODEL_URI_TAG

TASK = "text-classification"
# Raw strings in; one (label, score) row per text out.
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string")]),
    outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]),
)
_REQUIREMENTS = ("transformers", "tokenizers", "torch")


def log_text_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    input_example: Sequence[str],
    name: str = "model",
) -> str:
    """Log ``model`` with ``tokenizer`` to the active MLflow run and return its model URI.

    - ``max_length``: texts are truncated to this many tokens at prediction time, as in training
      (longer ones would overflow the position embeddings);
    - ``input_example``: a few raw training or validation texts, stored with the model;
    - the label names are the model config's ``id2label``;
    - pip requirements are pinned to the installed ``transformers``, ``tokenizers`` and ``torch``
      without resolving anything over the network;
    - the run is tagged ``nas.model_uri`` = the returned URI, which is how the NAS sweeper finds
      each trial's model to register the best one.

    The loaded pipeline runs the model in eval mode (``from_pretrained`` sets it).

    Raises:
        RuntimeError: no MLflow run is active.
        ValueError: ``input_example`` is empty or holds something other than strings.
    """
    if mlflow.active_run() is None:
        raise RuntimeError(
            "log_text_model needs an active MLflow run: call it inside a trial launched by the "
            "NAS sweeper, or inside `with mlflow.start_run():`"
        )
    examples = list(input_example)
    if not examples or not all(isinstance(text, str) for text in examples):
        raise ValueError(f"input_example must be a non-empty list of strings, not {examples!r}")
    # Saved in the tokenizer's files: whoever reuses them sees the model's length limit.
    tokenizer.model_max_length = max_length
    with _quiet_flavor_warnings():
        info = mlflow.transformers.log_model(
            {"model": model, "tokenizer": tokenizer},
            name=name,
            task=TASK,
            signature=SIGNATURE,
            input_example=examples,
            # Passed to every pipeline call, i.e. to the tokenizer: truncate as in training.
            # (MLflow also logs it as the run params `truncation` and `max_length`.)
            model_config={"truncation": True, "max_length": max_length},
            model_card=_model_card(model, max_length),
            pip_requirements=_pinned_requirements(),
        )
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def _model_card(model: PreTrainedModel, max_length: int) -> ModelCard:
    """A local card: without one, MLflow tries to fetch the card of the model's repo online."""
    config = model.config
    labels = ", ".join(str(config.id2label[i]) for i in sorted(config.id2label))
    return ModelCard(
        "---\nlibrary_name: transformers\npipeline_tag: text-classification\n"
        "tags: [nas_plugin]\n---\n"
        f"# {config.model_type} text classifier found by nas_plugin\n\n"
        f"Trained from scratch. Labels: {labels}. Texts are truncated to {max_length} tokens.\n"
    )


def _pinned_requirements() -> list[str]:
    # Drop local version labels such as "+cu130": pip cannot install them from an index.
    return [f"{dist}=={importlib.metadata.version(dist).split('+')[0]}" for dist in _REQUIREMENTS]


class _quiet_flavor_warnings:
    """Silence what is noise for a model trained from scratch, once per trial.

    The flavor warns that a model without a hub repository has no license file, and
    ``transformers`` draws progress bars for writing and re-loading a few hundred KB of weights.
    """

    def __init__(self) -> None:
        self._logger = logging.getLogger("mlflow.transformers")
        self._level = self._logger.level
        self._bars = hf_logging.is_progress_bar_enabled()

    def __enter__(self) -> None:
        self._logger.setLevel(logging.ERROR)
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)
        if self._bars:
            hf_logging.enable_progress_bar()
