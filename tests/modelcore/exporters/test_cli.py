"""``modelcore export onnx SRC DST``: a checkpoint directory in, fp32 and int8 exports with their reports out."""

from __future__ import annotations

import json

import pytest
import torch

from modelcore.cli import main
from modelcore.exporters import OrtModelForSequenceClassification
from modelcore.reports import ConversionReport


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, minilm_dir):
    """A tiny BERT classifier with the real MiniLM tokenizer, saved as a Hugging Face folder."""
    from modelcore import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    directory = tmp_path_factory.mktemp("tiny-bert")
    BertForSequenceClassification(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(directory)
    return directory


def test_export_onnx_with_int8_writes_both_exports_and_reports(checkpoint, tmp_path, capsys, monkeypatch):
    from modelcore.quantization import evaluation

    evaluated = []
    task_metric = evaluation.task_metric
    monkeypatch.setattr(
        evaluation,
        "task_metric",
        lambda model, *a, **k: evaluated.append(type(model).__name__) or task_metric(model, *a, **k),
    )
    out = tmp_path / "onnx"
    args = [
        "export",
        "onnx",
        str(checkpoint),
        str(out),
        "--int8",
        "--eval-data",
        "rotten-tomatoes",
        "--eval-limit",
        "48",
    ]
    args += ["--batch-size", "4", "--seq-len", "16", "--repeats", "2", "--threads", "1"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [entry["method"] for entry in summary] == ["onnx_optimized", "onnx_int8"]

    for directory, method in ((out, "onnx_optimized"), (out / "int8", "onnx_int8")):
        assert {"model.onnx", "model.onnx.data", "config.json", "tokenizer.json", "report.json"} <= {
            p.name for p in directory.iterdir()
        }
        report = ConversionReport.read(directory)
        assert report.method == method and report.source == str(checkpoint)
        assert report.metric_name == "accuracy" and report.settings["eval_examples"] == 48
        assert 0.0 <= report.after.metric <= 1.0
    assert ConversionReport.read(out).max_abs_logit_diff <= 1e-4
    assert ConversionReport.read(out).before.metric == ConversionReport.read(out).after.metric
    # the int8 report compares with the same eager model on the same data: its accuracy, taken over
    assert ConversionReport.read(out / "int8").before.metric == ConversionReport.read(out).before.metric
    assert ConversionReport.read(out / "int8").settings["reduce_range"] is True  # --no-reduce-range not given
    assert evaluated == ["BertForSequenceClassification"] + ["OrtModelForSequenceClassification"] * 2

    from modelcore import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / "int8")
    enc = tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    assert OrtModelForSequenceClassification.from_pretrained(out / "int8")(**enc).logits.shape == (2, 2)
