"""Text classification data: the embedded reviews set, local CSV/JSONL files, or a hub dataset.

Every source ends up as three splits of ``(text, label id)`` with the same class names. Splits
the source does not have are carved out of its training split, stratified where every class
allows it and seeded by ``task.split_seed`` only, so all trials of a sweep see the same texts.

The embedded default (``task.source=embedded``) is a generated set of short restaurant/hotel
reviews whose label follows from how the clauses are composed, not from any single word:

- a clause is ``the <aspect> <verb> [not|never] [very|really|quite] <adjective>``; a negation
  flips the adjective's polarity;
- ``A but B`` and ``although A , B`` take B's polarity; ``A although B`` takes A's (the main
  clause), so swapping the clauses of a review flips its label with the same bag of words;
- ``A and B`` joins two clauses of the same polarity; a review may open with a filler word.

Labels are ``negative`` / ``positive``. A bag-of-words classifier cannot tell ``good but bad``
from ``bad but good``, and a one-layer encoder barely learns negation (an XOR of two words):
depth and width visibly change the accuracy.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

log = logging.getLogger(__name__)

SOURCES = ("embedded", "files", "hub")
SPLITS = ("train", "validation", "test")
# Extensions the local loaders of `datasets` read, and the builder for each.
FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}
# Names hub datasets use for their validation split.
VALIDATION_ALIASES = ("validation", "valid", "dev", "val")
EMBEDDED_LABELS = ("negative", "positive")
# Enough for stratified train/validation/test splits of both classes.
MIN_EMBEDDED_SIZE = 30


@dataclass
class TextSplit:
    texts: list[str]
    labels: np.ndarray  # int64 class ids into TextData.class_names

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: np.ndarray) -> TextSplit:
        return TextSplit([self.texts[i] for i in indices], self.labels[indices])


@dataclass
class TextData:
    train: TextSplit
    val: TextSplit
    test: TextSplit
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_text_data(
    task_cfg: Mapping[str, Any], train_fraction: float = 1.0, seed: int = 0
) -> TextData:
    """Load ``task.source`` and split it; ``train_fraction`` < 1 subsamples the train split.

    Raises ``ValueError`` (or ``FileNotFoundError`` / ``ConnectionError``) with a message naming
    the config key, the file or column and what was expected, for: an unknown source, a missing
    or empty file, a missing column, texts that are not strings, missing labels, labels in the
    validation/test split that the training split lacks, and splits too small to carve.
    """
    source = task_cfg.get("source")
    if source not in SOURCES:
        raise ValueError(
            f"task.source = {source!r} is not allowed: expected one of {', '.join(SOURCES)}"
        )
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(
            f"train.train_fraction = {train_fraction} is not allowed: expected 0 < fraction <= 1"
        )
    text_column = str(task_cfg.get("text_column", "text"))
    label_column = str(task_cfg.get("label_column", "label"))
    if source == "embedded":
        embedded = task_cfg.get("embedded") or {}
        size = embedded.get("size", 3000)
        if isinstance(size, bool) or not isinstance(size, int) or size < MIN_EMBEDDED_SIZE:
            raise ValueError(
                f"task.embedded.size = {size!r} is not allowed: expected an integer >= "
                f"{MIN_EMBEDDED_SIZE}"
            )
        texts, labels = generate_reviews(size, int(embedded.get("seed", 0)))
        raw: dict[str, tuple[list[Any], list[Any]]] = {"train": (texts, labels)}
    else:
        tables = _load_files(task_cfg) if source == "files" else _load_hub(task_cfg)
        raw = {
            split: _columns(table, text_column, label_column, where)
            for split, (table, where) in tables.items()
        }
    data = _split(task_cfg, raw)
    if train_fraction < 1.0:
        data.train = _subsample(data.train, train_fraction, seed)
    return data


# -- the embedded reviews set ------------------------------------------------------------------

_ASPECTS = ("food", "service", "staff", "room", "price", "view", "coffee", "wine")
_POSITIVE = ("good", "great", "excellent", "lovely", "tasty", "friendly")
_NEGATIVE = ("bad", "awful", "terrible", "poor", "bland", "rude")
_VERBS = ("was", "is")
_INTENSIFIERS = ("very", "really", "quite")
_NEGATORS = ("not", "never")
_OPENERS = ("", "", "", "", "honestly", "overall", "to be fair")
# How the clauses of a review are joined; "and" joins two clauses of the same polarity.
_FORMS = ("single", "and", "but", "although_first", "although_second")


def generate_reviews(size: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``size`` generated reviews and their labels (``negative`` / ``positive``).

    Deterministic for a given ``(size, seed)``; see the module docstring for the grammar.
    """
    if size < 1:
        raise ValueError(f"size = {size}: expected at least 1 review")
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(size):
        text, polarity = _review(rng)
        texts.append(text)
        labels.append(EMBEDDED_LABELS[polarity > 0])
    return texts, labels


