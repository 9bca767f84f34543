"""bitsandbytes checkpoints go both ways between modelcore and transformers, with identical logits.

transformers is the reference implementation here and only here; modelcore never imports it.
"""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("bitsandbytes")
transformers = pytest.importorskip("transformers")

from modelcore.models.bert import BertForSequenceClassification  # noqa: E402
from modelcore.quantization import resolve_config  # noqa: E402

CONFIGS = {
    "bnb_8bit": dict(load_in_8bit=True),
    "bnb_nf4": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True),
    "bnb_fp4": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4"),
}


def hf_load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.BertForSequenceClassification.from_pretrained(path, device_map="cpu", **kwargs).eval()


def logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits


def assert_same_outputs(ours, theirs, ids):
    """Bit-identical where both run bitsandbytes' kernels (few rows); within bf16 rounding of absmax beyond,
    where ours dequantizes the weights instead of using the fused CPU kernel."""
    small = ids[:1, :8]
    assert torch.equal(logits(ours, small), logits(theirs, small))
    torch.testing.assert_close(logits(ours, ids), logits(theirs, ids), rtol=0, atol=0.02)


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_ours_loads_in_transformers(method, bert_dir, bert_ids, tmp_path):
    ours = BertForSequenceClassification.from_pretrained(
        bert_dir, quantization_config=resolve_config(CONFIGS[method] | {"quant_method": "bitsandbytes"})
    )
    ours.save_pretrained(tmp_path)
    theirs = hf_load(tmp_path)
    assert (
        type(theirs.bert.encoder.layer[0].attention.self.query).__name__
        == type(ours.bert.encoder.layer[0].attention.self.query).__mro__[1].__name__
    )
    assert_same_outputs(ours, theirs, bert_ids)


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_transformers_checkpoint_loads_here(method, bert_dir, bert_ids, tmp_path):
    # transformers 5.23 would quantize the 2-row classifier too (which bitsandbytes' CPU kernel rejects): skip it.
    config = transformers.BitsAndBytesConfig(**CONFIGS[method], llm_int8_skip_modules=["classifier"])
    theirs = hf_load(bert_dir, quantization_config=config)
    theirs.save_pretrained(tmp_path)
    ours = BertForSequenceClassification.from_pretrained(tmp_path)
    assert ours.config.quantization_config["quant_method"] == "bitsandbytes"
    assert resolve_config(ours.config.quantization_config).method == method
    assert_same_outputs(ours, theirs, bert_ids)
