"""Text data: the embedded reviews set, local CSV/JSONL files, splits and clear input errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from nas_plugin.tasks.text_data import TextData, generate_reviews, load_text_data

CONF = Path(__file__).resolve().parent.parent / "conf"


def task_cfg(tmp_path: Path, **overrides: object) -> dict:
    """The shipped task config with ``overrides`` (dotted keys) and the caches under tmp_path."""
    cfg = OmegaConf.load(CONF / "task" / "text_classification.yaml")
    cfg.cache_dir = str(tmp_path / "hf-datasets")
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return OmegaConf.to_container(cfg)


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def reviews(n: int, seed: int = 0) -> list[tuple[str, str]]:
    return list(zip(*generate_reviews(n, seed), strict=True))


def all_texts(data: TextData) -> list[str]:
    return [*data.train.texts, *data.val.texts, *data.test.texts]


# -- the embedded set --------------------------------------------------------------------------


def test_embedded_reviews_are_deterministic_and_balanced() -> None:
    texts, labels = generate_reviews(400, seed=3)
    assert (texts, labels) == generate_reviews(400, seed=3)
    assert texts != generate_reviews(400, seed=4)[0]
    counts = Counter(labels)
    assert set(counts) == {"negative", "positive"}
    assert min(counts.values()) > 150


def test_embedded_labels_need_word_order_not_keywords() -> None:
    texts, labels = generate_reviews(20000, seed=0)
    # The same bag of words with different labels, e.g. "the view was never great but the room
    # was friendly" (positive) and "the view was great but the room was never friendly".
    by_bag: dict[tuple[str, ...], set[str]] = {}
    for text, label in zip(texts, labels, strict=True):
        by_bag.setdefault(tuple(sorted(text.split())), set()).add(label)
    assert sum(len(labels) == 2 for labels in by_bag.values()) >= 20
    # A bag-of-words classifier stays far from what a transformer reaches (about 0.9).
    features = CountVectorizer().fit_transform(texts)
    model = LogisticRegression(max_iter=2000).fit(features[:2000], labels[:2000])
    assert model.score(features[2000:], labels[2000:]) < 0.7


def test_embedded_task_splits_once_for_all_trials(tmp_path: Path) -> None:
    cfg = task_cfg(tmp_path, **{"embedded.size": 400})
    data = load_text_data(cfg)
    assert data.class_names == ["negative", "positive"]
    assert (len(data.train), len(data.val), len(data.test)) == (280, 60, 60)
    assert len(set(all_texts(data))) > 0.8 * 400  # short reviews repeat, but rarely
    again = load_text_data(cfg, seed=5)  # the trial's seed does not move the splits
    assert again.val.texts == data.val.texts and again.test.texts == data.test.texts
    # Stratified: both classes in every split.
    for split in (data.train, data.val, data.test):
        assert set(split.labels.tolist()) == {0, 1}


def test_train_fraction_subsamples_only_the_training_split(tmp_path: Path) -> None:
    cfg = task_cfg(tmp_path, **{"embedded.size": 400})
    full, half = load_text_data(cfg), load_text_data(cfg, train_fraction=0.5, seed=1)
    assert len(half.train) == 140 and set(half.train.texts) <= set(full.train.texts)
    assert half.val.texts == full.val.texts
    with pytest.raises(ValueError, match="train.train_fraction = 0 is not allowed"):
        load_text_data(cfg, train_fraction=0)


# -- files -------------------------------------------------------------------------------------


def test_csv_with_custom_columns_is_split_by_a_fixed_seed(tmp_path: Path) -> None:
    rows = [f'"{text}",{label},{i}' for i, (text, label) in enumerate(reviews(200))]
    path = write_csv(tmp_path / "reviews.csv", "review,sentiment,id", rows)
    cfg = task_cfg(
        tmp_path,
        source="files",
        text_column="review",
        label_column="sentiment",
        **{"data_files.train": str(path)},
    )
    data = load_text_data(cfg)
    assert data.class_names == ["negative", "positive"]
    assert (len(data.train), len(data.val), len(data.test)) == (140, 30, 30)
    assert sorted(all_texts(data)) == sorted(text for text, _ in reviews(200))
    assert load_text_data(cfg).test.texts == data.test.texts
    cfg["split_seed"] = 1
    assert load_text_data(cfg).test.texts != data.test.texts


def test_jsonl_splits_from_files_and_integer_labels(tmp_path: Path) -> None:
    def records(n: int, seed: int) -> list[dict]:
        return [
            {"body": text, "y": int(label == "positive"), "extra": [1, 2]}
            for text, label in reviews(n, seed)
        ]

    files = {
        split: str(write_jsonl(tmp_path / f"{split}.jsonl", records(n, seed)))
        for split, n, seed in (("train", 60, 0), ("validation", 20, 1), ("test", 25, 2))
    }
    cfg = task_cfg(tmp_path, source="files", text_column="body", label_column="y")
    cfg["data_files"] = files
    data = load_text_data(cfg)
    assert data.class_names == ["0", "1"]  # integer ids become their names
    assert (len(data.train), len(data.val), len(data.test)) == (60, 20, 25)
    assert data.test.texts == [r["body"] for r in records(25, 2)]
    assert data.test.labels.tolist() == [r["y"] for r in records(25, 2)]
    assert data.train.labels.dtype == np.int64


def test_a_validation_file_alone_leaves_test_to_be_carved(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "t.csv", "text,label", [f'"{t}",{lab}' for t, lab in reviews(100)])
    val = write_csv(tmp_path / "v.csv", "text,label", [f'"{t}",{lab}' for t, lab in reviews(30, 1)])
    cfg = task_cfg(tmp_path, source="files", test_fraction=0.2)
    cfg["data_files"] = {"train": str(train), "validation": str(val)}
    data = load_text_data(cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (80, 30, 20)


@pytest.mark.parametrize(
    "header, rows, message",
    [
        (
            "body,label",
            ["great food,positive", "bad food,negative"],
            "task.text_column = 'text' "
            "is not a column of task.data_files.train = .*: its columns are body, label",
        ),
        (
            "text,stars",
            ["great food,5", "bad food,1"],
            "task.label_column = 'label' is not a column of .*: its columns are text, stars",
        ),
        (
            "text,label",
            ["12,positive", "7,negative"],
            "column 'text' \\(task.text_column\\) must hold text, but row 0 holds int 12",
        ),
        (
            "text,label",
            ["great food,positive", ",negative"],
            "must hold text, but row 1 holds NoneType None",
        ),
        (
            "text,label",
            ["great food,0.5", "bad food,1.5"],
            "column 'label' \\(task.label_column\\)"
            " must hold class names or integer ids, but row 0 holds float 0.5",
        ),
        ("text,label", ["great food,positive", "bad food,positive"], "1 distinct label"),
    ],
)
def test_bad_csv_contents_give_clear_errors(
    tmp_path: Path, header: str, rows: list[str], message: str
) -> None:
    path = write_csv(tmp_path / "data.csv", header, rows)
    cfg = task_cfg(tmp_path, source="files", **{"data_files.train": str(path)})
    with pytest.raises(ValueError, match=message):
        load_text_data(cfg)


def test_non_text_values_in_jsonl_give_clear_errors(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "data.jsonl",
        [{"text": "great food", "label": "positive"}, {"text": ["a", "list"], "label": "negative"}],
    )
    cfg = task_cfg(tmp_path, source="files", **{"data_files.train": str(path)})
    with pytest.raises(ValueError, match="task.data_files.train = .*data.jsonl"):
        load_text_data(cfg)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty: expected a header and rows"),
        ("\n  \n", "is empty"),
        ("text,label\n", "no rows"),
    ],
)
def test_an_empty_file_gives_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(content)
    cfg = task_cfg(tmp_path, source="files", **{"data_files.train": str(path)})
    with pytest.raises(ValueError, match=message):
        load_text_data(cfg)


def test_file_and_source_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task.source = 'web' is not allowed"):
        load_text_data(task_cfg(tmp_path, source="web"))
    with pytest.raises(ValueError, match="needs task.data_files.train"):
        load_text_data(task_cfg(tmp_path, source="files"))
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="task.data_files.train = .*nope.csv' is not a"):
        load_text_data(task_cfg(tmp_path, source="files", **{"data_files.train": missing}))
    parquet = tmp_path / "data.parquet"
    parquet.write_text("x")
    with pytest.raises(ValueError, match="unknown format '.parquet'"):
        load_text_data(task_cfg(tmp_path, source="files", **{"data_files.train": str(parquet)}))
    with pytest.raises(ValueError, match="task.source=hub needs task.hub.path="):
        load_text_data(task_cfg(tmp_path, source="hub"))


def test_labels_unseen_in_training_are_rejected(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "t.csv", "text,label", ["good,pos", "bad,neg", "fine,pos"])
    test = write_csv(tmp_path / "s.csv", "text,label", ["meh,neutral", "ok,pos"])
    cfg = task_cfg(tmp_path, source="files", val_fraction=0.3)
    cfg["data_files"] = {"train": str(train), "test": str(test)}
    with pytest.raises(ValueError, match=r"the test split has label\(s\) \['neutral'\]"):
        load_text_data(cfg)


def test_a_dataset_folder_by_name_keeps_its_splits_and_class_names(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "y": datasets.ClassLabel(names=["neg", "pos"])}
    )
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    for split, n, seed in (("train", 60, 0), ("test", 20, 1)):
        rows = {
            "sentence": [text for text, _ in reviews(n, seed)],
            "y": [int(label == "positive") for _, label in reviews(n, seed)],
        }
        datasets.Dataset.from_dict(rows, features=features).to_parquet(folder / f"{split}.parquet")
    cfg = task_cfg(
        tmp_path, source="hub", text_column="sentence", label_column="y", val_fraction=0.25
    )
    cfg["hub"]["path"] = str(folder)
    data = load_text_data(cfg)
    assert data.class_names == ["neg", "pos"]  # the ClassLabel's names, not 0 and 1
    assert (len(data.train), len(data.val), len(data.test)) == (45, 15, 20)
    assert data.test.texts == [text for text, _ in reviews(20, 1)]
