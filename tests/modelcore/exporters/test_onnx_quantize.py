"""ONNX int8: QAttention in the graph, logits close to fp32, report.json against the eager model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx

from modelcore.exporters import OrtModelForSequenceClassification, quantize_onnx
from modelcore.exporters.modeling_ort import read_metadata
from modelcore.reports import ConversionReport
from tests.modelcore.exporters.conftest import MEASURE, padded_batch


def test_int8_export_runs_and_stays_close_to_fp32(bert_export, tiny_bert, tmp_path):
    out = quantize_onnx(bert_export, tmp_path / "int8", reference=tiny_bert, **MEASURE)
    proto = onnx.load(str(out / "model.onnx"), load_external_data=False)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QAttention") == 2 and "MatMulInteger" in ops  # attention and the other MatMuls in int8
    quantized = {
        t.name for t in proto.graph.initializer if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    }
    assert "model.bert.embeddings.word_embeddings.weight_quantized" in quantized  # the embedding table too
    assert read_metadata(out / "model.onnx")["modelcore.task"] == "text-classification"
    assert (out / "model.onnx.data").is_file() and (out / "config.json").is_file()

    batch = padded_batch(8, 16, 120, seed=3)
    fp32 = OrtModelForSequenceClassification.from_pretrained(bert_export)(**batch).logits
    int8 = OrtModelForSequenceClassification.from_pretrained(out)(**batch).logits
    assert (int8 - fp32).abs().max() < 0.05 * fp32.abs().max()  # int8 error: a few percent of the logit range

    report = ConversionReport.read(out)
    assert (report.kind, report.method, report.source) == ("export", "onnx_int8", "BertForSequenceClassification")
    assert report.after.size_bytes < report.before.size_bytes
    assert report.max_abs_logit_diff < 0.05 * fp32.abs().max()
    assert report.settings["quantized_from"] == str(bert_export)
    assert report.settings["reduce_range"] is True  # 7-bit weights: no int16 overflow on CPUs without VNNI


def test_relative_paths(bert_export, tmp_path, monkeypatch):
    """As the CLI passes them (``modelcore export onnx SRC out --int8``): the pre-processing changes directory."""
    monkeypatch.chdir(tmp_path)
    source = Path(os.path.relpath(bert_export, tmp_path))
    out = quantize_onnx(source, Path("int8"), report=False)
    assert out == Path("int8") and (tmp_path / "int8" / "model.onnx").is_file()
    assert {p.name for p in (tmp_path / "int8").iterdir()} >= {"model.onnx", "model.onnx.data", "config.json"}


def test_int8_report_defaults_to_the_fp32_export_as_reference(bert_export, tmp_path):
    out = quantize_onnx(bert_export, bert_export / "int8-test", **MEASURE)
    try:
        report = ConversionReport.read(out)
        assert report.source == str(bert_export)
        assert report.before.size_bytes == sum(
            (bert_export / name).stat().st_size for name in ("model.onnx", "model.onnx.data")
        )  # the export's own files, not the int8 directory inside it
    finally:
        shutil.rmtree(out)  # leave the shared export as the other tests expect it