def _clause(rng: random.Random, polarity: int | None = None) -> tuple[str, int]:
    """A clause and its polarity (+1 / -1); ``polarity`` forces the clause's polarity."""
    negated = rng.random() < 0.35
    wanted = rng.choice((1, -1)) if polarity is None else polarity
    # The adjective's own polarity; a negation flips it.
    adjective_polarity = -wanted if negated else wanted
    words = ["the", rng.choice(_ASPECTS), rng.choice(_VERBS)]
    if negated:
        words.append(rng.choice(_NEGATORS))
    if rng.random() < 0.3:
        words.append(rng.choice(_INTENSIFIERS))
    words.append(rng.choice(_POSITIVE if adjective_polarity > 0 else _NEGATIVE))
    return " ".join(words), wanted


def _review(rng: random.Random) -> tuple[str, int]:
    form = rng.choice(_FORMS)
    first, p1 = _clause(rng)
    second, p2 = _clause(rng, polarity=p1 if form == "and" else None)
    if form == "single":
        body, polarity = first, p1
    elif form == "and":
        body, polarity = f"{first} and {second}", p1
    elif form == "but":
        body, polarity = f"{first} but {second}", p2
    elif form == "although_first":  # the subordinate clause comes first: the second one counts
        body, polarity = f"although {first} , {second}", p2
    else:  # "A although B": the main clause A counts
        body, polarity = f"{first} although {second}", p1
    opener = rng.choice(_OPENERS)
    return (f"{opener} {body}" if opener else body), polarity


# -- files and hub datasets -------------------------------------------------------------------


