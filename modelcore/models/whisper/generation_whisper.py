"""Whisper's ``generate``: encode once, then decode greedily from the transcription prompt with a KV cache.

Semantics, as transformers' ``WhisperForConditionalGeneration.generate`` for 30 s inputs without timestamps:

* the decoder prompt is ``decoder_start_token_id`` (``<|startoftranscript|>``) followed by the tokens of
  ``config.forced_decoder_ids`` in position order: ``<|notimestamps|>`` for English-only checkpoints. A prompt
  with an unknown slot (``[1, null]``: a language to detect) is refused; pass ``decoder_input_ids`` instead;
* ``config.suppress_tokens`` are never generated, ``config.begin_suppress_tokens`` not as the first new token;
* decoding stops at EOS (``<|endoftext|>``) or after ``max_new_tokens`` (default: up to
  ``max_target_positions`` tokens in all, prompt included); rows that stopped early are padded with the pad id;
* the result holds only the new tokens: the prompt is cut off, and so is each row's EOS (a row that ended
  before the longest one is padded with the pad id, which is EOS for Whisper).

The encoder output's keys and values are projected once per layer (``WhisperCache.cross_attention``); the
self-attention cache grows by one position per step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from modelcore.generation.configuration import GenerationConfig
from modelcore.generation.logits_process import (
    NEG_INF,
    LogitsProcessor,
    ProcessorContext,
    build_logits_processors,
)
from modelcore.generation.stopping_criteria import build_stopping_criteria
from modelcore.nn.packed_linear import packed_decoding

if TYPE_CHECKING:
    from modelcore.models.whisper.configuration_whisper import WhisperConfig
    from modelcore.models.whisper.modeling_whisper import WhisperCache, WhisperForConditionalGeneration


class SuppressTokensLogitsProcessor(LogitsProcessor):
    """Give ``token_ids`` a score of -inf at every step (transformers' processor of the same name)."""

    def __init__(self, token_ids: Iterable[int]) -> None:
        self.token_ids = sorted(set(token_ids))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        ids = torch.tensor(self.token_ids, device=scores.device, dtype=torch.long)
        return scores.index_fill(-1, ids, NEG_INF)


class SuppressTokensAtBeginLogitsProcessor(SuppressTokensLogitsProcessor):
    """Give ``token_ids`` -inf only for the first new token, when the sequences are ``begin_index`` long."""

    def __init__(self, token_ids: Iterable[int], begin_index: int) -> None:
        super().__init__(token_ids)
        self.begin_index = begin_index

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] != self.begin_index:
            return scores
        return super().__call__(input_ids, scores)


def decoder_prompt(config: WhisperConfig) -> list[int]:
    """``[decoder_start_token_id, forced ids...]``: the tokens every transcription starts with.

    Raises:
        ValueError: ``forced_decoder_ids`` skips a position or leaves one to be detected (``None``).
    """
    prompt = [config.decoder_start_token_id]
    for position, token in sorted(config.forced_decoder_ids or [], key=lambda pair: pair[0]):
        if position != len(prompt) or token is None:
            raise ValueError(
                f"forced_decoder_ids {config.forced_decoder_ids} do not spell a fixed prompt (position {position}, "
                f"token {token}); language detection is not supported: pass decoder_input_ids, e.g. "
                "[[<|startoftranscript|>, <|en|>, <|transcribe|>, <|notimestamps|>]]"
            )
        prompt.append(token)
    return prompt


def whisper_generate(
    model: WhisperForConditionalGeneration,
    input_features: torch.Tensor,
    generation_config: GenerationConfig | None = None,
    decoder_input_ids: torch.LongTensor | None = None,
    **kwargs: Any,
) -> torch.LongTensor:
    """Greedy transcription of (B, F, N) log-mel features; see the module docstring for the exact semantics.

    Args:
        model: the Whisper model.
        input_features: (B, num_mel_bins, 3000) features from ``WhisperFeatureExtractor``.
        generation_config: the settings; default the model's ``generation_config`` (from
            ``generation_config.json``) or EOS/pad ids from its config.
        decoder_input_ids: (B, P) or (1, P) prompt instead of ``decoder_prompt(model.config)``.
        **kwargs: fields of ``GenerationConfig`` to override (``max_new_tokens=...``, ``repetition_penalty=...``).

    Returns:
        (B, n) the new tokens.

    Raises:
        ValueError: sampling or beams asked for, or the prompt plus ``max_new_tokens`` exceeding
            ``max_target_positions``.
    """
    config = (generation_config or model.default_generation_config()).update(**kwargs)
    if config.do_sample or config.num_beams > 1 or config.num_return_sequences > 1:
        raise ValueError(
            "Whisper generate decodes greedily: do_sample, num_beams and num_return_sequences are not supported"
        )
    batch = input_features.shape[0]
    device = model.device
    if decoder_input_ids is None:
        decoder_input_ids = torch.tensor([decoder_prompt(model.config)], dtype=torch.long)
    prompt = decoder_input_ids.to(device).expand(batch, -1).contiguous()  # (B, P)
    prompt_length = prompt.shape[1]
    limit = model.config.max_target_positions
    budget = (
        config.new_token_budget(prompt_length) if config.max_new_tokens or config.max_length else limit - prompt_length
    )
    if prompt_length + budget > limit:
        raise ValueError(
            f"the prompt ({prompt_length} tokens) plus max_new_tokens ({budget}) exceeds the decoder's "
            f"max_target_positions ({limit}); lower max_new_tokens to at most {limit - prompt_length}"
        )
    encoder_hidden = model.model.encoder(input_features.to(device)).last_hidden_state  # (B, Te, C)

    suppress = [SuppressTokensLogitsProcessor(model.config.suppress_tokens or [])]
    suppress.append(SuppressTokensAtBeginLogitsProcessor(model.config.begin_suppress_tokens or [], prompt_length))
    ctx = ProcessorContext(prompt_length=prompt_length, padding_lengths=torch.zeros(batch, dtype=torch.long))
    processors = build_logits_processors(config, ctx, suppress)
    criteria = build_stopping_criteria(config, prompt_length + budget)

    def step(sequences: torch.LongTensor, attention_mask: torch.Tensor, past: WhisperCache | None) -> Any:
        from modelcore.models.whisper.modeling_whisper import WhisperCache

        cache = past if past is not None else WhisperCache()
        out = model(
            encoder_outputs=encoder_hidden,
            decoder_input_ids=sequences[:, cache.get_seq_length() :],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float(), out.past_key_values

    with packed_decoding(model):
        sequences = model._decode(prompt, torch.ones_like(prompt), config, processors, criteria, None, step)
    return _without_eos(sequences[:, prompt_length:], config.eos_token_ids)


def _without_eos(new_tokens: torch.LongTensor, eos_token_ids: list[int]) -> torch.LongTensor:
    """Cut the columns from the last row's EOS on: the rows keep their text, padded (as transformers returns)."""
    if not eos_token_ids or new_tokens.shape[1] == 0:
        return new_tokens
    is_eos = torch.isin(new_tokens, torch.tensor(eos_token_ids, device=new_tokens.device))
    width = new_tokens.shape[1]
    lengths = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), width)  # tokens before each row's EOS
    return new_tokens[:, : int(lengths.max())]
