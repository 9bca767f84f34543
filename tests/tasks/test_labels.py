"""Label names that look like typos of each other, and label values that are not class labels."""

from __future__ import annotations

from collections import Counter

import pytest

from tasks.labels import apply_label_map, check_similar_labels, from_csv_text, label_names, look_alike, similar_groups
from tasks.readers import DatasetError


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("fresh", "Fresh"),  # case
        ("fresh", "fresh "),  # a trailing space
        ("fresh", "FRESH"),
        ("rotten", "rotton"),  # one letter replaced
        ("fresh", "freshh"),  # one letter inserted
        ("fresh", "frsh"),  # one letter deleted
        ("fresh", "frehs"),  # two letters swapped
        ("café", "cafe\u0301"),  # the same word in two Unicode forms (NFC, NFD)
        ("not-fresh", "not fresh"),
        ("LABEL_1", "label 1"),
    ],
)
def test_typos_look_alike(a, b):
    assert look_alike(a, b) and look_alike(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("pos", "neg"),
        ("0", "1"),
        ("LABEL_1", "LABEL_2"),  # digits differ: real classes
        ("LABEL_1", "LABEL_10"),
        ("type1", "type2"),
        ("class_a", "class_b"),  # the letter is a word of its own: an enumeration
        ("spam", "scam"),  # one letter replaced in a 4-letter word is another word
        ("cat", "cut"),  # too short to judge
        ("positive", "negative"),
        ("entailment", "contradiction"),
    ],
)
def test_distinct_classes_do_not_look_alike(a, b):
    assert not look_alike(a, b) and not look_alike(b, a)


def test_groups_join_every_look_alike_and_the_message_names_counts_and_a_label_map():
    names = ["fresh", "Fresh", "fresh ", "rotten", "rotton", "pos"]
    assert similar_groups(names) == [["Fresh", "fresh", "fresh "], ["rotten", "rotton"]]
    counts = Counter({"fresh": 3701, "Fresh": 12, "fresh ": 4, "rotten": 2500, "rotton": 3, "pos": 10})
    with pytest.raises(DatasetError) as info:
        check_similar_labels(names, counts, "dataset 'x.csv', column 'sentiment'")
    message = str(info.value)
    assert message.startswith("dataset 'x.csv', column 'sentiment': labels look like typos of each other")
    assert "['Fresh' (12 rows), 'fresh' (3,701 rows), 'fresh ' (4 rows)]" in message
    assert "['rotten' (2,500 rows), 'rotton' (3 rows)]" in message
    assert "label_map={'Fresh': 'fresh', 'fresh ': 'fresh', 'rotton': 'rotten'}" in message  # to the most frequent
    assert "allow_similar_labels=True" in message
    check_similar_labels(["pos", "neg", "LABEL_1", "LABEL_2"], Counter(), "x")  # nothing alike: no error


def test_float_and_bool_labels_are_refused_saying_so():
    with pytest.raises(
        DatasetError, match=r"col: labels are floats \(\[0\.0, 1\.0\]\), and float labels are not class"
    ):
        label_names([0.0, 1.0, 1.0], "col")
    with pytest.raises(DatasetError, match="col: labels are booleans.*label_map"):
        label_names([True, False], "col")
    with pytest.raises(DatasetError, match="labels mix types"):
        label_names([0, "fresh"], "col")
    assert label_names(["rotten", "fresh", "fresh"], "col") == (("fresh", "rotten"), [1, 0, 0])
    assert label_names([1, 0, 1], "col") == (("LABEL_0", "LABEL_1"), [1, 0, 1])


def test_csv_text_is_typed_from_the_values_and_a_label_map_applies_to_the_raw_text():
    assert from_csv_text(["0", "1", None, " 2"]) == [0, 1, None, 2]
    assert from_csv_text(["0.0", "1", None]) == [0.0, 1.0, None]  # decimals: floats, refused later
    assert from_csv_text(["fresh", "1"]) == ["fresh", "1"]
    assert apply_label_map([True, 1.0, "Fresh", None, "x"], {"True": "pos", "1.0": "pos", "Fresh": "fresh"}) == [
        "pos",
        "pos",
        "fresh",
        None,
        "x",
    ]
