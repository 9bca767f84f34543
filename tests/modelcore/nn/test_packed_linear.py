"""Decoding through prepacked linear weights: same tokens as the generic kernel, safe to share across threads."""

from __future__ import annotations

import copy
import logging
import re
import threading

import pytest
import torch

from modelcore import LlamaConfig, LlamaForCausalLM
from modelcore.models.llama import modeling_llama
from modelcore.nn import native, packed_linear
from modelcore.nn.packed_linear import ENV_SWITCH, packed_decoding, release_packed_weights
from tests.modelcore.nn.test_native import untiled

# Every projection and the head are at least MIN_WEIGHT_ELEMENTS, so all of them are packed.
CONFIG = dict(
    vocab_size=1024,
    hidden_size=512,
    intermediate_size=1024,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=False,
)
LINEARS_PER_LAYER = 7


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**CONFIG)).eval()


def left_padded_prompts(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, 9) prompts of unequal lengths, padded on the left with id 0."""
    generator = torch.Generator().manual_seed(batch)
    ids = torch.randint(3, CONFIG["vocab_size"], (batch, 9), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(batch):
        mask[row, : row % 4] = 0
    return ids.masked_fill(mask == 0, 0), mask


def greedy(model: LlamaForCausalLM, batch: int, new_tokens: int = 12) -> torch.Tensor:
    ids, mask = left_padded_prompts(batch)
    return model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)


def unpacked(monkeypatch: pytest.MonkeyPatch, call):
    with monkeypatch.context() as patch:
        patch.setenv(ENV_SWITCH, "0")
        return call()


def test_every_eligible_linear_is_packed(model: LlamaForCausalLM) -> None:
    with packed_decoding(model) as packed:
        assert packed is not None
        assert set(packed.packed) == {m for m in model.modules() if isinstance(m, torch.nn.Linear)}
        assert len(packed.packed) == LINEARS_PER_LAYER * CONFIG["num_hidden_layers"] + 1


@pytest.mark.parametrize("batch", [4, 6])
def test_batched_greedy_gives_the_tokens_of_the_generic_kernel(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    expected = unpacked(monkeypatch, lambda: greedy(model, batch))
    assert torch.equal(greedy(model, batch), expected)


def test_logits_through_packed_weights_match(model: LlamaForCausalLM) -> None:
    ids, mask = left_padded_prompts(5)
    with torch.inference_mode():
        reference = model(ids, attention_mask=mask).logits
        with packed_decoding(model) as packed:
            assert packed is not None
            logits = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
    assert not torch.equal(logits, reference)  # another kernel really ran (its sums round differently)


def test_a_weight_changed_in_place_is_packed_again(model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch) -> None:
    before = greedy(model, 4)
    head = model.lm_head.weight
    saved = head.detach().clone()
    try:
        with torch.no_grad():
            head[:, :] = head.flip(0)  # same storage, new values: only the version counter tells
        after = greedy(model, 4)
        assert not torch.equal(after, before)
        assert torch.equal(after, unpacked(monkeypatch, lambda: greedy(model, 4)))
    finally:
        with torch.no_grad():
            head.copy_(saved)


def test_a_hooked_layer_keeps_its_forward(model: LlamaForCausalLM) -> None:
    calls = []
    handle = model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda *args: calls.append(1))
    try:
        with packed_decoding(model) as packed:
            assert packed is not None and model.model.layers[0].self_attn.q_proj not in packed.packed
        greedy(model, 4, new_tokens=5)
    finally:
        handle.remove()
    assert len(calls) == 5  # the prompt pass and 4 decode steps each ran the hooked module


def test_threads_sharing_the_model_get_their_own_results(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = [1, 4, 5, 8, 4, 2]
    expected = {batch: unpacked(monkeypatch, lambda b=batch: greedy(model, b)) for batch in set(batches)}
    release_packed_weights(model)
    results: dict[int, list[torch.Tensor]] = {batch: [] for batch in batches}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(batches))

    def run(batch: int) -> None:
        try:
            barrier.wait()
            results[batch].append(greedy(model, batch))
        except BaseException as error:  # reported below, with the thread's batch size
            errors.append(error)

    threads = [threading.Thread(target=run, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    for batch, outputs in results.items():
        assert outputs and all(torch.equal(output, expected[batch]) for output in outputs), batch


def test_the_switch_turns_packing_off(model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SWITCH, "off")
    with packed_decoding(model) as packed:
        assert packed is None


def short_of_memory_for_a_copy(model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the model's packing and report as much free memory as its linear weights take (a copy needs twice)."""
    release_packed_weights(model)
    weight_bytes = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, torch.nn.Linear))
    monkeypatch.setattr(packed_linear, "_available_memory", lambda: weight_bytes)


