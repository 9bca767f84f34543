"""Tiny models and their ONNX exports, made once per session (an export takes a few seconds)."""

from __future__ import annotations

from types import MethodType

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from modelcore.models.bert import BertConfig, BertForSequenceClassification  # noqa: E402
from modelcore.models.llama import LlamaConfig, LlamaForCausalLM  # noqa: E402

MEASURE = dict(batch_size=4, seq_len=16, repeats=2, threads=1)  # a quick report


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights large enough that a wrong wire shows (norm scales near 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.1
            param.copy_(1.0 + noise if "norm" in name.lower() and name.endswith("weight") else noise)
    return model.eval()


def wrap_forward_in_autocast(model: torch.nn.Module) -> torch.nn.Module:
    """What accelerate leaves on a model after bf16 training: forward replaced by an autocast wrapper."""
    from accelerate.utils import convert_outputs_to_fp32

    model._original_forward = model.forward
    autocast_forward = torch.autocast("cpu", dtype=torch.bfloat16)(type(model).forward)
    model.forward = MethodType(convert_outputs_to_fp32(autocast_forward), model)
    return model


@pytest.fixture(scope="session")
def tiny_bert() -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=120, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6, num_labels=3
    )
    return randomize_(BertForSequenceClassification(config))


@pytest.fixture(scope="session")
def bert_export(tmp_path_factory, tiny_bert):
    """The tiny classifier exported (fused) from a copy whose forward is autocast-wrapped, as after bf16 training."""
    import copy

    from modelcore.exporters import export_onnx

    wrapped = wrap_forward_in_autocast(copy.copy(tiny_bert))
    return export_onnx(wrapped, tmp_path_factory.mktemp("bert-onnx"), **MEASURE)


@pytest.fixture(scope="session")
def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=None,
    )
    return randomize_(LlamaForCausalLM(config))


@pytest.fixture(scope="session")
def llama_export(tmp_path_factory, tiny_llama):
    """The tiny Llama exported with KV-cache inputs/outputs."""
    from modelcore.exporters import export_onnx

    return export_onnx(tiny_llama, tmp_path_factory.mktemp("llama-onnx"), with_past=True, **MEASURE)


def padded_batch(b: int, t: int, vocab: int, seed: int = 0, side: str = "right") -> dict[str, torch.Tensor]:
    """(B, T) ids and a mask whose rows have decreasing lengths, padded on ``side``."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (b, t), generator=generator)
    mask = torch.zeros(b, t, dtype=torch.long)
    for row in range(b):
        n = max(1, t - 3 * row)
        if side == "right":
            mask[row, :n] = 1
        else:
            mask[row, t - n :] = 1
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}
