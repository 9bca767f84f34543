"""load_dataset and tokenize_dataset on real Rotten Tomatoes snippets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import pytest

from tasks.data import DatasetError, load_dataset, tokenization_key, tokenize_dataset


def test_csv_with_string_labels_is_split_and_fingerprinted(pipeline_home, real_csv):
    ref = load_dataset.fn(str(real_csv), "review", "sentiment", test_size=0.25, seed=3)
    assert ref.labels == ("fresh", "rotten")  # sorted names; ids follow
    assert (ref.num_train, ref.num_test) == (300, 100)
    train = datasets.load_from_disk(str(Path(ref.path) / "train"))
    test = datasets.load_from_disk(str(Path(ref.path) / "test"))
    assert set(train.column_names) == {"text", "label"} and len(train) == 300 and len(test) == 100
    assert set(train["label"]) == {0, 1}
    texts = set(train["text"]) | set(test["text"])
    assert len(texts) == 400  # nothing lost or duplicated by the split
    again = load_dataset.fn(str(real_csv), "review", "sentiment", test_size=0.25, seed=3)
    assert again.fingerprint == ref.fingerprint and again.path == ref.path
    other_seed = load_dataset.fn(str(real_csv), "review", "sentiment", test_size=0.25, seed=4)
    assert other_seed.fingerprint != ref.fingerprint


def test_the_default_asset_gives_the_issue_split(pipeline_home):
    ref = load_dataset.fn("rotten-tomatoes")
    assert ref.labels == ("rotten", "fresh")
    assert (ref.num_train, ref.num_test) == (10201, 2551)  # as benchmarks/bench_train.py splits it


def test_a_missing_column_is_named_with_the_columns_there(pipeline_home, real_csv):
    with pytest.raises(DatasetError, match=r"no column 'text'.*\['review', 'sentiment'\]"):
        load_dataset.fn(str(real_csv), "text", "sentiment")
    with pytest.raises(DatasetError, match="no column 'label'"):
        load_dataset.fn(str(real_csv), "review", "label")


def test_an_empty_dataset_is_refused(pipeline_home, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("text,label\n")
    with pytest.raises(DatasetError, match="no rows"):
        load_dataset.fn(str(path))


def test_integer_labels_must_be_contiguous_from_zero(pipeline_home, tmp_path):
    path = tmp_path / "labels.jsonl"
    rows = [{"text": f"review {i}", "label": label} for i, label in enumerate([0, 1, 5, 1, 0, 5])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match=r"0..K-1; found \[0, 1, 5\]"):
        load_dataset.fn(str(path))


def test_a_single_label_and_a_missing_file_are_refused(pipeline_home, tmp_path):
    path = tmp_path / "one.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["text", "label"], ["good", "pos"], ["fine", "pos"]])
    with pytest.raises(DatasetError, match="single label"):
        load_dataset.fn(str(path))
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset.fn(str(tmp_path / "nope.csv"))


def test_tokenization_is_keyed_on_data_tokenizer_and_max_length(pipeline_home, real_csv, minilm_dir):
    ref = load_dataset.fn(str(real_csv), "review", "sentiment")
    first = tokenize_dataset.fn(ref, str(minilm_dir), 16)
    train = datasets.load_from_disk(str(Path(first) / "train"))
    assert max(len(ids) for ids in train["input_ids"]) == 16  # truncated, not padded
    assert min(len(ids) for ids in train["input_ids"]) < 16
    assert len(train) == ref.num_train and list(train["label"]) == list(
        datasets.load_from_disk(str(Path(ref.path) / "train"))["label"]
    )
    assert tokenize_dataset.fn(ref, str(minilm_dir), 16) == first  # found on disk
    assert tokenization_key(ref, str(minilm_dir), 32) != tokenization_key(ref, str(minilm_dir), 16)
    other = load_dataset.fn(str(real_csv), "review", "sentiment", seed=1)
    assert tokenization_key(other, str(minilm_dir), 16) != tokenization_key(ref, str(minilm_dir), 16)