def test_not_packed_without_the_memory_for_a_copy(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    short_of_memory_for_a_copy(model, monkeypatch)
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    with caplog.at_level(logging.INFO, logger=packed_linear.__name__), packed_decoding(model) as packed:
        assert packed is None
    assert "without packed weights" in caplog.text and "MB are available" in caplog.text
    assert model not in packed_linear._packed_by_model  # no decision kept: the next call looks at the memory again
    release_packed_weights(model)


def test_bf16_weights_are_packed_where_onednn_has_bf16_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG)).to(torch.bfloat16).eval()
    monkeypatch.setenv(packed_linear.ENV_MIN_ROWS, "1")
    ids, mask = left_padded_prompts(5)
    with torch.inference_mode():
        reference = model(ids, attention_mask=mask).logits
        with packed_decoding(model) as packed, torch.profiler.profile() as profile:
            assert (packed is not None) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
            logits = model(ids, attention_mask=mask).logits
    if packed is not None:
        assert all(weight.dtype == torch.bfloat16 for weight in packed.packed.values())
        torch.testing.assert_close(logits, reference, rtol=5e-2, atol=5e-2)
        ran = [event.count for event in profile.key_averages() if event.key == "mkldnn::_linear_pointwise"]
        assert ran == [LINEARS_PER_LAYER * CONFIG["num_hidden_layers"] + 1]  # every layer through its packed weight


def test_a_forward_that_records_gradients_keeps_the_generic_kernel(model: LlamaForCausalLM) -> None:
    ids, mask = left_padded_prompts(4)
    with packed_decoding(model) as packed:
        assert packed is not None
        logits = model(ids, attention_mask=mask).logits
    logits.sum().backward()
    assert model.lm_head.weight.grad is not None and model.model.layers[0].mlp.up_proj.weight.grad is not None
    model.zero_grad(set_to_none=True)


