"""Collators on the real MiniLM tokenizer and real Rotten Tomatoes sentences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelcore import AutoTokenizer
from modelcore.data import DataCollatorForLanguageModeling, DataCollatorWithPadding, default_data_collator


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def left_tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir, padding_side="left")


@pytest.fixture(scope="module")
def rows(tokenizer, rotten_tomatoes):
    """2,000 tokenized review rows (unpadded lists), keeping the raw text and the label."""
    sample = rotten_tomatoes[:2000]
    encoded = tokenizer([r["text"] for r in sample], truncation=True, max_length=64)
    return [
        {**{key: encoded[key][i] for key in encoded}, "label": r["label"], "text": r["text"]}
        for i, r in enumerate(sample)
    ]


def _batches(rows, size):
    return [rows[i : i + size] for i in range(0, len(rows), size)]


# ------------------------------------------------------------------ default_data_collator


def test_default_collator_stacks_and_renames():
    features = [
        {"input_ids": [1, 2, 3], "label": 1, "score": 0.5, "text": "a", "pixel": torch.ones(2, 2)},
        {"input_ids": [4, 5, 6], "label": 0, "score": 1.5, "text": "b", "pixel": torch.zeros(2, 2)},
    ]
    batch = default_data_collator(features)
    assert set(batch) == {"input_ids", "labels", "score", "pixel"}  # the string field is dropped
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == [1, 0]
    assert batch["score"].dtype == torch.float32
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert batch["pixel"].shape == (2, 2, 2)


def test_default_collator_float_labels_and_label_ids():
    assert default_data_collator([{"label": 0.5}, {"label": 1.0}])["labels"].dtype == torch.float32
    assert default_data_collator([{"label_ids": [1, 2]}, {"label_ids": [3, 4]}])["labels"].tolist() == [[1, 2], [3, 4]]
    batch = default_data_collator([{"x": np.array([1.0, 2.0])}, {"x": np.array([3.0, 4.0])}])
    assert batch["x"].shape == (2, 2)


def test_default_collator_names_ragged_field():
    with pytest.raises(ValueError, match="'input_ids'"):
        default_data_collator([{"input_ids": [1, 2]}, {"input_ids": [1]}])


# ------------------------------------------------------------------ DataCollatorWithPadding


def test_padding_right(tokenizer, rows):
    features = rows[:8]
    batch = DataCollatorWithPadding(tokenizer)(features)
    lengths = [len(f["input_ids"]) for f in features]
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].shape == (8, max(lengths))
    assert batch["labels"].tolist() == [f["label"] for f in features]
    for i, (feature, n) in enumerate(zip(features, lengths, strict=True)):
        assert batch["input_ids"][i, :n].tolist() == feature["input_ids"]
        assert (batch["input_ids"][i, n:] == tokenizer.pad_token_id).all()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert (batch["token_type_ids"][i, n:] == 0).all()


def test_padding_left(left_tokenizer, rows):
    features = rows[:8]
    batch = DataCollatorWithPadding(left_tokenizer)(features)
    width = batch["input_ids"].shape[1]
    for i, feature in enumerate(features):
        n = len(feature["input_ids"])
        assert batch["input_ids"][i, width - n :].tolist() == feature["input_ids"]
        assert (batch["input_ids"][i, : width - n] == left_tokenizer.pad_token_id).all()
        assert batch["attention_mask"][i].tolist() == [0] * (width - n) + [1] * n


def test_padding_matches_tokenizer_padding(tokenizer, left_tokenizer, rotten_tomatoes):
    texts = [r["text"] for r in rotten_tomatoes[100:116]]
    for tok in (tokenizer, left_tokenizer):
        features = [dict(tok(text)) for text in texts]
        batch = DataCollatorWithPadding(tok)(features)
        expected = tok(texts, padding=True, return_tensors="pt")
        for key in expected:
            assert torch.equal(batch[key], expected[key]), key


def test_padding_matches_hugging_face(tokenizer, rows, minilm_dir):
    transformers = pytest.importorskip("transformers")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    features = [{k: v for k, v in row.items() if k != "text"} for row in rows[:16]]
    ours = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)(features)
    theirs = transformers.DataCollatorWithPadding(hf_tokenizer, pad_to_multiple_of=8)(features)
    assert set(ours) == set(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key


def test_pad_to_multiple_of_and_max_length(tokenizer, rows):
    features = rows[:5]
    longest = max(len(f["input_ids"]) for f in features)
    batch = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)(features)
    assert batch["input_ids"].shape[1] == -(-longest // 8) * 8
    batch = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=70)(features)
    assert batch["input_ids"].shape == (5, 70)
    batch = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=70, pad_to_multiple_of=32)(features)
    assert batch["input_ids"].shape == (5, 96)
    with pytest.raises(ValueError, match="max_length=4"):
        DataCollatorWithPadding(tokenizer, padding="max_length", max_length=4)(features)


def test_tensor_rows_and_special_tokens_mask(tokenizer, rotten_tomatoes):
    texts = [r["text"] for r in rotten_tomatoes[:4]]
    features = []
    for text in texts:
        enc = tokenizer(text, return_special_tokens_mask=True)
        features.append({key: torch.tensor(value) for key, value in enc.items()})
    batch = DataCollatorWithPadding(tokenizer)(features)
    padding = batch["attention_mask"] == 0
    assert padding.any()
    assert (batch["special_tokens_mask"][padding] == 1).all()  # a pad is a special token
    assert batch["input_ids"].dtype == torch.int64


def test_padding_errors(tokenizer, rows):
    collator = DataCollatorWithPadding(tokenizer)
    with pytest.raises(ValueError, match="input_ids"):
        collator([{"attention_mask": [1, 1]}, {"attention_mask": [1]}])
    with pytest.raises(ValueError, match=r"feature 1 .*missing \['label'\]"):
        collator([rows[0], {k: v for k, v in rows[1].items() if k != "label"}])
    with pytest.raises(ValueError, match="'attention_mask' has 1 values"):
        collator([{"input_ids": [1, 2], "attention_mask": [1]}])
    with pytest.raises(ValueError, match="padding"):
        DataCollatorWithPadding(tokenizer, padding="shortest")


def test_no_pad_token_is_a_clear_error(minilm_dir, rows):
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    tok.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        DataCollatorWithPadding(tok)(rows[:4])


# ------------------------------------------------------------------ language modeling


def test_causal_labels_use_attention_mask(minilm_dir, rows):
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    tok.pad_token = tok.sep_token  # pad == a real end-of-sequence token, as with most causal models
    features = [{"input_ids": f["input_ids"], "label": f["label"]} for f in rows[:8]]
    batch = DataCollatorForLanguageModeling(tok, mlm=False)(features)
    mask = batch["attention_mask"].bool()
    assert (batch["labels"][~mask] == -100).all()
    assert torch.equal(batch["labels"][mask], batch["input_ids"][mask])
    assert (batch["labels"] == tok.sep_token_id).sum() == len(features)  # every real [SEP] keeps its label


def test_causal_accepts_bare_id_lists(tokenizer, rows):
    batch = DataCollatorForLanguageModeling(tokenizer, mlm=False)([f["input_ids"] for f in rows[:3]])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}


def test_mlm_statistics_on_real_sentences(tokenizer, rows):
    collator = DataCollatorForLanguageModeling(tokenizer, seed=0)
    special = torch.tensor(tokenizer.all_special_ids)
    eligible = chosen = to_mask = unchanged = 0
    for features in _batches(rows, 64):
        original = DataCollatorWithPadding(tokenizer)(features)["input_ids"]
        batch = collator(features)
        picked = batch["labels"] != -100
        is_special = torch.isin(original, special)
        padding = batch["attention_mask"] == 0
        assert not (picked & (is_special | padding)).any()  # never special tokens or padding
        assert torch.equal(batch["labels"][picked], original[picked])
        assert torch.equal(batch["input_ids"][~picked], original[~picked])  # only chosen positions change
        eligible += int((~is_special & ~padding).sum())
        chosen += int(picked.sum())
        to_mask += int((batch["input_ids"][picked] == tokenizer.mask_token_id).sum())
        unchanged += int((batch["input_ids"][picked] == original[picked]).sum())
    assert eligible > 30_000
    assert chosen / eligible == pytest.approx(0.15, abs=0.01)
    assert to_mask / chosen == pytest.approx(0.8, abs=0.02)
    assert unchanged / chosen == pytest.approx(0.1, abs=0.02)
    assert (chosen - to_mask - unchanged) / chosen == pytest.approx(0.1, abs=0.02)  # random replacements


def test_mlm_is_deterministic_with_seed(tokenizer, rows):
    features = rows[:32]
    first = DataCollatorForLanguageModeling(tokenizer, seed=3)(features)
    again = DataCollatorForLanguageModeling(tokenizer, seed=3)(features)
    other = DataCollatorForLanguageModeling(tokenizer, seed=4)(features)
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
    assert not torch.equal(first["labels"], other["labels"])


def test_mlm_uses_special_tokens_mask_and_drops_it(tokenizer, rotten_tomatoes):
    features = [dict(tokenizer(r["text"], return_special_tokens_mask=True)) for r in rotten_tomatoes[:16]]
    for feature in features:  # mark every token special: nothing may be chosen
        feature["special_tokens_mask"] = [1] * len(feature["input_ids"])
    batch = DataCollatorForLanguageModeling(tokenizer, mlm_probability=1.0, seed=0)(features)
    assert "special_tokens_mask" not in batch
    assert (batch["labels"] == -100).all()


def test_mlm_left_padding_and_multiple(left_tokenizer, rows):
    batch = DataCollatorForLanguageModeling(left_tokenizer, mlm_probability=1.0, pad_to_multiple_of=16, seed=0)(
        rows[:16]
    )
    assert batch["input_ids"].shape[1] % 16 == 0
    padding = batch["attention_mask"] == 0
    assert (batch["labels"][padding] == -100).all() and (batch["input_ids"][padding] == 0).all()
    assert padding[:, 0].any() and not padding[:, -1].any()  # padded on the left


def test_mlm_without_mask_token_is_a_clear_error(minilm_dir):
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    tok.mask_token = None
    with pytest.raises(ValueError, match="mask token"):
        DataCollatorForLanguageModeling(tok)
    DataCollatorForLanguageModeling(tok, mlm=False)  # causal needs none
