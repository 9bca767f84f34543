"""``generate``: greedy, sampling and beam search over a KV cache, shared by eager and onnxruntime models.

A model opts in by inheriting ``GenerationMixin``. The loops need one thing from it, the step
``generation_step(sequences, attention_mask, past) -> (next-token logits, past)``: run the tokens
of ``sequences`` that ``past`` does not cover yet and return the logits of the last position.
The default step calls the eager model with a ``DynamicCache``; ``OrtModelForCausalLM`` feeds
the same tokens to an exported decoder with past key/value inputs. ``past`` is whatever the
model keeps between steps; the loops only reorder its batch rows (beam search).

Decoding follows transformers' ``generate`` step for step (processor order, EOS padding, the
vectorized beam search and its early-stopping rule), so the same checkpoint gives the same tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from modelcore.generation.assisted import assisted_greedy, check_assistant
from modelcore.generation.beam_search import beam_search
from modelcore.generation.configuration import GenerationConfig
from modelcore.generation.logits_process import (
    LogitsProcessor,
    LogitsProcessorList,
    ProcessorContext,
    build_logits_processors,
)
from modelcore.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList, build_stopping_criteria
from modelcore.nn import native
from modelcore.nn.packed_linear import packed_decoding


def left_padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, S) padding mask -> (B, S) position ids that start at 0 on each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def reorder_past(past: Any, rows: torch.LongTensor) -> Any:
    """``past`` with its batch rows picked by ``rows``: a cache's own ``reorder``, or nested tuples of tensors."""
    if past is None:
        return None
    if hasattr(past, "reorder"):
        past.reorder(rows)
        return past
    if isinstance(past, torch.Tensor):
        return past.index_select(0, rows.to(past.device))
    return type(past)(reorder_past(item, rows) for item in past)


StepFn = Callable[[torch.LongTensor, torch.Tensor, Any], tuple[torch.Tensor, Any]]


class StaticCacheStep:
    """A ``generation_step`` over a ``StaticCache`` preallocated to ``max_length`` positions.

    Every decode step calls the model with the same shapes: one new token per row, the (B, L) padding mask kept in
    one buffer (zeros past the tokens so far), position and cache slot as tensors. A ``torch.compile``d
    ``model.forward`` thus compiles once for the prompt and once for the decode step, not once per token.

    Args:
        model: a causal LM whose ``forward`` takes ``cache_position``.
        batch_size: rows of the batch (after expansion for ``num_return_sequences``).
        max_length: prompt plus new tokens: the cache's length L.
        device: where the cache and mask live.
    """

    def __init__(self, model: Any, batch_size: int, max_length: int, device: torch.device) -> None:
        from modelcore.nn.cache import StaticCache

        dtype = next(model.parameters()).dtype
        self.model = model
        self.cache = StaticCache(model.config, batch_size, max_length, dtype=dtype, device=device)
        self.mask = torch.zeros(batch_size, max_length, dtype=torch.long, device=device)
        self.seen = 0  # positions already in the cache (a Python count kept outside the model's graph)

    def __call__(
        self, sequences: torch.LongTensor, attention_mask: torch.Tensor, past: Any
    ) -> tuple[torch.Tensor, Any]:
        """Logits (B, V) for the token after ``sequences`` (B, S); ``past`` is ignored (the cache is ``self.cache``)."""
        length = sequences.shape[1]
        self.mask[:, :length] = attention_mask  # in place: the model always sees the same (B, L) tensor
        out = self.model(
            input_ids=_fresh_strides(sequences[:, self.seen :]),
            attention_mask=self.mask,
            position_ids=_fresh_strides(left_padded_positions(self.mask)[:, self.seen : length]),
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
            cache_position=torch.arange(self.seen, length, device=self.mask.device),
        )
        self.seen = length
        return out.logits[:, -1].float(), self.cache


def _greedy(scores: torch.Tensor) -> torch.Tensor:
    """(B,) the first maximum of each row of ``scores`` (B, V), as ``argmax``: through the native kernel where it
    takes them (fp32 on a CPU), else ``max(dim=-1).indices`` (argmax's result in a third of its time)."""
    if not torch.compiler.is_compiling() and scores.device.type == "cpu":
        tokens = native.argmax(scores)
        if tokens is not None:
            return tokens
    return scores.max(dim=-1).indices