def one_row_logits(model: LlamaForCausalLM) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of a one-row forward inside a packing scope, the same forward outside any scope)."""
    ids, mask = left_padded_prompts(1)
    ids, mask = ids[:, -1:], mask[:, -1:]  # one token: one input row per linear layer
    with torch.inference_mode():
        reference = model(ids, attention_mask=mask).logits
        with packed_decoding(model) as packed:
            assert packed is not None
            return model(ids, attention_mask=mask).logits, reference


@pytest.mark.parametrize(("setting", "rows"), [("1", 1), ("4", 4), ("9", 9)])
def test_the_row_count_setting_decides_without_timing(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch, setting: str, rows: int
) -> None:
    release_packed_weights(model)
    monkeypatch.setenv(packed_linear.ENV_MIN_ROWS, setting)
    monkeypatch.setattr(packed_linear, "CALIBRATION_PASSES", None)  # timing would fail on range(None)
    with packed_decoding(model) as packed:
        assert packed is not None and packed.min_rows == rows
    logits, reference = one_row_logits(model)
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(logits, reference) == (rows > 1)  # one row through the packed weights only from 1 up
    release_packed_weights(model)


@pytest.mark.parametrize("setting", ["0", "-1", "two", "1.5"])
def test_a_bad_row_count_setting_is_an_error_naming_it(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    release_packed_weights(model)
    monkeypatch.setenv(packed_linear.ENV_MIN_ROWS, setting)
    with (
        pytest.raises(ValueError, match=f"{packed_linear.ENV_MIN_ROWS}='{re.escape(setting)}'"),
        packed_decoding(model),
    ):
        pass


@pytest.mark.parametrize(
    ("gain", "slowdown", "rows"), [(1e9, 0.0, 1), (0.0, 1e9, packed_linear.MIN_ROWS), (0.0, 0.0, None)]
)
def test_timing_decides_from_how_many_rows_weights_are_packed(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch, gain: float, slowdown: float, rows: int | None
) -> None:
    """Packed from one row when the packed pass is fast enough, else from MIN_ROWS unless slower there, else never
    (1e9 lets any timing pass, 0 none); the decision stays with the model: the next call does not time again."""
    release_packed_weights(model)
    monkeypatch.delenv(packed_linear.ENV_MIN_ROWS, raising=False)
    monkeypatch.setenv(native.ENV_SWITCH, "0")  # the packed weights against the generic kernel only
    monkeypatch.setattr(packed_linear, "SINGLE_ROW_GAIN", gain)
    monkeypatch.setattr(packed_linear, "MANY_ROWS_SLOWDOWN", slowdown)
    with packed_decoding(model) as packed:
        assert (packed is None) if rows is None else (packed is not None and packed.min_rows == rows)
    monkeypatch.setattr(packed_linear, "CALIBRATION_PASSES", None)  # timing again would fail on range(None)
    with packed_decoding(model) as again:
        assert again is packed
    if rows is None:
        expected = unpacked(monkeypatch, lambda: greedy(model, 4))
        assert torch.equal(greedy(model, 4), expected)  # decodes as without packing
    release_packed_weights(model)


def test_batch_one_greedy_through_packed_weights_gives_the_generic_tokens(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = unpacked(monkeypatch, lambda: greedy(model, 1, new_tokens=16))
    release_packed_weights(model)
    monkeypatch.setenv(packed_linear.ENV_MIN_ROWS, "1")
    assert torch.equal(greedy(model, 1, new_tokens=16), expected)
    release_packed_weights(model)


def fake_timing(monkeypatch: pytest.MonkeyPatch, seconds: dict[tuple[int, str], float]) -> list:
    """Make the calibration report ``seconds`` for each (rows, kernel) case; returns the cases it was asked for."""
    asked: list = []

    def time_cases(timed, packed, cases):
        asked.extend(cases)
        return {case: seconds[case] for case in cases}

    monkeypatch.setattr(packed_linear, "_time", time_cases)
    monkeypatch.delenv(packed_linear.ENV_MIN_ROWS, raising=False)
    return asked


NATIVE_FASTEST = {(1, "generic"): 10, (1, "packed"): 6, (1, "native"): 4, (4, "generic"): 10, (4, "packed"): 5}
needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler: the native kernel is not built")


@needs_native
@pytest.mark.parametrize(
    ("one_row", "four_rows", "native_used", "min_rows"),
    [
        ({"generic": 10, "packed": 6, "native": 4}, {"generic": 10, "packed": 5}, True, packed_linear.MIN_ROWS),
        ({"generic": 10, "packed": 6, "native": 4}, {"generic": 5, "packed": 10}, True, None),  # copy dropped
        ({"generic": 10, "packed": 4, "native": 6}, {"generic": 10, "packed": 5}, False, 1),  # packed fastest
        ({"generic": 10, "packed": 9, "native": 9}, {"generic": 10, "packed": 5}, False, packed_linear.MIN_ROWS),
        ({"generic": 10, "packed": 9, "native": 9}, {"generic": 5, "packed": 10}, False, None),  # nothing pays
    ],
)
def test_timing_decides_which_kernel_takes_one_to_three_rows(
    model: LlamaForCausalLM,
    monkeypatch: pytest.MonkeyPatch,
    one_row: dict,
    four_rows: dict,
    native_used: bool,
    min_rows: int | None,
) -> None:
    """The native kernel takes fewer than MIN_ROWS rows when it is the fastest and clearly faster than the
    generic one; the packed weights are kept for MIN_ROWS rows up only where they pay there."""
    release_packed_weights(model)
    asked = fake_timing(
        monkeypatch,
        {(1, k): v for k, v in one_row.items()} | {(packed_linear.MIN_ROWS, k): v for k, v in four_rows.items()},
    )
    with packed_decoding(model) as packed:
        if not native_used and min_rows is None:
            assert packed is None
        else:
            assert packed is not None
            assert (packed.native == {m for m in model.modules() if type(m) is torch.nn.Linear}) == native_used
            assert bool(packed.native) == native_used
            assert (packed.min_rows if packed.packed else None) == min_rows
    assert (1, "native") in asked
    release_packed_weights(model)


@needs_native
@pytest.mark.parametrize("batch", [1, 3])
def test_greedy_through_the_native_kernel_gives_the_generic_tokens(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    expected = unpacked(monkeypatch, lambda: greedy(model, batch, new_tokens=16))
    release_packed_weights(model)
    fake_timing(monkeypatch, NATIVE_FASTEST)
    calls, layers = [], []
    kernel, step = native.unchecked_tiled_linear, modeling_llama.decoder_step
    monkeypatch.setattr(native, "unchecked_tiled_linear", lambda *args: calls.append(args[0].shape) or kernel(*args))
    monkeypatch.setattr(modeling_llama, "decoder_step", lambda *args: layers.append(step(*args)) or layers[-1])
    assert torch.equal(greedy(model, batch, new_tokens=16), expected)
    # the 15 decode steps after the prompt: the 2 layers in one call of native code (their 7 projections
    # included), then the head through its tiled copy, one row per sequence; and the prompt pass's head, which takes
    # only the last position
    assert len(layers) == 15 and all(out is not None for out in layers)
    assert len(calls) == 15 + 1
    assert all(shape[:-1].numel() == batch for shape in calls)
    release_packed_weights(model)


@needs_native
def test_the_native_kernel_needs_no_copy(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the memory for a packed copy, one row still goes through the native kernel (it reads in place)."""
    short_of_memory_for_a_copy(model, monkeypatch)
    asked = fake_timing(monkeypatch, {(1, "generic"): 10, (1, "native"): 4})
    with caplog.at_level(logging.INFO, logger=packed_linear.__name__), packed_decoding(model) as packed:
        assert packed is not None and packed.packed == {} and len(packed.native) == 2 * LINEARS_PER_LAYER + 1
    assert asked == [(1, "generic"), (1, "native")] and "without packed weights" in caplog.text
    logits, reference = one_row_logits(model)
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
    release_packed_weights(model)


