"""The trial's tokenizer: a pretrained one where it can be had, else one trained on the data.

``task.tokenizer.pretrained`` names a tokenizer directory or a model name that is already in the
local Hugging Face cache; nothing is downloaded unless ``allow_download`` is true. Without one
(or when it cannot be loaded), a WordPiece or byte-level BPE tokenizer is trained on the training
texts with the ``tokenizers`` library and cached on disk under a key that hashes the texts and
the settings, so the trials of a sweep (and later sweeps on the same data) train it once.

Every tokenizer returned here has a padding token and returns only ``input_ids`` and
``attention_mask``: DistilBERT's forward takes no ``token_type_ids``, and the logged model's
pipeline passes on whatever the tokenizer returns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

KINDS = ("wordpiece", "bpe")
DEFAULT_CACHE_DIR = Path("~/.cache/nas_plugin/tokenizers")
MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]
SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


@dataclass
class LoadedTokenizer:
    tokenizer: PreTrainedTokenizerBase
    # "pretrained", "trained" (just now) or "cached" (trained by an earlier run, loaded from disk)
    source: str
    # The pretrained name/path, or the cache key of a trained tokenizer.
    key: str
    # The directory it was loaded from or saved to (None for a pretrained tokenizer by name).
    path: Path | None = None


def load_tokenizer(tokenizer_cfg: Mapping[str, Any], train_texts: Sequence[str]) -> LoadedTokenizer:
    """The pretrained tokenizer ``tokenizer_cfg.pretrained`` names, else a trained one.

    Settings (``task.tokenizer``): ``pretrained`` (null, a directory, or a model name in the local
    cache), ``allow_download`` (false: never reach the hub), ``kind`` (``wordpiece`` | ``bpe``),
    ``vocab_size``, ``min_frequency``, ``lowercase`` and ``cache_dir`` (null:
    ``~/.cache/nas_plugin/tokenizers``) for the trained one.
    """
    pretrained = tokenizer_cfg.get("pretrained")
    if pretrained:
        loaded = _load_pretrained(str(pretrained), bool(tokenizer_cfg.get("allow_download", False)))
        if loaded is not None:
            return LoadedTokenizer(_prepared(loaded), "pretrained", str(pretrained))
    settings = _train_settings(tokenizer_cfg)
    key = cache_key(train_texts, settings)
    cache_dir = Path(str(tokenizer_cfg.get("cache_dir") or DEFAULT_CACHE_DIR)).expanduser()
    path = cache_dir / key
    if (path / "tokenizer.json").is_file():
        return LoadedTokenizer(_prepared(_from_dir(path)), "cached", key, path)
    tokenizer = train_tokenizer(train_texts, **settings)
    _save_atomically(tokenizer, path)
    log.info(
        "Trained a %s tokenizer (%d tokens), cached in %s", settings["kind"], len(tokenizer), path
    )
    return LoadedTokenizer(tokenizer, "trained", key, path)


def train_tokenizer(
    texts: Sequence[str],
    kind: str = "wordpiece",
    vocab_size: int = 2000,
    min_frequency: int = 1,
    lowercase: bool = True,
) -> PreTrainedTokenizerFast:
    """Train a ``kind`` tokenizer on ``texts``; it adds ``[CLS] ... [SEP]`` around each text."""
    specials = list(SPECIAL_TOKENS.values())
    if kind == "wordpiece":
        backend = tokenizers.Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"]))
        backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece()
        trainer: Any = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials
        )
    elif kind == "bpe":
        # Byte-level: every string is representable, so no text ever maps to [UNK].
        backend = tokenizers.Tokenizer(models.BPE())
        steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
        backend.normalizer = normalizers.Sequence(steps)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    else:
        raise ValueError(
            f"task.tokenizer.kind = {kind!r} is not allowed: expected one of {', '.join(KINDS)}"
        )
    backend.train_from_iterator(texts, trainer=trainer, length=len(texts))
    cls_id = backend.token_to_id(SPECIAL_TOKENS["cls_token"])
    sep_id = backend.token_to_id(SPECIAL_TOKENS["sep_token"])
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)
    return _prepared(tokenizer)


def cache_key(texts: Sequence[str], settings: Mapping[str, Any]) -> str:
    """A hash of the training texts, the settings and the ``tokenizers`` version."""
    digest = hashlib.sha256()
    header = {**settings, "tokenizers": tokenizers.__version__}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for text in texts:
        digest.update(b"\x00")  # separates texts: ["ab"] and ["a", "b"] hash differently
        digest.update(text.encode("utf-8"))
    return f"{settings['kind']}-{digest.hexdigest()[:20]}"


def _train_settings(tokenizer_cfg: Mapping[str, Any]) -> dict[str, Any]:
    kind = tokenizer_cfg.get("kind", "wordpiece")
    if kind not in KINDS:
        raise ValueError(
            f"task.tokenizer.kind = {kind!r} is not allowed: expected one of {', '.join(KINDS)}"
        )
    settings = {
        "kind": kind,
        "vocab_size": tokenizer_cfg.get("vocab_size", 2000),
        "min_frequency": tokenizer_cfg.get("min_frequency", 1),
        "lowercase": tokenizer_cfg.get("lowercase", True),
    }
    for name, low in (("vocab_size", 300), ("min_frequency", 1)):
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            # A byte-level BPE needs its 256 byte symbols plus the special tokens.
            raise ValueError(
                f"task.tokenizer.{name} = {value!r} is not allowed: expected an integer >= {low}"
            )
    if not isinstance(settings["lowercase"], bool):
        raise ValueError(
            f"task.tokenizer.lowercase = {settings['lowercase']!r} is not allowed: expected "
            "true or false"
        )
    return settings


def _load_pretrained(name: str, allow_download: bool) -> PreTrainedTokenizerBase | None:
    """The tokenizer at a local path or in the local cache (or downloaded, if allowed)."""
    local = Path(name).expanduser()
    try:
        if local.is_dir():
            return _from_dir(local)
        return AutoTokenizer.from_pretrained(name, local_files_only=not allow_download)
    except (OSError, ValueError) as err:  # not cached / not a tokenizer directory / offline
        where = "the hub" if allow_download else "a local path or the local cache"
        log.warning(
            "Pretrained tokenizer %r is not available from %s (%s); training one on the "
            "training split instead",
            name,
            where,
            str(err).splitlines()[0] if str(err) else type(err).__name__,
        )
        return None


def _from_dir(path: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def _prepared(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give ``tokenizer`` a padding token and only the inputs every encoder family takes."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:  # GPT-2-style tokenizers have no padding token
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": SPECIAL_TOKENS["pad_token"]})
    tokenizer.model_input_names = list(MODEL_INPUT_NAMES)
    return tokenizer


def _save_atomically(tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """Save to a temporary sibling and rename it: parallel trials never see half a tokenizer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        tokenizer.save_pretrained(str(staging))
        try:
            os.replace(staging, path)
        except OSError:  # another process cached the same tokenizer first: keep theirs
            if not (path / "tokenizer.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
