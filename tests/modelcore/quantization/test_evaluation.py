"""Validation data for reports, and the weight-bytes count the Llama target is judged by."""

from __future__ import annotations

import json

import pytest

from modelcore.quantization.evaluation import linear_weight_bytes, load_eval_data

from .conftest import tiny_llama


def test_eval_data_from_jsonl_json_and_csv(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n')
    (tmp_path / "b.json").write_text(json.dumps(["one text", "another"]))
    (tmp_path / "c.csv").write_text("text,label\ngood,1\nbad,0\nmeh,0\n")
    assert load_eval_data(tmp_path / "a.jsonl").labels == [1, 0]
    assert load_eval_data(tmp_path / "b.json").labels is None
    data = load_eval_data(tmp_path / "c.csv", limit=2)
    assert (data.texts, data.labels) == (["good", "bad"], [1, 0])


def test_eval_data_errors_name_the_source(tmp_path):
    (tmp_path / "mixed.jsonl").write_text('{"text": "good", "label": 1}\n{"text": "bad"}\n')
    with pytest.raises(ValueError, match="some rows have a 'label'"):
        load_eval_data(tmp_path / "mixed.jsonl")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match="no texts found"):
        load_eval_data(tmp_path / "empty.json")
    with pytest.raises(FileNotFoundError, match="nope.jsonl: evaluation data must be"):
        load_eval_data(tmp_path / "nope.jsonl")


def test_linear_weight_bytes_leaves_out_the_tied_output_layer():
    from modelcore.quantization import quantize

    model = tiny_llama()
    per_layer = 4 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 128 * 64)  # fp32 q, o; k, v (2 KV heads of 16); MLP
    assert linear_weight_bytes(model) == 2 * per_layer
    quantize(model, "bnb_nf4")
    assert linear_weight_bytes(model) < 0.2 * 2 * per_layer
