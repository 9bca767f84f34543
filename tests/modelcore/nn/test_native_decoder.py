"""A decoder layer's decode step in native code: the torch layer's logits and greedy tokens on several shapes,
masks and caches, and the torch layer wherever the native path does not apply."""

from __future__ import annotations

import threading

import pytest
import torch

from modelcore import LlamaConfig, LlamaForCausalLM
from modelcore.models.llama import modeling_llama
from modelcore.nn import native, native_decoder, packed_linear
from modelcore.nn.cache import DynamicCache, StaticCache
from modelcore.nn.packed_linear import packed_decoding, release_packed_weights
from tests.modelcore.nn.test_packed_linear import NATIVE_FASTEST, fake_timing

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler: the native kernel is not built")

SHAPES = {
    "gqa": dict(hidden_size=512, intermediate_size=1024, num_attention_heads=4, num_key_value_heads=2),
    "mha-with-biases": dict(
        hidden_size=512,
        intermediate_size=768,
        num_attention_heads=8,
        num_key_value_heads=8,
        attention_bias=True,
        mlp_bias=True,
    ),
    # 520 and 1004 are not whole vectors or blocks of rows: the C code's tails; heads of 130
    "odd-sizes": dict(hidden_size=520, intermediate_size=1004, num_attention_heads=4, num_key_value_heads=2),
    "12-heads-of-64": dict(hidden_size=768, intermediate_size=1536, num_attention_heads=12, num_key_value_heads=4),
    # SmolLM2-135M's: its key/value projections (576 x 192) are below packed_linear.MIN_WEIGHT_ELEMENTS (not packed)
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3),
}


def make_model(shape: str, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(len(shape))
    config = LlamaConfig(vocab_size=1024, num_hidden_layers=2, tie_word_embeddings=False, **SHAPES[shape], **overrides)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1, so that a wrong norm weight shows
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
    return model


def prompts(batch: int, padded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(batch)
    ids = torch.randint(3, 1024, (batch, 11), generator=generator)
    mask = torch.ones_like(ids)
    if padded:
        for row in range(batch):
            mask[row, : 3 * row] = 0
    return ids.masked_fill(mask == 0, 0), mask


class NativeLayers:
    """Counts the decoder layers that ran natively (``ran``) and the native calls (``calls``: one per step when
    the model's whole stack qualifies); ``off()`` makes every layer run its torch ops."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch, self.ran, self.calls = monkeypatch, 0, 0
        step = modeling_llama.decoder_step

        def counting(layers, *args):
            out = step(layers, *args)
            self.ran += 0 if out is None else len(layers)
            self.calls += out is not None
            return out

        monkeypatch.setattr(modeling_llama, "decoder_step", counting)

    def off(self):
        return self.monkeypatch.context()


@pytest.fixture
def native_chosen(monkeypatch: pytest.MonkeyPatch) -> NativeLayers:
    """Every model's packing chooses the native kernel (as the timing does on the Zen 4 measured)."""
    fake_timing(monkeypatch, NATIVE_FASTEST)
    return NativeLayers(monkeypatch)


def one_step_logits(model: LlamaForCausalLM, batch: int, padded: bool, static: bool, native_path: bool):
    """Logits of one decode step after an 11-token prompt (the prompt through torch), in a packed_decoding scope."""
    ids, mask = prompts(batch, padded)
    cache = StaticCache(model.config, batch, 16) if static else DynamicCache()
    position = torch.arange(11)
    with torch.inference_mode():
        prompt = model(ids, attention_mask=mask, past_key_values=cache, cache_position=position if static else None)
        token = prompt.logits[:, -1:].argmax(-1)
        mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype)], dim=1)
        step = {"past_key_values": cache, "position_ids": mask.sum(-1, keepdim=True) - 1}
        if static:
            step |= {"cache_position": torch.tensor([11]), "attention_mask": torch.cat([mask, mask[:, :4] * 0], 1)}
        else:
            step["attention_mask"] = mask
        with packed_decoding(model):
            if not native_path:
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(modeling_llama, "decoder_step", lambda *args: None)
                    return model(token, **step).logits
            return model(token, **step).logits


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize(("batch", "padded"), [(1, False), (2, False), (3, True)])
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("layout", ["tiled copy", "in place"])
def test_a_decode_step_gives_the_torch_layers_logits(
    native_chosen: NativeLayers, monkeypatch: pytest.MonkeyPatch, shape: str, batch: int, padded: bool, static: bool,
    layout: str,
) -> None:  # fmt: skip
    if layout == "in place":
        monkeypatch.setenv(packed_linear.ENV_NATIVE_COPY, "0")
    model = make_model(shape)
    expected = one_step_logits(model, batch, padded, static, native_path=False)
    assert native_chosen.ran == 0
    got = one_step_logits(model, batch, padded, static, native_path=True)
    assert native_chosen.ran == model.config.num_hidden_layers
    (stack,) = packed_linear._packed_by_model[model].decoder_plans.values()
    assert {plan.layer.tiled for plan in stack.plans} == {int(layout == "tiled copy")}
    assert stack.final is not None and stack.final[0] is model.model.norm.weight  # the final norm in C too
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    release_packed_weights(model)


