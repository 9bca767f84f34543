"""Text generation: prompts (or chat conversations) in, their continuations out, shaped as Hugging Face's pipeline.

Each prompt is tokenized alone (the tokenizer's special tokens added; a chat through its chat template with the
assistant's cue), prompts are batched with left padding, and ``generate`` continues them. The new tokens are
decoded without special tokens; ``return_full_text`` puts the prompt text in front (for a chat: the conversation
with the assistant's reply appended).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from modelcore.pipelines.base import Pipeline, chunks

Chat = list[dict[str, Any]]


class TextGenerationPipeline(Pipeline):
    """Continue prompts with a causal language model (``AutoModelForCausalLM``)."""

    task = "text-generation"
    auto_model = "AutoModelForCausalLM"
    default_batch_size = 1  # as Hugging Face: no padding unless asked

    def __call__(
        self,
        inputs: str | Chat | Iterable[str] | Iterable[Chat],
        return_full_text: bool = True,
        batch_size: int | None = None,
        **generate_kwargs: Any,
    ) -> list[Any]:
        """Generate a continuation of each prompt.

        Args:
            inputs: a prompt, a chat (a list of ``{"role", "content"}`` messages), or a list / iterable of either.
            return_full_text: put the prompt (or the conversation) before the generated text.
            batch_size: prompts per ``generate`` call, left-padded (None: the pipeline's, else 1).
            **generate_kwargs: ``generate``'s options: ``max_new_tokens``, ``max_length``, ``do_sample``,
                ``temperature``, ``num_return_sequences``, ``num_beams``, ``streamer``, ...

        Returns:
            Per input, a list of ``{"generated_text": ...}`` (one per returned sequence); a single prompt or chat
            gives its own list.

        Raises:
            ValueError: an empty prompt, a chat that ends with the assistant's message, or what ``generate`` refuses.
            TypeError: an input that is neither a string nor a chat.
        """
        items, single = _prompts(inputs)
        batch_size = self.batch_size_for(batch_size)
        encoded = [self._encode(item, index) for index, item in enumerate(items)]
        results: list[Any] = []
        for start, batch in zip(range(0, len(items), batch_size), chunks(encoded, batch_size), strict=True):
            input_ids, attention_mask = _left_pad(batch, self._pad_id())
            with torch.inference_mode():
                output = self.model.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    **generate_kwargs,
                )
            per_prompt = output.shape[0] // len(batch)  # num_return_sequences
            new_tokens = output[:, input_ids.shape[1] :].cpu()
            for row in range(len(batch)):
                prompt = items[start + row]
                texts = [
                    self.tokenizer.decode(new_tokens[row * per_prompt + k].tolist(), skip_special_tokens=True)
                    for k in range(per_prompt)
                ]
                results.append([{"generated_text": _full_text(prompt, text, return_full_text)} for text in texts])
        return results[0] if single else results

    def _encode(self, prompt: str | Chat, index: int) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer(prompt)["input_ids"]
        else:
            if prompt[-1].get("role") == "assistant":
                raise ValueError(
                    f"text-generation: chat {index} ends with the assistant's message; end it with the user's"
                )
            ids = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=False)
        if not ids:
            raise ValueError(f"text-generation: prompt {index} is empty (no tokens); give some text to continue")
        return list(ids)

    def _pad_id(self) -> int:
        for pad in (self.tokenizer.pad_token_id, getattr(self.model.config, "pad_token_id", None)):
            if pad is not None:
                return int(pad)
        eos = getattr(self.model.config, "eos_token_id", None)
        eos = eos[0] if isinstance(eos, list) else eos
        return int(eos) if eos is not None else 0  # padded positions are masked out: the id only needs to exist


def _prompts(inputs: Any) -> tuple[list[str | Chat], bool]:
    """The inputs as a list of prompts and chats, and whether one was given alone."""
    if isinstance(inputs, str) or _is_chat(inputs):
        return [inputs], True
    items = list(inputs)
    for index, item in enumerate(items):
        if not isinstance(item, str) and not _is_chat(item):
            raise TypeError(
                f"text-generation: input {index} must be a str or a chat (a list of {{'role', 'content'}} dicts), "
                f"got {type(item).__name__}"
            )
    return items, False


def _is_chat(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, Mapping) and "role" in m for m in value)


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids padded on the left, and their attention mask."""
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = torch.tensor(row)
        mask[i, length - len(row) :] = 1
    return ids, mask


def _full_text(prompt: str | Chat, text: str, return_full_text: bool) -> str | Chat:
    if not return_full_text:
        return text
    if isinstance(prompt, str):
        return prompt + text
    return [*prompt, {"role": "assistant", "content": text}]