def _fresh_strides(columns: torch.Tensor) -> torch.Tensor:
    """A copy of a column slice with the strides of its own size.

    A slice keeps the row stride of the growing sequence, and ``.contiguous()`` keeps it too when the batch has one
    row; a compiled forward guards on strides, so the slice itself would recompile it every token.
    """
    return columns.clone(memory_format=torch.contiguous_format)


class GenerationMixin:
    """Adds ``generate`` to a causal language model."""

    def generation_step(
        self, sequences: torch.LongTensor, attention_mask: torch.Tensor, past: Any
    ) -> tuple[torch.Tensor, Any]:
        """Logits (B, V) for the token after ``sequences`` (B, S), and the past to pass to the next step.

        Args:
            sequences: every token so far, prompt included.
            attention_mask: (B, S) 1 for real tokens, 0 for (left) padding.
            past: None on the first step, then what the previous step returned.
        """
        from modelcore.nn.cache import DynamicCache

        cache = past if past is not None else DynamicCache()
        seen = cache.get_seq_length()
        out = self(
            input_ids=sequences[:, seen:],
            attention_mask=attention_mask,
            position_ids=left_padded_positions(attention_mask)[:, seen:],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float(), out.past_key_values

    def default_generation_config(self) -> GenerationConfig:
        """``self.generation_config`` when the model has one, else EOS/pad ids from ``self.config``."""
        config = getattr(self, "generation_config", None)
        return config if config is not None else GenerationConfig.from_model_config(self.config)

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        logits_processor: Iterable[LogitsProcessor] | None = None,
        stopping_criteria: Iterable[StoppingCriteria] | None = None,
        streamer: Any = None,
        tokenizer: Any = None,
        assistant_model: Any = None,
        **kwargs: Any,
    ) -> torch.LongTensor:
        """Continue each prompt greedily, by sampling, or by beam search.

        Args:
            input_ids: (B, T) prompts; in a batch of unequal prompts, pad on the left.
            attention_mask: (B, T) 1 for real tokens, 0 for padding; None means no padding.
            generation_config: the settings; default ``default_generation_config()``.
            logits_processor: extra processors, run after the ones the config enables (before sampling warpers).
            stopping_criteria: extra criteria; a row stops when any criterion says so.
            streamer: an object with ``put(token_ids)`` and ``end()``: it gets the prompt, then each new token
                (batch size 1, no beam search), then ``end()``.
            tokenizer: needed for ``stop_strings``.
            assistant_model: a smaller model with the same vocabulary that drafts ``num_assistant_tokens``
                tokens per target pass (greedy, batch size 1); the output equals plain greedy decoding.
            **kwargs: fields of ``GenerationConfig`` to override (``max_new_tokens=8, num_beams=3``).

        Returns:
            (B * num_return_sequences, T + n) the prompts followed by the new tokens; a row that stopped early
            is filled with the pad id afterwards.

        Raises:
            ValueError: an empty prompt, a prompt past the model's context, a streamer with a batch or beams,
                an assistant with sampling, beams, a batch or another vocabulary.
            TypeError: an unknown generation option (all of them listed).
        """
        config = (generation_config or self.default_generation_config()).update(**kwargs)
        self._check_prompt(input_ids, config, streamer)
        if config.cache_implementation == "static":
            self._check_static_cache(config, assistant_model)
        if assistant_model is not None:
            check_assistant(self, assistant_model, config, input_ids.shape[0])
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        prompt_length = input_ids.shape[1]
        max_length = prompt_length + config.new_token_budget(prompt_length)
        expand = max(config.num_beams, config.num_return_sequences)
        input_ids = input_ids.repeat_interleave(expand, dim=0)
        attention_mask = attention_mask.repeat_interleave(expand, dim=0)
        beam_sampling = config.num_beams > 1 and config.do_sample
        ctx = ProcessorContext(
            prompt_length=prompt_length,
            padding_lengths=(attention_mask != 0).int().argmax(dim=1),
            min_tokens_to_keep=len(config.eos_token_ids) + 1 if beam_sampling and config.eos_token_ids else 1,
        )
        if beam_sampling and not config.eos_token_ids:
            ctx = ProcessorContext(ctx.prompt_length, ctx.padding_lengths, min_tokens_to_keep=2)
        processors = build_logits_processors(config, ctx, logits_processor or ())
        criteria = build_stopping_criteria(config, max_length, tokenizer, stopping_criteria or ())
        if config.num_beams > 1:
            with packed_decoding(self):
                return beam_search(self, input_ids, attention_mask, config, processors, criteria, max_length)
        if streamer is not None:
            streamer.put(input_ids.cpu())
        try:
            if assistant_model is not None:
                return assisted_greedy(
                    self, assistant_model, input_ids, attention_mask, config, processors, criteria, max_length, streamer
                )
            step = self.generation_step
            if config.cache_implementation == "static":
                step = StaticCacheStep(self, input_ids.shape[0], max_length, input_ids.device)
            with packed_decoding(self):
                return self._decode(input_ids, attention_mask, config, processors, criteria, streamer, step)
        finally:
            if streamer is not None:
                streamer.end()  # a consumer waiting on the stream must not hang when decoding fails

    def _check_prompt(self, input_ids: torch.LongTensor, config: GenerationConfig, streamer: Any) -> None:
        if input_ids.ndim != 2 or input_ids.shape[1] == 0:
            raise ValueError(
                f"input_ids must be a (batch, length) tensor with length >= 1, got {tuple(input_ids.shape)}"
            )
        context = getattr(getattr(self, "config", None), "max_position_embeddings", None)
        if isinstance(context, int) and input_ids.shape[1] >= context:
            raise ValueError(
                f"the prompt has {input_ids.shape[1]} tokens but the model's context (max_position_embeddings) is"
                f" {context}; shorten the prompt to leave room for new tokens"
            )
        if streamer is not None and (input_ids.shape[0] > 1 or config.num_beams > 1):
            raise ValueError("a streamer supports batch size 1 without beam search (as transformers)")

    def _check_static_cache(self, config: GenerationConfig, assistant_model: Any) -> None:
        """Raise ValueError when ``cache_implementation="static"`` cannot serve this call."""
        if config.num_beams > 1 or assistant_model is not None:
            raise ValueError(
                "cache_implementation='static' supports greedy decoding and sampling; beam search and assisted"
                " decoding reorder or roll back the cache: use cache_implementation=None (dynamic) for them"
            )
        if "cache_position" not in inspect.signature(self.forward).parameters:
            raise ValueError(
                f"{type(self).__name__}.forward takes no cache_position, so it cannot use a static cache;"
                " use cache_implementation=None (dynamic)"
            )

    def _decode(
        self,
        sequences: torch.LongTensor,
        attention_mask: torch.Tensor,
        config: GenerationConfig,
        processors: LogitsProcessorList,
        criteria: StoppingCriteriaList,
        streamer: Any,
        step: StepFn | None = None,
    ) -> torch.LongTensor:
        """Greedy or multinomial sampling, one token per step, until every row has met a stopping criterion.

        ``step`` is the ``generation_step`` to call (default the model's own; a ``StaticCacheStep`` for a static cache).
        """
        step = step or self.generation_step
        eos = config.eos_token_ids
        pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else None)
        unfinished = torch.ones(len(sequences), dtype=torch.bool, device=sequences.device)
        past = None
        while True:
            logits, past = step(sequences, attention_mask, past)  # (B, V)
            scores = processors(sequences, logits)
            if config.do_sample:
                next_tokens = torch.multinomial(scores.softmax(dim=-1), num_samples=1)[:, 0]
            else:
                next_tokens = _greedy(scores)
            next_tokens = next_tokens.to(sequences.device)
            if eos:  # as transformers: finished rows are padded only when EOS can finish them
                next_tokens = torch.where(unfinished, next_tokens, pad)
            sequences = torch.cat([sequences, next_tokens[:, None].to(sequences.dtype)], dim=-1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(attention_mask), 1)], dim=-1)
            if streamer is not None:
                streamer.put(next_tokens.cpu())
            unfinished &= ~criteria(sequences, scores)
            if not unfinished.any():
                return sequences
