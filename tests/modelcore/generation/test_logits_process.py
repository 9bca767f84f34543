"""Each logits processor gives transformers' scores on the same logits and input ids; the registry's order."""

from __future__ import annotations

import pytest
import torch

from modelcore.generation import logits_process as ours
from modelcore.generation.configuration import GenerationConfig
from modelcore.generation.logits_process import ProcessorContext, build_logits_processors

hf = pytest.importorskip("transformers.generation.logits_process")

V = 50


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (4, 12) with repeats, so n-gram and repetition rules bite; scores (4, V) with large spread)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 8, (4, 12), generator=g)  # a small alphabet: repeated n-grams are certain
    scores = torch.randn(4, V, generator=g) * 3
    return ids, scores


CASES = {
    "temperature": (ours.TemperatureLogitsWarper(0.7), lambda: hf.TemperatureLogitsWarper(0.7)),
    "top_k": (ours.TopKLogitsWarper(5), lambda: hf.TopKLogitsWarper(5)),
    "top_k_keep_3": (ours.TopKLogitsWarper(1, 3), lambda: hf.TopKLogitsWarper(1, min_tokens_to_keep=3)),
    "top_p": (ours.TopPLogitsWarper(0.8), lambda: hf.TopPLogitsWarper(0.8)),
    "top_p_tiny": (ours.TopPLogitsWarper(0.01, 2), lambda: hf.TopPLogitsWarper(0.01, min_tokens_to_keep=2)),
    "min_p": (ours.MinPLogitsWarper(0.1), lambda: hf.MinPLogitsWarper(0.1)),
    "typical_p": (ours.TypicalLogitsWarper(0.9), lambda: hf.TypicalLogitsWarper(0.9)),
    "repetition": (ours.RepetitionPenaltyLogitsProcessor(1.3), lambda: hf.RepetitionPenaltyLogitsProcessor(1.3)),
    "repetition_padded": (
        ours.RepetitionPenaltyLogitsProcessor(1.3, torch.tensor([0, 2, 5, 11])),
        lambda: hf.RepetitionPenaltyLogitsProcessor(1.3, prompt_ignore_length=torch.tensor([0, 2, 5, 11])),
    ),
    "no_repeat_2gram": (ours.NoRepeatNGramLogitsProcessor(2), lambda: hf.NoRepeatNGramLogitsProcessor(2)),
    "no_repeat_3gram": (ours.NoRepeatNGramLogitsProcessor(3), lambda: hf.NoRepeatNGramLogitsProcessor(3)),
    "bad_words": (
        ours.NoBadWordsLogitsProcessor([[7], [3, 4], [1, 2, 5], [2]], eos_token_ids=[2]),
        lambda: hf.NoBadWordsLogitsProcessor([[7], [3, 4], [1, 2, 5], [2]], eos_token_id=2),
    ),
    "min_new_tokens": (
        ours.MinNewTokensLengthLogitsProcessor(8, 5, [2, 9]),
        lambda: hf.MinNewTokensLengthLogitsProcessor(8, 5, torch.tensor([2, 9])),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_processor_scores_equal_transformers(name, seed):
    ids, scores = inputs(seed)
    mine, theirs = CASES[name][0], CASES[name][1]()
    got, expected = mine(ids, scores.clone()), theirs(ids, scores.clone())
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # every case changes something on these inputs, so an identity processor would fail here
    assert not torch.equal(got, scores) or name == "min_new_tokens"


def test_min_new_tokens_forbids_eos_only_before_the_minimum():
    ids, scores = inputs()
    early = ours.MinNewTokensLengthLogitsProcessor(8, 5, [2, 9])(ids, scores)  # 4 new tokens < 5
    late = ours.MinNewTokensLengthLogitsProcessor(8, 4, [2, 9])(ids, scores)
    assert torch.isinf(early[:, [2, 9]]).all() and torch.isfinite(early[:, 3]).all()
    assert torch.equal(late, scores)


def test_bad_word_that_is_eos_is_dropped_and_multi_token_words_need_their_prefix():
    ids = torch.tensor([[1, 3], [3, 1]])
    out = ours.NoBadWordsLogitsProcessor([[2], [3, 4]], eos_token_ids=[2])(ids, torch.zeros(2, 6))
    assert torch.isfinite(out[:, 2]).all()  # [2] is the EOS: never banned, generation can end
    assert torch.isinf(out[0, 4]) and torch.isfinite(out[1, 4])  # only row 0 ends with 3


def context() -> ProcessorContext:
    return ProcessorContext(prompt_length=4, padding_lengths=torch.zeros(2, dtype=torch.long))


def test_registry_builds_transformers_order_and_skips_warpers_when_greedy():
    config = GenerationConfig(
        do_sample=True,
        temperature=0.5,
        top_k=10,
        top_p=0.9,
        min_p=0.05,
        typical_p=0.95,
        repetition_penalty=1.2,
        no_repeat_ngram_size=2,
        bad_words_ids=[[5]],
        min_new_tokens=2,
        eos_token_id=1,
    )

    class User(ours.LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores

    built = build_logits_processors(config, context(), [User()])
    assert [type(p).__name__ for p in built] == [
        "RepetitionPenaltyLogitsProcessor",
        "NoRepeatNGramLogitsProcessor",
        "NoBadWordsLogitsProcessor",
        "MinNewTokensLengthLogitsProcessor",
        "User",
        "TemperatureLogitsWarper",
        "TopKLogitsWarper",
        "TopPLogitsWarper",
        "MinPLogitsWarper",
        "TypicalLogitsWarper",
    ]
    greedy = build_logits_processors(config.update(do_sample=False), context())
    assert [type(p).__name__ for p in greedy][-1] == "MinNewTokensLengthLogitsProcessor"
    assert build_logits_processors(GenerationConfig(), context()) == []  # defaults change nothing when greedy


def test_registry_is_keyed_by_the_config_field_that_enables_each_processor():
    fields = {f for f in GenerationConfig.__dataclass_fields__}
    assert set(ours.PROCESSORS) | set(ours.WARPERS) <= fields
    assert set(ours.WARPERS) == {"temperature", "top_k", "top_p", "min_p", "typical_p"}