@needs_native
def test_the_native_kernel_reads_a_tiled_copy(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The native kernel reads its own tiled copy of the weights (the model keeps its own); the copy follows a
    weight changed in place."""
    release_packed_weights(model)
    fake_timing(monkeypatch, NATIVE_FASTEST)
    with caplog.at_level(logging.INFO, logger=packed_linear.__name__), packed_decoding(model) as packed:
        assert packed is not None and set(packed.native_weights) == packed.native
        for module, copy in packed.native_weights.items():
            assert torch.equal(untiled(copy, *module.weight.shape), module.weight)
            assert copy.data_ptr() % 64 == 0 and copy.is_contiguous()
    assert "reads a tiled copy of 15 weights" in caplog.text
    expected = unpacked(monkeypatch, lambda: greedy(model, 1))
    assert torch.equal(greedy(model, 1), expected)

    head = model.lm_head.weight
    saved = head.detach().clone()
    try:
        with torch.no_grad():
            head[:, :] = head.flip(0)  # same storage, new values: the copy must be made again
        changed = unpacked(monkeypatch, lambda: greedy(model, 1))
        assert not torch.equal(changed, expected)
        assert torch.equal(greedy(model, 1), changed)
    finally:
        with torch.no_grad():
            head.copy_(saved)
    release_packed_weights(model)


@needs_native
@pytest.mark.parametrize("why", ["switched off", "short of memory"])
def test_without_a_copy_the_native_kernel_reads_in_place(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    release_packed_weights(model)
    fake_timing(monkeypatch, NATIVE_FASTEST)
    if why == "switched off":
        monkeypatch.setenv(packed_linear.ENV_NATIVE_COPY, "0")
    if why == "short of memory":
        short_of_memory_for_a_copy(model, monkeypatch)
    with packed_decoding(model) as packed:
        assert packed is not None and packed.native and packed.native_weights == {}
    logits, reference = one_row_logits(model)
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
    release_packed_weights(model)


@needs_native
def test_the_native_switch_keeps_it_out_of_the_timing(model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch) -> None:
    release_packed_weights(model)
    monkeypatch.setenv(native.ENV_SWITCH, "off")
    asked = fake_timing(monkeypatch, {(1, "generic"): 10, (1, "packed"): 6, (4, "generic"): 10, (4, "packed"): 5})
    with packed_decoding(model) as packed:
        assert packed is not None and not packed.native and packed.min_rows == 1
    assert all(kernel != "native" for _, kernel in asked)
    release_packed_weights(model)


@needs_native
def test_a_compiled_static_cache_decode_calls_the_native_kernel(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under torch.compile the layers that chose the native kernel call it as an operator: one graph for the prompt,
    one for the one-token step (no break around the kernel), the generic kernel's tokens."""
    from torch._dynamo.utils import counters

    ids, mask = left_padded_prompts(1)
    options = dict(attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    expected = unpacked(monkeypatch, lambda: model.generate(ids, **options))
    compiled = copy.deepcopy(model)
    compiled.forward = torch.compile(compiled.forward, backend="aot_eager", dynamic=False)
    fake_timing(monkeypatch, NATIVE_FASTEST)
    calls = []
    kernel = native.unchecked_linear
    monkeypatch.setattr(native, "unchecked_linear", lambda *args: calls.append(args[0].shape) or kernel(*args))
    torch._dynamo.reset()
    counters.clear()
    try:
        assert torch.equal(compiled.generate(ids, cache_implementation="static", **options), expected)
        assert counters["frames"]["ok"] == 2
    finally:
        torch._dynamo.reset()
        release_packed_weights(compiled)
    layers = LINEARS_PER_LAYER * CONFIG["num_hidden_layers"] + 1
    assert len(calls) >= 11 * layers and all(shape[:-1].numel() == 1 for shape in calls)


@needs_native
def test_an_export_after_native_decoding_keeps_aten_ops(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.export (which the ONNX export builds on) of a model that decoded through the native kernel: the graph
    has the plain linear, not modelcore's operator, which no exporter knows."""
    release_packed_weights(model)
    fake_timing(monkeypatch, NATIVE_FASTEST)
    greedy(model, 1, new_tokens=2)
    assert packed_linear._chose_native(model.lm_head)  # the choice the compiled path reads
    ids = left_padded_prompts(1)[0][:, -1:]

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids, use_cache=False).logits

    with torch.no_grad():
        exported = torch.export.export(Logits(), (ids,), strict=False)
    graph = str(exported.graph)
    assert "native_linear" not in graph and "aten.linear" in graph
    release_packed_weights(model)
    assert not packed_linear._chose_native(model.lm_head)
