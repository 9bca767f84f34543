"""load_dataset and tokenize_dataset on real Rotten Tomatoes snippets."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import datasets
import pytest

from modelcore.errors import ConfigError
from tasks.data import (
    DatasetError,
    DatasetRef,
    check_max_length,
    load_dataset,
    tokenization_key,
    tokenize_dataset,
)


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


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_dropped_rows_are_counted_per_reason_and_labels_per_split_and_logged(
    pipeline_home, tmp_path, rotten_tomatoes, caplog
):
    names = ("rotten", "fresh")
    good = [{"text": r["text"], "label": names[r["label"]]} for r in rotten_tomatoes[:40]]
    bad = [
        {"label": "fresh"},  # missing text
        {"text": None, "label": "fresh"},  # missing text
        {"text": 12, "label": "rotten"},  # text not a string
        {"text": "", "label": "fresh"},  # empty text
        {"text": "  \t", "label": "fresh"},  # empty text (whitespace)
        {"text": "\n", "label": "rotten"},  # empty text
        {"text": "a film", "label": None},  # missing label
        {"text": "a film"},  # missing label
        {"text": "a film", "label": ""},  # missing label
        {"text": "a film", "label": "   "},  # missing label
    ]
    path = _write_jsonl(tmp_path / "reviews.jsonl", good[:20] + bad + good[20:])
    caplog.set_level(logging.INFO, logger="tasks.data")
    ref = load_dataset.fn(str(path), test_size=0.25)
    assert ref.rows_read == 50
    assert ref.dropped == (("missing text", 2), ("text not a string", 1), ("empty text", 3), ("missing label", 4))
    assert (ref.num_train, ref.num_test) == (30, 10)
    for split, counts in (("train", ref.train_label_counts), ("test", ref.test_label_counts)):
        on_disk = datasets.load_from_disk(str(Path(ref.path) / split))["label"]
        assert counts == tuple(on_disk.count(i) for i in range(len(ref.labels)))
    fresh = sum(1 for row in good if row["label"] == "fresh")
    assert ref.train_label_counts[0] + ref.test_label_counts[0] == fresh  # labels sorted: fresh is id 0
    messages = [r.getMessage() for r in caplog.records if r.name == "tasks.data"]
    assert any("dropped 10 of 50 rows" in m and "'missing label': 4" in m for m in messages), messages
    assert any(f"{path}: 50 rows read, 40 used (30 train / 10 test)" in m for m in messages), messages
    counts = f"fresh {ref.train_label_counts[0]} / {ref.test_label_counts[0]}, rotten {ref.train_label_counts[1]} / "
    assert any(counts in m for m in messages), messages


def test_the_ref_round_trips_through_json_as_prefect_persists_it(pipeline_home, real_csv):
    ref = load_dataset.fn(str(real_csv), "review", "sentiment")
    restored = DatasetRef.from_dict(json.loads(json.dumps(dataclasses.asdict(ref))))
    assert restored == ref and hash(restored) == hash(ref)
    assert ref.rows_read == 400 and ref.dropped == () and sum(ref.train_label_counts) == ref.num_train


def _labelled_csv(path: Path, rotten_tomatoes, labels: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        for row, label in zip(rotten_tomatoes, labels, strict=False):
            writer.writerow([row["text"], label])
    return path


def test_labels_that_look_like_typos_are_refused_until_folded_or_confirmed(pipeline_home, tmp_path, rotten_tomatoes):
    labels = ["fresh"] * 30 + ["rotten"] * 24 + ["Fresh"] * 3 + ["fresh "] * 2 + ["rotton"]
    path = _labelled_csv(tmp_path / "typos.csv", rotten_tomatoes, labels)
    with pytest.raises(DatasetError) as info:
        load_dataset.fn(str(path), "review", "sentiment")
    message = str(info.value)
    assert f"dataset '{path}', column 'sentiment': labels look like typos of each other" in message
    assert "['Fresh' (3 rows), 'fresh' (30 rows), 'fresh ' (2 rows)]" in message
    assert "['rotten' (24 rows), 'rotton' (1 rows)]" in message
    folded = load_dataset.fn(
        str(path), "review", "sentiment", label_map={"Fresh": "fresh", "fresh ": "fresh", "rotton": "rotten"}
    )
    assert folded.labels == ("fresh", "rotten")
    assert tuple(map(sum, zip(folded.train_label_counts, folded.test_label_counts, strict=True))) == (35, 25)
    kept = load_dataset.fn(str(path), "review", "sentiment", allow_similar_labels=True)
    assert kept.labels == ("Fresh", "fresh", "fresh ", "rotten", "rotton")


@pytest.mark.parametrize(
    "names",
    [("pos", "neg"), ("LABEL_1", "LABEL_2", "LABEL_3"), ("class_a", "class_b"), ("positive", "negative", "neutral")],
)
def test_distinct_labels_are_not_taken_for_typos(pipeline_home, tmp_path, rotten_tomatoes, names):
    labels = [names[i % len(names)] for i in range(30)]
    ref = load_dataset.fn(str(_labelled_csv(tmp_path / "ok.csv", rotten_tomatoes, labels)), "review", "sentiment")
    assert ref.labels == tuple(sorted(names))


def test_integer_labels_in_a_csv_stay_ids_and_float_text_is_refused(pipeline_home, tmp_path, rotten_tomatoes):
    ints = load_dataset.fn(
        str(_labelled_csv(tmp_path / "ints.csv", rotten_tomatoes, ["0", "1", ""] * 10)), "review", "sentiment"
    )
    assert ints.labels == ("LABEL_0", "LABEL_1") and ints.dropped == (("missing label", 10),)
    floats = _labelled_csv(tmp_path / "floats.csv", rotten_tomatoes, ["0.0", "1.0"] * 10)
    with pytest.raises(DatasetError, match="column 'sentiment': labels are floats.*float labels are not class labels"):
        load_dataset.fn(str(floats), "review", "sentiment")
    named = load_dataset.fn(str(floats), "review", "sentiment", label_map={"0.0": "rotten", "1.0": "fresh"})
    assert named.labels == ("fresh", "rotten") and sum(named.train_label_counts) + sum(named.test_label_counts) == 20


def test_max_length_above_the_position_table_is_refused_naming_both_numbers(tmp_path, tiny_checkpoint):
    from modelcore import LlamaConfig

    check_max_length(str(tiny_checkpoint), 512)  # BERT: 512 positions, [CLS] and [SEP] included
    with pytest.raises(
        ConfigError,
        match=rf"max_length 513 is more than the max_position_embeddings 512 of base model '{tiny_checkpoint}' "
        r"\(bert\); use max_length <= 512",
    ):
        check_max_length(str(tiny_checkpoint), 513)
    llama = tmp_path / "llama"
    LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=128,
    ).save_pretrained(llama)
    check_max_length(str(llama), 128)
    with pytest.raises(ConfigError, match=r"max_length 129 is more than the max_position_embeddings 128 .* \(llama\)"):
        check_max_length(str(llama), 129)


def test_a_text_column_with_no_text_left_is_refused_naming_it(pipeline_home, tmp_path):
    from tasks.readers import DatasetError
    from tasks.text_data import load_text_dataset

    path = tmp_path / "blank.csv"
    path.write_text("body,n\n   ,1\n,2\n\t,3\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="column 'body' holds no text once empty rows are dropped"):
        load_text_dataset.fn(str(path), "body")
