"""Fill-mask: texts with the tokenizer's mask token in, the likeliest tokens for each mask out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from modelcore.pipelines.base import Pipeline, as_texts, chunks


class FillMaskPipeline(Pipeline):
    """Predict masked tokens with a masked-language model (``AutoModelForMaskedLM``)."""

    task = "fill-mask"
    auto_model = "AutoModelForMaskedLM"

    def __call__(
        self, texts: str | Iterable[str], top_k: int = 5, batch_size: int | None = None, max_length: int | None = None
    ) -> list[Any]:
        """Fill the mask token of each text.

        Args:
            texts: one text, a list or any iterable of texts, each with at least one mask token.
            top_k: candidates per mask, likeliest first.
            batch_size: texts per forward pass (None: the pipeline's ``batch_size``, else the task's default).
            max_length: truncate longer inputs to this many tokens (default: the tokenizer's limit).

        Returns:
            As Hugging Face: per text, a list of ``{"score", "token", "token_str", "sequence"}`` dicts for its one
            mask, or one such list per mask when it has several; a lone string gives its own result, not a list.

        Raises:
            ValueError: a text without a mask token (named by index), or ``top_k`` < 1.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        items, single = as_texts(texts)
        batch_size = self.batch_size_for(batch_size)
        mask_token, mask_id = self.tokenizer.mask_token, self.tokenizer.mask_token_id
        if mask_id is None:
            raise ValueError("fill-mask: the tokenizer has no mask token")
        results: list[Any] = []
        for start, batch in zip(range(0, len(items), batch_size), chunks(items, batch_size), strict=True):
            encoding = self.encode(batch, max_length=max_length)
            logits = self.forward(encoding).logits.float().cpu()  # (B, T, V)
            for row, input_ids in enumerate(encoding["input_ids"]):
                positions = torch.nonzero(input_ids == mask_id).squeeze(-1)
                if positions.numel() == 0:
                    raise ValueError(f"fill-mask: texts[{start + row}] has no {mask_token} token: {batch[row]!r:.60}")
                kept = input_ids[encoding["attention_mask"][row].bool()]
                results.append(self._candidates(kept, logits[row, positions], positions, top_k))
        return results[0] if single else results

    def _candidates(
        self, input_ids: torch.Tensor, logits: torch.Tensor, positions: torch.Tensor, top_k: int
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """The top_k tokens at each masked position, each with the text it gives."""
        scores, tokens = logits.softmax(dim=-1).topk(min(top_k, logits.shape[-1]))  # (masks, k)
        single_mask = len(positions) == 1
        per_mask = []
        for position, mask_scores, mask_tokens in zip(
            positions.tolist(), scores.tolist(), tokens.tolist(), strict=True
        ):
            row = []
            for score, token in zip(mask_scores, mask_tokens, strict=True):
                filled = input_ids.clone()
                filled[position] = token
                # with several masks the others stay visible, as Hugging Face shows them
                sequence = self.tokenizer.decode(filled.tolist(), skip_special_tokens=single_mask)
                row.append(
                    {"score": score, "token": token, "token_str": self.tokenizer.decode([token]), "sequence": sequence}
                )
            per_mask.append(row)
        return per_mask[0] if single_mask else per_mask