def _load_files(task_cfg: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    """``{split: (datasets.Dataset, description)}`` for the data files the config names."""
    import datasets

    files = task_cfg.get("data_files") or {}
    unknown = sorted(set(files) - set(SPLITS))
    if unknown:
        raise ValueError(
            f"task.data_files has unknown split(s) {unknown}: expected {', '.join(SPLITS)}"
        )
    if not files.get("train"):
        raise ValueError(
            "task.source=files needs task.data_files.train=<path to a .csv or .jsonl file> "
            "(validation and test are optional: missing ones are split off the training file)"
        )
    tables = {}
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar per file and split is noise in a trial's log
    try:
        for split in SPLITS:
            if files.get(split):
                tables[split] = _load_file(task_cfg, split, str(files[split]))
    finally:
        if bars:
            datasets.enable_progress_bars()
    return tables


def _load_file(task_cfg: Mapping[str, Any], split: str, value: str) -> tuple[Any, str]:
    """(``datasets.Dataset``, description) of one CSV/TSV/JSON/JSONL file."""
    import datasets

    path = Path(value).expanduser()
    key = f"task.data_files.{split}"
    if not path.is_file():
        raise FileNotFoundError(f"{key} = {str(path)!r} is not a file")
    builder = FILE_FORMATS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(
            f"{key} = {str(path)!r}: unknown format {path.suffix!r}; expected one of "
            f"{', '.join(FILE_FORMATS)}"
        )
    if not path.read_bytes().strip():
        raise ValueError(f"{key} = {str(path)!r} is empty: expected a header and rows")
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    try:
        table = datasets.load_dataset(
            builder,
            data_files={split: str(path)},
            split=split,
            cache_dir=_cache_dir(task_cfg),
            **kwargs,
        )
    except Exception as err:  # pyarrow/pandas parse errors share no base class
        if "corresponds to no data" in str(err):  # a header without rows
            raise ValueError(f"{key} = {str(path)!r} has no rows") from err
        cause = err.__cause__ or err
        raise ValueError(
            f"{key} = {str(path)!r} could not be read as {builder.upper()}: "
            f"{type(cause).__name__}: {_first_line(cause)}"
        ) from err
    if len(table) == 0:
        raise ValueError(f"{key} = {str(path)!r} has no rows")
    return table, f"{key} = {str(path)!r}"


def _load_hub(task_cfg: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    import datasets

    hub = task_cfg.get("hub") or {}
    path, name = hub.get("path"), hub.get("name")
    if not path:
        raise ValueError(
            "task.source=hub needs task.hub.path=<dataset name or local dataset folder>, e.g. imdb"
        )
    try:
        loaded = datasets.load_dataset(str(path), name, cache_dir=_cache_dir(task_cfg))
    except (ConnectionError, OSError) as err:
        raise ConnectionError(
            f"could not load hub dataset task.hub.path = {path!r}: {_first_line(err)}. Without "
            "network access, export it to CSV/JSONL elsewhere and use task.source=files"
        ) from err
    if "train" not in loaded:
        raise ValueError(f"hub dataset {path!r} has no 'train' split (it has {', '.join(loaded)})")
    tables = {"train": (loaded["train"], f"hub dataset {path!r} split 'train'")}
    validation = next((s for s in VALIDATION_ALIASES if s in loaded), None)
    if validation:
        tables["validation"] = (loaded[validation], f"hub dataset {path!r} split {validation!r}")
    if "test" in loaded:
        tables["test"] = (loaded["test"], f"hub dataset {path!r} split 'test'")
    return tables


def _columns(
    table: Any, text_column: str, label_column: str, where: str
) -> tuple[list[Any], list[Any]]:
    """(texts, labels) of a ``datasets.Dataset``, checked for the columns and their types.

    Integer labels of a ``ClassLabel`` column (hub datasets, Parquet files written by
    ``datasets``) become their class names.
    """
    import datasets

    for key, column in (("task.text_column", text_column), ("task.label_column", label_column)):
        if column not in table.column_names:
            raise ValueError(
                f"{key} = {column!r} is not a column of {where}: its columns are "
                f"{', '.join(table.column_names)}"
            )
    texts, labels = table[text_column], list(table[label_column])
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(
                f"{where}: column {text_column!r} (task.text_column) must hold text, but row "
                f"{row} holds {type(text).__name__} {text!r}"
            )
    for row, label in enumerate(labels):
        if label is None or isinstance(label, float | list | dict):
            raise ValueError(
                f"{where}: column {label_column!r} (task.label_column) must hold class names "
                f"or integer ids, but row {row} holds {type(label).__name__} {label!r}"
            )
    feature = table.features.get(label_column)
    if isinstance(feature, datasets.ClassLabel):
        # Unlabelled rows (GLUE's test splits use -1) keep their id and fail as unknown labels.
        labels = [
            feature.int2str(v) if isinstance(v, int) and 0 <= v < feature.num_classes else v
            for v in labels
        ]
    return list(texts), labels


def _cache_dir(task_cfg: Mapping[str, Any]) -> str | None:
    value = task_cfg.get("cache_dir")
    return str(Path(str(value)).expanduser()) if value else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# -- splitting ---------------------------------------------------------------------------------


def _split(task_cfg: Mapping[str, Any], raw: dict[str, tuple[list[Any], list[Any]]]) -> TextData:
    """Class names from the training labels; missing validation/test splits carved from train."""
    train_texts, train_labels = raw["train"]
    # Sorted by value, so integer ids keep their order ("2" before "10").
    classes = sorted(set(train_labels), key=lambda v: (isinstance(v, str), v))
    if len(classes) < 2:
        raise ValueError(
            f"the training split has {len(classes)} distinct label(s) in "
            f"{task_cfg.get('label_column', 'label')!r}: a classifier needs at least 2"
        )
    index = {label: i for i, label in enumerate(classes)}
    names = [str(label) for label in classes]

    def to_split(texts: list[str], labels: list[Any], split: str) -> TextSplit:
        unknown = sorted({str(v) for v in labels if v not in index})
        if unknown:
            raise ValueError(
                f"the {split} split has label(s) {unknown[:5]} that the training split lacks "
                f"(training labels: {names[:10]})"
            )
        return TextSplit(list(texts), np.array([index[v] for v in labels], dtype=np.int64))

    train = to_split(train_texts, train_labels, "train")
    splits = {
        split: to_split(*raw[split], split) for split in ("validation", "test") if split in raw
    }
    split_seed = int(task_cfg.get("split_seed", 0))
    if "test" not in splits:
        fraction = _fraction(task_cfg, "test_fraction")
        if "validation" not in splits:
            # Both come out of train: test_fraction and val_fraction are of the whole set.
            fraction_total = fraction + _fraction(task_cfg, "val_fraction")
            if fraction_total >= 1.0:
                raise ValueError(
                    f"task.val_fraction + task.test_fraction = {fraction_total} leaves no "
                    "training data: expected a sum < 1"
                )
        train, splits["test"] = _carve(train, fraction, split_seed, "test_fraction")
    if "validation" not in splits:
        fraction = _fraction(task_cfg, "val_fraction")
        if "test" in raw:
            share = fraction
        else:  # both carved from train: rescale val_fraction to what the test split left
            share = fraction / (1.0 - _fraction(task_cfg, "test_fraction"))
        train, splits["validation"] = _carve(train, share, split_seed, "val_fraction")
    return TextData(train=train, val=splits["validation"], test=splits["test"], class_names=names)


def _carve(split: TextSplit, fraction: float, seed: int, key: str) -> tuple[TextSplit, TextSplit]:
    """(kept, carved) with ``fraction`` of ``split`` carved off, stratified where possible."""
    n = len(split)
    carved = round(fraction * n)
    if carved < 1 or n - carved < 1:
        raise ValueError(
            f"cannot split {n} training text(s) with task.{key} = {fraction}: both parts need "
            "at least one text; add data, change the fraction, or give the split as a file"
        )
    counts = np.bincount(split.labels)
    classes = int((counts > 0).sum())
    # Stratify only when every class can be in both parts; rare classes would make sklearn fail.
    can_stratify = counts[counts > 0].min() >= 2 and min(carved, n - carved) >= classes
    stratify = split.labels if can_stratify else None
    kept, off = train_test_split(
        np.arange(n), test_size=carved, stratify=stratify, random_state=seed
    )
    return split.subset(np.sort(kept)), split.subset(np.sort(off))


def _subsample(train: TextSplit, fraction: float, seed: int) -> TextSplit:
    keep = max(1, round(fraction * len(train)))
    if keep >= len(train):
        return train
    stratify = train.labels if np.bincount(train.labels).min() >= 2 else None
    try:
        kept, _ = train_test_split(
            np.arange(len(train)), train_size=keep, stratify=stratify, random_state=seed
        )
    except ValueError:  # too few texts kept for every class: sample uniformly instead
        kept, _ = train_test_split(np.arange(len(train)), train_size=keep, random_state=seed)
    return train.subset(np.sort(kept))


def _fraction(task_cfg: Mapping[str, Any], key: str) -> float:
    value = task_cfg.get(key, 0.15)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ValueError(f"task.{key} = {value!r} is not allowed: expected 0 < fraction < 1")
    return float(value)
