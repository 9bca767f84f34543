"""Quantization: registry, configs, quantize on load, exact save/load round trips, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

pytest.importorskip("bitsandbytes")

from modelcore.models.bert import BertForSequenceClassification  # noqa: E402
from modelcore.models.llama import LlamaForCausalLM  # noqa: E402
from modelcore.quantization import (  # noqa: E402
    QUANTIZERS,
    AlreadyQuantizedError,
    BitsAndBytesConfig,
    Int8DynamicConfig,
    QuantizationConfig,
    QuantizationConfigError,
    default_skip_modules,
    get_quantizer,
    is_quantized,
    quantize,
    resolve_config,
)
from modelcore.serialization.safetensors_io import load_file  # noqa: E402

from .conftest import tiny_bert, tiny_llama  # noqa: E402

METHODS = ["bnb_8bit", "bnb_nf4", "bnb_fp4", "int8_dynamic"]
# Largest |logit - fp32 logit| allowed on the tiny models, relative to the largest |fp32 logit|.
TOLERANCE = {"bnb_8bit": 0.03, "bnb_nf4": 0.15, "bnb_fp4": 0.2, "int8_dynamic": 0.03}
MODULE_TYPES = {
    "bnb_8bit": "Linear8bitLt",
    "bnb_nf4": "Linear4bit",
    "bnb_fp4": "Linear4bit",
    "int8_dynamic": "Int8DynamicLinear",
}


def logits(model, **inputs):
    with torch.inference_mode():
        return model(**inputs).logits


def close(quantized, reference, method) -> bool:
    return bool((quantized - reference).abs().max() < TOLERANCE[method] * reference.abs().max())


def same_files(a, b) -> bool:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


# ------------------------------------------------------------------------------------- registry
def test_registry_names_resolve_to_quantizers_with_their_config():
    assert set(METHODS) <= set(QUANTIZERS)
    for name in QUANTIZERS:
        quantizer = get_quantizer(name)
        assert quantizer.name == name
        assert quantizer.config.method == name
        assert QuantizationConfig.from_dict(quantizer.config.to_dict()) == quantizer.config


def test_unknown_method_names_the_known_ones():
    with pytest.raises(
        ValueError, match="unknown quantization method 'int3'.*bnb_8bit, bnb_fp4, bnb_nf4, int8_dynamic"
    ):
        get_quantizer("int3")
    with pytest.raises(ValueError, match="quant_method 'awq'; known: bitsandbytes, int8_dynamic"):
        resolve_config({"quant_method": "awq", "bits": 4})


def test_unknown_method_at_load_fails_before_reading_weights(bert_dir):
    with pytest.raises(ValueError, match="unknown quantization method 'nf3'"):
        BertForSequenceClassification.from_pretrained(bert_dir, quantization_config="nf3")


# -------------------------------------------------------------------------------------- configs
def test_bnb_config_has_transformers_shape_and_round_trips():
    config = resolve_config("bnb_nf4", bnb_4bit_compute_dtype="bfloat16", bnb_4bit_use_double_quant=True)
    data = config.to_dict()
    assert data["quant_method"] == "bitsandbytes"
    assert data["load_in_4bit"] is True and data["load_in_8bit"] is False
    assert data["bnb_4bit_quant_type"] == "nf4"
    assert data["bnb_4bit_compute_dtype"] == "bfloat16"
    assert data["bnb_4bit_use_double_quant"] is True
    assert QuantizationConfig.from_dict(json.loads(json.dumps(data))) == config


def test_config_from_a_stored_dict_keeps_unknown_keys_and_reads_transformers_spellings():
    stored = {"quant_method": "bitsandbytes", "load_in_8bit": True, "llm_int8_threshold": 6, "future_knob": 1}
    stored |= {"bnb_4bit_compute_dtype": "torch.float16", "bnb_4bit_quant_storage": None}
    config = QuantizationConfig.from_dict(stored)
    assert config.method == "bnb_8bit"
    assert config.llm_int8_threshold == 6.0 and config.bnb_4bit_compute_dtype == "float16"
    assert config.to_dict()["future_knob"] == 1


def test_config_validation_names_the_field():
    with pytest.raises(QuantizationConfigError, match="exactly one of load_in_8bit / load_in_4bit"):
        BitsAndBytesConfig(load_in_8bit=True, load_in_4bit=True)
    with pytest.raises(QuantizationConfigError, match="bnb_4bit_quant_type 'int4'"):
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="int4")
    with pytest.raises(QuantizationConfigError, match="bnb_4bit_compute_dtype 'fp8'"):
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype="fp8")
    with pytest.raises(QuantizationConfigError, match="reduce_range must be bool"):
        Int8DynamicConfig(reduce_range="yes")
    with pytest.raises(TypeError):
        resolve_config("bnb_nf4", bnb_4bit_quant_tpye="nf4")  # a typo in code is an error


def test_transformers_config_object_is_accepted():
    transformers = pytest.importorskip("transformers")
    theirs = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    assert resolve_config(theirs).method == "bnb_nf4"


# --------------------------------------------------------------------- quantize on load, round trip
@pytest.mark.parametrize("method", METHODS)
def test_quantize_on_load_saves_config_and_reloads_exactly(method, bert_dir, bert_ids, tmp_path):
    reference = logits(BertForSequenceClassification.from_pretrained(bert_dir), input_ids=bert_ids)
    model = BertForSequenceClassification.from_pretrained(bert_dir, quantization_config=method)
    query = model.bert.encoder.layer[0].attention.self.query
    assert type(query).__name__ == MODULE_TYPES[method]
    assert type(model.classifier) is nn.Linear  # the task head stays in full precision
    small = bert_ids[:1, :8]  # 8 rows: bitsandbytes' fused CPU kernel, which repacks 4-bit weights first
    quantized_small = logits(model, input_ids=small)
    quantized = logits(model, input_ids=bert_ids)  # 48 rows: dequantized 4-bit weights
    assert close(quantized, reference, method)
    assert close(quantized_small, reference[:1], method)
    assert not torch.equal(quantized, reference)

    model.save_pretrained(tmp_path / "q")
    stored = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert resolve_config(stored).method == method
    assert (stored.get("llm_int8_skip_modules") or stored.get("modules_to_not_convert")) == ["classifier"]

    reloaded, info = BertForSequenceClassification.from_pretrained(tmp_path / "q", output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    assert is_quantized(reloaded)
    assert torch.equal(logits(reloaded, input_ids=bert_ids), quantized)
    assert torch.equal(logits(reloaded, input_ids=small), quantized_small)
    reloaded.save_pretrained(tmp_path / "again")
    assert same_files(tmp_path / "q", tmp_path / "again")


@pytest.mark.parametrize("method", ["bnb_8bit", "bnb_nf4"])
def test_llama_keeps_tied_lm_head_and_round_trips(method, llama_dir, tmp_path):
    ids = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(1))
    reference = logits(LlamaForCausalLM.from_pretrained(llama_dir), input_ids=ids)
    model = LlamaForCausalLM.from_pretrained(llama_dir, quantization_config=method)
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight is model.model.embed_tokens.weight
    assert type(model.model.layers[0].mlp.down_proj).__name__ == MODULE_TYPES[method]
    quantized = logits(model, input_ids=ids)
    assert close(quantized, reference, method)
    model.save_pretrained(tmp_path)
    assert torch.equal(logits(LlamaForCausalLM.from_pretrained(tmp_path), input_ids=ids), quantized)


def test_double_quant_and_compute_dtype_reach_the_modules(bert_dir, bert_ids, tmp_path):
    config = resolve_config("bnb_nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype="bfloat16")
    model = BertForSequenceClassification.from_pretrained(bert_dir, quantization_config=config)
    query = model.bert.encoder.layer[0].attention.self.query
    assert query.weight.quant_state.nested and query.compute_dtype is torch.bfloat16
    out = logits(model, input_ids=bert_ids)
    model.save_pretrained(tmp_path)
    assert "bert.encoder.layer.0.attention.self.query.weight.nested_absmax" in load_file(tmp_path / "model.safetensors")
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.bert.encoder.layer[0].attention.self.query.compute_dtype is torch.bfloat16
    assert torch.equal(logits(reloaded, input_ids=bert_ids), out)


def test_quantize_in_memory_and_explicit_skip_patterns(bert_ids):
    model = quantize(tiny_bert(), "int8_dynamic", modules_to_not_convert=["bert.encoder.layer.1", "bert.pooler"])
    layers = model.bert.encoder.layer
    assert type(layers[0].output.dense).__name__ == "Int8DynamicLinear"
    assert type(layers[1].output.dense) is nn.Linear and type(model.bert.pooler.dense) is nn.Linear
    # explicit patterns replace the default (as in transformers), so the head is quantized too
    assert type(model.classifier).__name__ == "Int8DynamicLinear"
    assert model.config.quantization_config["modules_to_not_convert"] == ["bert.encoder.layer.1", "bert.pooler"]


def test_default_skip_modules_are_the_heads():
    assert default_skip_modules(tiny_bert()) == ["classifier"]
    assert default_skip_modules(tiny_llama()) == ["lm_head"]
    assert default_skip_modules(tiny_llama(tie_word_embeddings=False)) == ["lm_head"]


# ---------------------------------------------------------------------------- already quantized
def test_quantizing_a_quantized_model_is_refused():
    model = quantize(tiny_bert(), "bnb_8bit")
    with pytest.raises(AlreadyQuantizedError, match="already quantized with bnb_8bit"):
        quantize(model, "bnb_nf4")
    with pytest.raises(AlreadyQuantizedError, match="already quantized with bnb_8bit"):
        get_quantizer("bnb_8bit").quantize(model)


def test_loading_a_quantized_checkpoint_with_another_method_is_refused(bert_dir, bert_ids, tmp_path):
    BertForSequenceClassification.from_pretrained(bert_dir, quantization_config="bnb_nf4").save_pretrained(tmp_path)
    with pytest.raises(
        AlreadyQuantizedError, match="already quantized with bnb_nf4; cannot quantize it again with bnb_8bit"
    ):
        BertForSequenceClassification.from_pretrained(tmp_path, quantization_config="bnb_8bit")
    # asking for the method it has is fine: it loads as stored
    same = BertForSequenceClassification.from_pretrained(tmp_path, quantization_config="bnb_nf4")
    assert torch.equal(
        logits(same, input_ids=bert_ids),
        logits(BertForSequenceClassification.from_pretrained(tmp_path), input_ids=bert_ids),
    )


def test_a_corrupt_quantized_checkpoint_names_the_module(bert_dir, tmp_path):
    from modelcore.serialization.safetensors_io import save_file

    BertForSequenceClassification.from_pretrained(bert_dir, quantization_config="bnb_nf4").save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["bert.encoder.layer.0.attention.self.key.weight.absmax"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="'bert.encoder.layer.0.attention.self.key'.*weight.absmax"):
        BertForSequenceClassification.from_pretrained(tmp_path)


def test_skip_patterns_match_like_transformers():
    from modelcore.quantization.base import matches_any

    assert matches_any("model.layers.1.mlp", ["model.layers.1"])
    assert not matches_any("model.layers.11.mlp", ["model.layers.1"])
    assert matches_any("model.layers.11.mlp.up_proj", ["model.layers.*"])
    assert matches_any("model.layers.3.fc1", ["fc1"])
    assert not matches_any("model.layers.3.mlp.gate_proj", ["mlp.gate"])
