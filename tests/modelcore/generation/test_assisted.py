"""Assisted decoding: the output equals plain greedy decoding, and agreeing drafts save target passes."""

from __future__ import annotations

import copy

import pytest
import torch

from modelcore.models.llama import LlamaConfig, LlamaForCausalLM
from tests.modelcore.models.test_llama import TINY, batch

T = 6


@pytest.fixture(scope="module")
def target() -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)  # peaked distributions: greedy choices are far from ties
    return model


def noisy_copy(model: LlamaForCausalLM, scale: float, seed: int) -> LlamaForCausalLM:
    """A draft that agrees with ``model`` on some tokens and not others."""
    draft = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return draft


class PassCounter:
    """Counts forward passes of a module (a real forward hook)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.count = 0
        self.handle = module.register_forward_hook(self.hook)

    def hook(self, *args: object) -> None:
        self.count += 1


@pytest.mark.parametrize("scale", [0.0, 0.1, 0.3, None], ids=["same", "close", "far", "other-model"])
@pytest.mark.parametrize(
    "options", [dict(), dict(repetition_penalty=1.3, num_assistant_tokens=3)], ids=["plain", "processors"]
)
def test_assisted_output_equals_plain_greedy(target, scale, options):
    if scale is None:  # an unrelated, smaller draft: one layer, its own random weights
        torch.manual_seed(1)
        draft = LlamaForCausalLM(LlamaConfig(**{**TINY, "num_hidden_layers": 1})).eval()
    else:
        draft = noisy_copy(target, scale, seed=2)
    for seed in range(3):
        ids = batch(seed=seed, b=1, t=T)
        plain = target.generate(ids, max_new_tokens=24, eos_token_id=None, **options)
        assisted = target.generate(ids, max_new_tokens=24, eos_token_id=None, assistant_model=draft, **options)
        assert torch.equal(assisted, plain)


def test_assisted_stops_at_eos_and_max_length_like_plain_greedy(target):
    draft = noisy_copy(target, 0.1, seed=3)
    ids = batch(seed=4, b=1, t=T)
    free = target.generate(ids, max_new_tokens=20, eos_token_id=None)
    eos = int(free[0, T + 7])
    plain = target.generate(ids, max_new_tokens=20, eos_token_id=eos)
    assert torch.equal(target.generate(ids, max_new_tokens=20, eos_token_id=eos, assistant_model=draft), plain)
    assert plain.shape[1] <= T + 8
    got = target.generate(ids, max_length=T + 9, eos_token_id=None, assistant_model=draft, num_assistant_tokens=4)
    assert torch.equal(got, free[:, : T + 9])


def test_an_agreeing_draft_needs_one_target_pass_per_round(target):
    ids = batch(seed=5, b=1, t=T)
    counter = PassCounter(target)
    target.generate(ids, max_new_tokens=24, eos_token_id=None)
    plain_passes, counter.count = counter.count, 0
    target.generate(
        ids,
        max_new_tokens=24,
        eos_token_id=None,
        assistant_model=copy.deepcopy(target),
        num_assistant_tokens=5,
        assistant_confidence_threshold=0.0,  # a random tiny model is unsure of everything: draft all 5 anyway
    )
    assert plain_passes == 24
    assert counter.count == 4  # 24 tokens = 4 rounds of 5 accepted + 1 of the target's own
    counter.handle.remove()


def test_an_unsure_draft_stops_drafting_early_and_the_output_is_unchanged(target):
    ids = batch(seed=6, b=1, t=T)
    plain = target.generate(ids, max_new_tokens=16, eos_token_id=None)
    draft = noisy_copy(target, 0.3, seed=7)
    passes = {}
    for threshold in (0.0, 0.99):
        counter = PassCounter(draft)
        got = target.generate(
            ids,
            max_new_tokens=16,
            eos_token_id=None,
            assistant_model=draft,
            num_assistant_tokens=8,
            assistant_confidence_threshold=threshold,
        )
        counter.handle.remove()
        assert torch.equal(got, plain)
        passes[threshold] = counter.count
    assert passes[0.99] < passes[0.0]  # each round drafts one token, not eight


def test_the_confidence_threshold_is_validated():
    from modelcore.errors import ConfigError
    from modelcore.generation.configuration import GenerationConfig

    with pytest.raises(ConfigError, match="assistant_confidence_threshold"):
        GenerationConfig(assistant_confidence_threshold=1.5)


def test_assisted_decoding_refuses_what_it_cannot_do(target):
    ids = batch(seed=5, b=2, t=T)
    with pytest.raises(ValueError, match="batch size 1"):
        target.generate(ids, assistant_model=target)
    with pytest.raises(ValueError, match="greedy"):
        target.generate(ids[:1], assistant_model=target, do_sample=True)
    other = LlamaForCausalLM(LlamaConfig(**{**TINY, "vocab_size": 96})).eval()
    with pytest.raises(ValueError, match="vocab_size \\(96\\)"):
        target.generate(ids[:1], assistant_model=other)
