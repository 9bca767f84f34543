"""Static (preallocated) KV cache: same tokens and logits as the dynamic cache and transformers, one compile per shape."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from modelcore.errors import ConfigError
from modelcore.generation.utils import StaticCacheStep
from modelcore.nn.cache import DynamicCache, StaticCache
from tests.modelcore.generation.test_decoding import prompts
from tests.modelcore.models.test_llama import TINY, make_pair

transformers = pytest.importorskip("transformers")

NEW_TOKENS = 10


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def pair(request):
    """(ours, hf) tiny grouped-query Llama (4 query heads, 2 key/value heads) with the same weights."""
    return make_pair(dict(TINY), attn_implementation=request.param)


def test_static_cache_greedy_equals_dynamic_cache_and_transformers_on_left_padded_batch(pair):
    ours, hf = pair
    ids, mask = prompts()
    common = dict(attention_mask=mask, max_new_tokens=NEW_TOKENS, pad_token_id=0)
    static = ours.generate(ids, cache_implementation="static", **common)
    dynamic = ours.generate(ids, **common)
    expected = hf.generate(ids, do_sample=False, **common)
    assert static.shape == (3, ids.shape[1] + NEW_TOKENS)
    assert torch.equal(static, dynamic)
    assert torch.equal(static, expected)


def test_static_cache_sampling_equals_dynamic_cache_for_the_same_seed(pair):
    ours, _ = pair
    ids, mask = prompts()
    common = dict(attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=True, top_k=0, pad_token_id=0)
    torch.manual_seed(5)
    static = ours.generate(ids, cache_implementation="static", **common)
    torch.manual_seed(5)
    dynamic = ours.generate(ids, **common)
    assert torch.equal(static, dynamic)


@torch.inference_mode()
def test_static_cache_logits_equal_dynamic_cache_and_full_forward_at_every_step(pair):
    ours, _ = pair
    sequences, mask = prompts()
    static_step = StaticCacheStep(ours, len(sequences), sequences.shape[1] + NEW_TOKENS, sequences.device)
    past = None
    for _ in range(NEW_TOKENS):
        got, _ = static_step(sequences, mask, None)
        expected, past = ours.generation_step(sequences, mask, past)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        full = ours(input_ids=sequences, attention_mask=mask, position_ids=positions, use_cache=False).logits[:, -1]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-5)
        next_tokens = got.argmax(-1, keepdim=True)
        sequences = torch.cat([sequences, next_tokens], dim=-1)
        mask = torch.cat([mask, torch.ones_like(next_tokens)], dim=-1)
    assert static_step.seen == sequences.shape[1] - 1


@torch.inference_mode()
def test_forward_with_a_static_cache_and_no_cache_position_reads_the_fill_level(pair):
    """Eager callers may omit cache_position: the model derives it from the cache, as with a dynamic cache."""
    ours, _ = pair
    ids, mask = prompts()
    static, dynamic = StaticCache(ours.config, 3, ids.shape[1] + 2), DynamicCache()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    for cache in (static, dynamic):
        ours(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache)
    assert static.get_seq_length() == dynamic.get_seq_length() == ids.shape[1]
    step = torch.tensor([[5], [6], [7]])
    longer = torch.cat([mask, torch.ones_like(step)], dim=-1)
    next_positions = positions[:, -1:] + 1
    got, expected = (
        ours(input_ids=step, attention_mask=longer, position_ids=next_positions, past_key_values=cache).logits
        for cache in (static, dynamic)
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    static.reset()
    assert static.get_seq_length() == 0


@pytest.mark.parametrize(("rows", "backend"), [(3, "inductor"), (1, "aot_eager")], ids=["batch3", "batch1"])
def test_compiled_forward_with_static_cache_compiles_once_for_prompt_and_once_for_decode(rows, backend):
    """A compiled forward over the static cache does not recompile per token (dynamic=False: shapes must not move)."""
    ours, _ = make_pair(dict(TINY))
    ids, mask = (part[-rows:] for part in prompts())  # batch1: the 2-token, left-padded prompt
    common = dict(attention_mask=mask, max_new_tokens=NEW_TOKENS, pad_token_id=0, cache_implementation="static")
    expected = ours.generate(ids, **common)
    compiled = copy.deepcopy(ours)
    compiled.forward = torch.compile(compiled.forward, backend=backend, dynamic=False)
    torch._dynamo.reset()
    counters.clear()
    got = compiled.generate(ids, **common)
    assert torch.equal(got, expected)
    assert counters["frames"]["ok"] == 2  # the prompt's graph and the one-token step's graph, for 10 tokens
    with torch._dynamo.config.patch(error_on_recompile=True):  # a second generation reuses both graphs
        again = compiled.generate(ids, **common)
    assert torch.equal(again, expected)
    assert counters["frames"]["ok"] == 2
    torch._dynamo.reset()


def test_static_cache_refuses_beam_search_and_assisted_decoding(pair):
    ours, _ = pair
    ids, mask = prompts()
    with pytest.raises(ValueError, match="beam search and assisted"):
        ours.generate(ids, attention_mask=mask, max_new_tokens=3, num_beams=2, cache_implementation="static")
    with pytest.raises(ValueError, match="beam search and assisted"):
        ours.generate(ids[:1], max_new_tokens=3, assistant_model=ours, cache_implementation="static")


def test_unknown_cache_implementation_is_a_config_error(pair):
    ours, _ = pair
    ids, mask = prompts()
    with pytest.raises(ConfigError, match="cache_implementation must be None, 'dynamic' or 'static', got 'paged'"):
        ours.generate(ids, attention_mask=mask, max_new_tokens=3, cache_implementation="paged")


def test_static_cache_update_needs_cache_position_and_writes_in_place():
    config = type("Config", (), dict(num_hidden_layers=1, num_key_value_heads=2, head_dim=4))()
    cache = StaticCache(config, max_batch_size=1, max_cache_len=5)
    key, value = torch.ones(1, 2, 2, 4), torch.full((1, 2, 2, 4), 2.0)
    with pytest.raises(ValueError, match="needs cache_position"):
        cache.update(key, value, 0)
    buffer = cache.keys[0]
    keys, values = cache.update(key, value, 0, torch.tensor([1, 2]))
    assert keys is buffer and keys.shape == (1, 2, 5, 4)
    assert keys[0, 0, :, 0].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert values[0, 0, :, 0].tolist() == [0.0, 2.0, 2.0, 0.0, 0.0]
