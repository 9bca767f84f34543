"""``generate``: greedy and sampling loops over a KV cache, shared by eager and onnxruntime models.

A model opts in by inheriting ``GenerationMixin``. The loop needs one thing from it, the step
``generation_step(sequences, attention_mask, past) -> (next-token logits, past)``: run the tokens
of ``sequences`` that ``past`` does not cover yet and return the logits of the last position.
The default step calls the eager model with a ``DynamicCache``; ``OrtModelForCausalLM`` feeds
the same tokens to an exported decoder with past key/value inputs. ``past`` is whatever the
model keeps between steps; the loop never looks inside it.
"""

from __future__ import annotations

from typing import Any

import torch

from modelcore.generation.configuration import GenerationConfig
from modelcore.generation.logits_process import warp


def left_padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, S) padding mask -> (B, S) position ids that start at 0 on each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


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
        **kwargs: Any,
    ) -> torch.LongTensor:
        """Continue each prompt, greedily or by sampling.

        Args:
            input_ids: (B, T) prompts; in a batch of unequal prompts, pad on the left.
            attention_mask: (B, T) 1 for real tokens, 0 for padding; None means no padding.
            generation_config: the settings; default ``default_generation_config()``.
            **kwargs: fields of ``GenerationConfig`` to override (``max_new_tokens=8, do_sample=True``).

        Returns:
            (B, T + n) the prompts followed by the n <= max_new_tokens new tokens; a row that produced
            EOS is filled with the pad id afterwards.
        """
        config = (generation_config or self.default_generation_config()).update(**kwargs)
        eos = torch.tensor(config.eos_token_ids, dtype=torch.long, device=input_ids.device)
        pad = config.pad_token_id if config.pad_token_id is not None else (int(eos[0]) if len(eos) else 0)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        sequences, unfinished, past = input_ids, torch.ones(len(input_ids), dtype=torch.bool), None
        for _ in range(config.max_new_tokens):
            logits, past = self.generation_step(sequences, attention_mask, past)  # (B, V)
            if config.do_sample:
                next_tokens = torch.multinomial(warp(logits, config).softmax(dim=-1), num_samples=1)[:, 0]
            else:
                next_tokens = logits.argmax(dim=-1)  # (B,)
            if len(eos):
                next_tokens = torch.where(unfinished.to(next_tokens.device), next_tokens, pad)
                unfinished &= ~torch.isin(next_tokens, eos).cpu()
            sequences = torch.cat([sequences, next_tokens[:, None].to(sequences.dtype)], dim=-1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(attention_mask), 1)], dim=-1)
            if not unfinished.any():
                break
        return sequences
