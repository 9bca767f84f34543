"""Tiny seeded models built in the tests, shared by the checkpoint and fault tests."""

from __future__ import annotations

import torch

from modelcore import LlamaConfig, LlamaForCausalLM


def tiny_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A seeded 2-layer Llama (grouped-query attention, untied head) that saves in milliseconds.

    Args:
        seed: the weights' seed; another seed gives other values of the same shapes.
        **overrides: LlamaConfig fields replacing the tiny defaults.
    """
    torch.manual_seed(seed)
    fields = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(LlamaConfig(**(fields | overrides)))
