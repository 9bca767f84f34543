"""Assisted (speculative) greedy decoding: a small draft model proposes tokens, the target checks them at once.

Each round the draft proposes up to ``num_assistant_tokens`` tokens greedily; the target runs one forward
pass over all of them and keeps the longest prefix that matches its own argmax, plus its own next token.
Every kept token is the target's greedy choice given the tokens before it, so the output equals plain
greedy decoding (up to float ties between a one-token and a many-token forward pass), and each round
costs one target pass however many tokens it accepts. Rejected positions are cropped from both caches.
"""

from __future__ import annotations

from typing import Any

import torch

from modelcore.generation.configuration import GenerationConfig
from modelcore.generation.logits_process import LogitsProcessorList
from modelcore.generation.stopping_criteria import StoppingCriteriaList


def check_assistant(target: Any, draft: Any, config: GenerationConfig, batch_size: int) -> None:
    """Raise ValueError when assisted decoding cannot run these models and settings."""
    from modelcore.generation.utils import GenerationMixin

    if batch_size != 1:
        raise ValueError(f"assisted decoding supports batch size 1 (as transformers), got {batch_size}")
    if config.do_sample or config.num_beams > 1:
        raise ValueError("assisted decoding is greedy here: drop do_sample/num_beams or the assistant_model")
    for role, model in (("model", target), ("assistant_model", draft)):
        if type(model).generation_step is not GenerationMixin.generation_step:
            raise ValueError(f"{role} ({type(model).__name__}) must be an eager model with a KV cache")
    target_vocab, draft_vocab = target.config.vocab_size, draft.config.vocab_size
    if target_vocab != draft_vocab:
        raise ValueError(f"assistant_model's vocab_size ({draft_vocab}) differs from the model's ({target_vocab})")


def assisted_greedy(
    target: Any,
    draft: Any,
    sequences: torch.LongTensor,
    attention_mask: torch.Tensor,
    config: GenerationConfig,
    processors: LogitsProcessorList,
    criteria: StoppingCriteriaList,
    max_length: int,
    streamer: Any = None,
) -> torch.LongTensor:
    """Greedy decoding of one prompt, ``num_assistant_tokens`` drafted tokens verified per target pass.

    Args:
        target: the model whose greedy output this reproduces.
        draft: a smaller model with the same vocabulary.
        sequences: (1, T) the prompt.
        attention_mask: (1, T).
        config: ``num_assistant_tokens`` and the EOS/length settings.
        processors: applied to the target's scores at each position, as in plain greedy decoding.
        criteria: checked after each kept token; the first one met ends generation there.
        max_length: prompt plus new-token budget.
        streamer: gets each kept token.

    Returns:
        (1, T + n) the prompt and the new tokens.
    """
    target_past, draft_past = None, None
    while True:
        room = max_length - sequences.shape[1]
        count = min(config.num_assistant_tokens, room - 1)
        candidates, draft_past = _draft(
            draft, sequences, attention_mask, draft_past, count, config.assistant_confidence_threshold
        )
        proposed = torch.cat([sequences, candidates[None]], dim=-1)
        proposed_mask = torch.cat([attention_mask, attention_mask.new_ones(1, len(candidates))], dim=-1)
        logits, target_past = _verify(target, proposed, proposed_mask, target_past, len(candidates) + 1)
        for i in range(len(candidates) + 1):
            scores = processors(sequences, logits[:, i])
            token = scores.argmax(dim=-1)  # (1,)
            sequences = torch.cat([sequences, token[:, None].to(sequences.dtype)], dim=-1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(1, 1)], dim=-1)
            if streamer is not None:
                streamer.put(token.cpu())
            if criteria(sequences, scores).all():
                return sequences
            if i == len(candidates) or int(token) != int(candidates[i]):
                break  # the target disagreed (or used its bonus token): the draft restarts from here
        # caches hold keys for every proposed position; keep those of the tokens kept, minus the newest
        kept = sequences.shape[1] - 1
        target_past.crop(kept)
        draft_past.crop(kept)  # a no-op when the draft's cache is shorter: it catches up next round


def _draft(
    draft: Any, sequences: torch.LongTensor, attention_mask: torch.Tensor, past: Any, count: int, threshold: float
) -> tuple[torch.LongTensor, Any]:
    """Up to ``count`` greedy tokens (1-D) from the draft model, and its cache.

    Drafting stops after a token whose draft probability is below ``threshold``: the target would likely
    reject what follows it, and each drafted token costs a draft forward pass.
    """
    tokens: list[torch.Tensor] = []
    for _ in range(count):
        logits, past = draft.generation_step(sequences, attention_mask, past)
        confidence, token = logits.float().softmax(dim=-1).max(dim=-1)  # (1,), (1,)
        tokens.append(token)
        sequences = torch.cat([sequences, token[:, None].to(sequences.dtype)], dim=-1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(1, 1)], dim=-1)
        if float(confidence) < threshold:
            break
    if past is None:  # nothing drafted yet: an empty cache, cropped like any other
        from modelcore.nn.cache import DynamicCache

        past = DynamicCache()
    empty = sequences.new_zeros(0)
    return (torch.cat(tokens).to(sequences.dtype) if tokens else empty), past


def _verify(
    target: Any, sequences: torch.LongTensor, attention_mask: torch.Tensor, past: Any, keep: int
) -> tuple[torch.Tensor, Any]:
    """Target logits (1, keep, V) for the last ``keep`` positions, running only what its cache lacks."""
    from modelcore.generation.utils import left_padded_positions
    from modelcore.nn.cache import DynamicCache

    cache = past if past is not None else DynamicCache()
    seen = cache.get_seq_length()
    out = target(
        input_ids=sequences[:, seen:],
        attention_mask=attention_mask,
        position_ids=left_padded_positions(attention_mask)[:, seen:],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=keep,
    )
    return out.logits[:, -keep:].float(), out.past_key_values