@pytest.mark.parametrize("shape", ["12-heads-of-64", "smollm2-135m", "mha-with-biases"])
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("layout", ["tiled copy", "in place"])
def test_any_thread_count_gives_the_torch_layers_logits(
    native_chosen: NativeLayers, monkeypatch: pytest.MonkeyPatch, shape: str, threads: int, layout: str
) -> None:
    """Threads take whole key/value groups where their rows of the products fall on them (12 heads / 4 key-value
    heads on 1, 2 or 4 threads) and single heads with barriers between where not (3 threads; SmolLM2's 9 / 3)."""
    if layout == "in place":
        monkeypatch.setenv(packed_linear.ENV_NATIVE_COPY, "0")
    model = make_model(shape)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        expected = one_step_logits(model, 3, True, False, native_path=False)
        got = one_step_logits(model, 3, True, False, native_path=True)
    finally:
        torch.set_num_threads(before)
    assert native_chosen.ran == model.config.num_hidden_layers
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    release_packed_weights(model)


@pytest.mark.parametrize(("batch", "padded", "cache"), [(1, False, None), (3, True, None), (2, True, "static")])
def test_greedy_decoding_gives_the_torch_layers_tokens(
    native_chosen: NativeLayers, batch: int, padded: bool, cache: str | None
) -> None:
    model = make_model("gqa")
    ids, mask = prompts(batch, padded)
    options = dict(attention_mask=mask, max_new_tokens=20, do_sample=False, pad_token_id=0, cache_implementation=cache)
    with native_chosen.off() as patch:
        patch.setattr(modeling_llama, "decoder_step", lambda *args: None)
        expected = model.generate(ids, **options)
    assert torch.equal(model.generate(ids, **options), expected)
    assert native_chosen.ran == 19 * model.config.num_hidden_layers  # every step after the prompt, every layer
    assert native_chosen.calls == 19  # the whole stack in one call per step
    release_packed_weights(model)


def test_a_replaced_norm_weight_is_read(native_chosen: NativeLayers) -> None:
    """The layer's plan points at its norms' weights; a norm given a new weight is planned again."""
    model = make_model("gqa")
    one_step_logits(model, 1, False, False, native_path=True)
    with torch.no_grad():
        layer = model.model.layers[1]
        layer.post_attention_layernorm.weight = torch.nn.Parameter(torch.linspace(0.2, 3.0, 512))
    expected = one_step_logits(model, 1, False, False, native_path=False)
    got = one_step_logits(model, 1, False, False, native_path=True)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert native_chosen.ran == 2 * model.config.num_hidden_layers
    release_packed_weights(model)


