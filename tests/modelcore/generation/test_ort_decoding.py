"""The exported decoder (onnxruntime) decodes like the eager model: beam search and assisted drafts included."""

from __future__ import annotations

import torch

from modelcore.exporters import OrtModelForCausalLM
from tests.modelcore.exporters.conftest import llama_export, padded_batch, tiny_llama  # noqa: F401 (fixtures)


def test_ort_beam_search_and_sampling_equal_eager(llama_export, tiny_llama):  # noqa: F811 (fixtures)
    ort_model = OrtModelForCausalLM.from_pretrained(llama_export)
    batch = padded_batch(3, 7, 128, seed=4, side="left")
    options = dict(max_new_tokens=6, num_beams=3, num_return_sequences=2, eos_token_id=None)
    assert torch.equal(ort_model.generate(**batch, **options), tiny_llama.generate(**batch, **options))
    torch.manual_seed(4)
    sampled = ort_model.generate(**batch, max_new_tokens=6, do_sample=True, top_p=0.9)
    torch.manual_seed(4)
    assert torch.equal(sampled, tiny_llama.generate(**batch, max_new_tokens=6, do_sample=True, top_p=0.9))
