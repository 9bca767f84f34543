"""Encoder classifier export: parity with eager on new shapes, the graph's form, external weights, report.json."""

from __future__ import annotations

import copy
import json
import shutil

import onnx
import pytest
import torch

from modelcore.exporters import OrtModelForSequenceClassification, export_onnx
from modelcore.reports import ConversionReport
from tests.modelcore.exporters.conftest import MEASURE, padded_batch, wrap_forward_in_autocast

ATOL = 1e-4


def eager_logits(model, batch) -> torch.Tensor:
    with torch.inference_mode():
        return type(model).forward(model, **batch).logits  # the class's forward: fp32, never autocast


@pytest.mark.parametrize(("b", "t"), [(3, 23), (1, 5), (5, 1), (2, 64)])
def test_classifier_matches_eager_on_other_batch_and_sequence_sizes(bert_export, tiny_bert, b, t):
    ort_model = OrtModelForSequenceClassification.from_pretrained(bert_export)
    batch = padded_batch(b, t, tiny_bert.config.vocab_size, seed=b * 100 + t)
    got = ort_model(**batch).logits
    assert got.shape == (b, 3)
    torch.testing.assert_close(got, eager_logits(tiny_bert, batch), atol=ATOL, rtol=0)


def test_graph_has_dynamic_axes_fused_attention_and_external_weights(bert_export):
    proto = onnx.load(str(bert_export / "model.onnx"), load_external_data=False)
    for graph_input in proto.graph.input:
        dims = [d.dim_param for d in graph_input.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], graph_input.name
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Attention") == 2 and "Softmax" not in ops  # one fused attention per layer
    # onnxruntime's CPU SkipLayerNormalization / BiasGelu are slower than the plain ops: kept apart, and said so
    assert "SkipLayerNormalization" not in ops and "BiasGelu" not in ops
    assert ops.count("LayerNormalization") == 5 and ops.count("Gelu") == 2
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert metadata["modelcore.ort_disabled_optimizers"] == "SkipLayerNormFusion,BiasGeluFusion"
    assert json.loads(metadata["modelcore.ort_session_config"]) == {"session.set_denormal_as_zero": "1"}
    external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and {e.value for t in external for e in t.external_data if e.key == "location"} == {
        "model.onnx.data"
    }
    assert (bert_export / "model.onnx.data").stat().st_size > (bert_export / "model.onnx").stat().st_size


def test_autocast_wrapped_forward_exports_float32(bert_export, tiny_bert):
    """The fixture exported a model whose forward ran in bf16 autocast; the graph holds no bf16 at all."""
    wrapped = wrap_forward_in_autocast(copy.copy(tiny_bert))
    seen = []
    hook = tiny_bert.bert.encoder.layer[0].attention.self.query.register_forward_hook(
        lambda module, args, out: seen.append(out.dtype)
    )
    try:
        wrapped(**padded_batch(2, 8, 120))
    finally:
        hook.remove()
    assert seen == [torch.bfloat16]  # the wrapper is live: eager matmuls run in bf16

    proto = onnx.load(str(bert_export / "model.onnx"), load_external_data=False)
    types = [t.data_type for t in proto.graph.initializer]
    types += [v.type.tensor_type.elem_type for v in [*proto.graph.value_info, *proto.graph.output]]
    assert onnx.TensorProto.BFLOAT16 not in types
    batch = padded_batch(4, 12, 120, seed=7)
    got = OrtModelForSequenceClassification.from_pretrained(bert_export)(**batch).logits
    torch.testing.assert_close(got, eager_logits(tiny_bert, batch), atol=ATOL, rtol=0)


def test_exportable_model_drops_the_autocast_wrapper_and_bf16_weights_but_not_the_callers(tiny_bert):
    from modelcore.exporters.onnx_export import exportable_model

    wrapped = wrap_forward_in_autocast(copy.copy(tiny_bert))
    plain = exportable_model(wrapped)
    assert "forward" not in vars(plain) and "forward" in vars(wrapped)
    assert plain.bert is tiny_bert.bert  # a shallow copy: no second set of weights
    bf16 = copy.deepcopy(tiny_bert).to(torch.bfloat16)
    converted = exportable_model(bf16)
    assert converted.dtype == torch.float32 and bf16.dtype == torch.bfloat16


def test_copied_export_directory_loads_with_its_external_weights(bert_export, tiny_bert, tmp_path):
    copy_dir = tmp_path / "moved"
    shutil.copytree(bert_export, copy_dir)
    assert (copy_dir / "model.onnx.data").is_file() and (copy_dir / "config.json").is_file()
    ort_model = OrtModelForSequenceClassification.from_pretrained(copy_dir, threads=1)
    batch = padded_batch(2, 9, 120)
    torch.testing.assert_close(ort_model(**batch).logits, eager_logits(tiny_bert, batch), atol=ATOL, rtol=0)
    assert ort_model.config.num_labels == 3


def test_report_json_compares_eager_and_onnx(bert_export):
    report = ConversionReport.read(bert_export)
    assert (report.kind, report.method) == ("export", "onnx_optimized")
    assert report.max_abs_logit_diff <= ATOL
    for side in (report.before, report.after):
        assert side.size_bytes > 0 and side.latency_ms > 0 and side.throughput > 0
        assert side.metric is None  # no validation data given
    assert report.settings["batch_size"] == MEASURE["batch_size"] and report.settings["threads"] == 1
    assert report.settings["task"] == "text-classification"


def test_model_without_an_exportable_head_is_refused(tmp_path):
    from modelcore.models.bert import BertConfig, BertModel

    model = BertModel(
        BertConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(ValueError, match="BertModel has no ONNX export"):
        export_onnx(model, tmp_path / "out")
    with pytest.raises(ValueError, match="needs a model that AutoModelForCausalLM serves, got BertModel"):
        export_onnx(model, tmp_path / "out", task="text-generation")


@pytest.mark.slow
def test_unoptimized_export_is_plain_onnx_and_matches_eager(tiny_bert, tmp_path):
    with pytest.raises(ValueError, match="logits differ from the eager model"):
        export_onnx(tiny_bert, tmp_path / "plain", optimize=False, report=False, atol=-1.0)
    assert [p.name for p in (tmp_path / "plain").iterdir()] == []  # a failed check installs nothing
    out = export_onnx(tiny_bert, tmp_path / "plain", optimize=False, report=False)
    proto = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}  # standard operators only
    batch = padded_batch(3, 10, 120)
    got = OrtModelForSequenceClassification.from_pretrained(out)(**batch).logits
    torch.testing.assert_close(got, eager_logits(tiny_bert, batch), atol=ATOL, rtol=0)
    assert not (out / "report.json").exists()
