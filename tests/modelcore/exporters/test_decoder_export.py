"""Decoder LM export with and without KV-cache inputs: step-by-step parity and greedy tokens equal to eager."""

from __future__ import annotations

import onnx
import pytest
import torch

from modelcore.exporters import OrtModelForCausalLM, export_onnx
from modelcore.nn.cache import DynamicCache
from tests.modelcore.exporters.conftest import padded_batch

ATOL = 1e-4


def test_graph_has_past_inputs_present_outputs_and_dynamic_axes(llama_export, tiny_llama):
    proto = onnx.load(str(llama_export / "model.onnx"), load_external_data=False)
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*proto.graph.input, *proto.graph.output]
    }
    assert shapes["input_ids"] == ["batch", "sequence"]
    assert shapes["attention_mask"] == ["batch", "total_sequence"]
    assert shapes["past_key_values.1.value"] == ["batch", 2, "past_sequence", 16]
    assert shapes["present.0.key"][:2] == ["batch", 2] and shapes["logits"] == ["batch", "sequence", 128]
    assert sum(name.startswith("past_key_values.") for name in shapes) == 2 * tiny_llama.config.num_hidden_layers


def test_prompt_then_one_token_steps_match_eager(llama_export, tiny_llama):
    ort_model = OrtModelForCausalLM.from_pretrained(llama_export)
    batch = padded_batch(3, 9, 128, side="left")
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    with torch.inference_mode():
        eager = tiny_llama(**batch, position_ids=positions, past_key_values=cache, use_cache=True)
    out = ort_model(**batch)  # empty past: the prompt step
    keep = mask.bool()
    torch.testing.assert_close(out.logits[keep], eager.logits[keep], atol=ATOL, rtol=0)
    past = out.past_key_values
    for step in range(3):
        token = torch.tensor([[5 + step], [7], [11]])
        mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=-1)
        with torch.inference_mode():
            eager = tiny_llama(
                input_ids=token,
                attention_mask=mask,
                past_key_values=cache,
                use_cache=True,
                position_ids=positions[:, -1:] + 1 + step,
            )
        out = ort_model(token, mask, past_key_values=past)
        past = out.past_key_values
        torch.testing.assert_close(out.logits, eager.logits, atol=ATOL, rtol=0)
        torch.testing.assert_close(past[1][0], cache.keys[1], atol=ATOL, rtol=0)
    assert past[0][0].shape == (3, 2, 12, 16)


def test_ort_generate_gives_eager_greedy_tokens(llama_export, tiny_llama):
    ort_model = OrtModelForCausalLM.from_pretrained(llama_export)
    batch = padded_batch(3, 7, 128, seed=4, side="left")
    expected = tiny_llama.generate(**batch, max_new_tokens=12)
    got = ort_model.generate(**batch, max_new_tokens=12)
    assert torch.equal(got, expected)
    assert ort_model.with_past


@pytest.mark.slow
def test_export_without_past_generates_the_same_tokens(tiny_llama, tmp_path):
    out = export_onnx(tiny_llama, tmp_path / "no-past", with_past=False, report=False)
    ort_model = OrtModelForCausalLM.from_pretrained(out)
    assert not ort_model.with_past and ort_model.input_names == ["input_ids", "attention_mask", "position_ids"]
    batch = padded_batch(2, 6, 128, seed=5, side="left")
    assert torch.equal(ort_model.generate(**batch, max_new_tokens=6), tiny_llama.generate(**batch, max_new_tokens=6))
    with pytest.raises(ValueError, match="without past key/value inputs"):
        ort_model(batch["input_ids"], past_key_values=((torch.zeros(2, 2, 1, 16),) * 2,) * 2)