def test_where_it_does_not_apply_the_torch_layer_runs(native_chosen: NativeLayers) -> None:
    model = make_model("gqa")
    ids, mask = prompts(4, padded=True)
    options = dict(attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    model.generate(ids, **options)  # 4 rows: the packed weights' business, not the native kernel's
    assert native_chosen.ran == 0

    seen = []
    hook = model.model.layers[0].mlp.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    try:
        model.generate(ids[:1], attention_mask=mask[:1], max_new_tokens=4, do_sample=False, pad_token_id=0)
    finally:
        hook.remove()
    assert len(seen) == 4 and native_chosen.ran == 3  # layer 0 (hooked) in torch every step, layer 1 natively
    release_packed_weights(model)

    native_chosen.ran = 0
    model.train()
    with torch.no_grad():
        model.generate(ids[:1], max_new_tokens=4, do_sample=False)
    model.eval()
    assert native_chosen.ran == 0  # training mode: the torch layer (its dropout)
    release_packed_weights(model)

    with torch.inference_mode():  # a decode step asked for attention weights gets them
        out = model(ids[:1, :5], use_cache=True)
        with packed_decoding(model):
            step = model(ids[:1, 5:6], past_key_values=out.past_key_values, output_attentions=True)
    assert native_chosen.ran == 0 and step.attentions[0].shape == (1, 4, 1, 6)
    release_packed_weights(model)

    gelu = make_model("gqa", hidden_act="gelu")
    gelu.generate(ids[:1], max_new_tokens=4, do_sample=False)
    assert native_chosen.ran == 0
    release_packed_weights(gelu)


def test_a_hook_added_after_native_decoding_is_honoured_at_the_next_generate(native_chosen: NativeLayers) -> None:
    """The stack's plan is checked again at each generate call (each new cache): a hook registered between calls,
    or training mode, sends the layers back to torch without any release of the packed weights."""
    model = make_model("gqa")
    ids = prompts(1, False)[0]
    expected = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert native_chosen.calls == 3
    seen = []
    hook = model.model.layers[1].self_attn.register_forward_pre_hook(lambda module, args: seen.append(1))
    try:
        assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), expected)
    finally:
        hook.remove()
    # every step of the second call: layer 1 in torch, layer 0 natively on its own
    assert len(seen) == 4 and native_chosen.calls == 6 and native_chosen.ran == 9
    assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), expected)
    assert native_chosen.calls == 9 and native_chosen.ran == 15  # the hook is gone: the whole stack again
    release_packed_weights(model)


def test_a_final_norm_with_a_hook_runs_in_torch_after_the_native_layers(native_chosen: NativeLayers) -> None:
    model = make_model("gqa")
    expected = one_step_logits(model, 2, False, False, native_path=False)
    seen = []
    hook = model.model.norm.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    try:
        got = one_step_logits(model, 2, False, False, native_path=True)
    finally:
        hook.remove()
    assert native_chosen.ran == model.config.num_hidden_layers and seen[-1] == (2, 1, 512)
    (stack,) = packed_linear._packed_by_model[model].decoder_plans.values()
    assert stack.final is None
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    release_packed_weights(model)


def test_the_native_switch_turns_it_off(native_chosen: NativeLayers, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model("gqa")
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    model.generate(prompts(1, False)[0], max_new_tokens=4, do_sample=False)
    assert native_chosen.ran == 0
    release_packed_weights(model)


def test_threads_sharing_a_model_each_decode_their_own(
    native_chosen: NativeLayers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two threads share one model (one packing, one plan per layer) with different prompts; the plan is checked
    once per generate call's cache, not at each step where the threads take turns."""
    model = make_model("gqa")
    ids = [prompts(1, False)[0], prompts(2, False)[0][1:]]
    expected = [model.generate(x, max_new_tokens=12, do_sample=False) for x in ids]
    results: dict[int, torch.Tensor] = {}
    checks, still_fits = [], native_decoder._still_fits
    monkeypatch.setattr(native_decoder, "_still_fits", lambda *args: checks.append(1) or still_fits(*args))

    def run(index: int) -> None:
        for _ in range(3):
            results[index] = model.generate(ids[index], max_new_tokens=12, do_sample=False)

    threads = [threading.Thread(target=run, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(torch.equal(results[index], expected[index]) for index in (0, 1))
    assert native_chosen.ran > 0 and len(checks) == 6  # 2 threads x 3 generate calls, of 11 steps each
    release_packed_weights(model)


def test_the_layers_read_the_tiled_copies(native_chosen: NativeLayers) -> None:
    model = make_model("gqa")
    model.generate(prompts(1, False)[0], max_new_tokens=3, do_sample=False)
    scope = packed_linear._packed_by_model[model]
    (stack,) = [plan for key, plan in scope.decoder_plans.items() if len(key) > 2]  # the whole stack's
    for plan, layer in zip(stack.plans, model.model.layers, strict=True):
        copies = [scope.native_weights[getattr(layer.self_attn, name)] for name in ("q_proj", "k_proj", "o_proj")]
        assert (plan.layer.wq, plan.layer.wk, plan.layer.wo) == tuple(copy.data_ptr() for copy in copies)
        assert plan.layer.wd == scope.native_weights[layer.mlp.down_proj].data_ptr() and plan.layer.tiled == 1
    assert native_chosen.calls == 2
    release_packed_weights(model)
