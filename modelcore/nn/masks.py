"""Boolean attention masks (True = may attend) from 2-D padding masks."""

from __future__ import annotations

import torch


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, S) 0/1 padding mask -> (B, 1, 1, S) boolean key mask for bidirectional attention.

    Returns None when nothing is padded, so SDPA can take its fastest path.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


def causal_mask(
    attention_mask: torch.Tensor | None, query_length: int, past_length: int, device: torch.device
) -> tuple[torch.Tensor | None, bool]:
    """Mask for causal attention over ``past_length`` cached keys plus ``query_length`` new ones.

    Args:
        attention_mask: (B, past_length + query_length) 0/1 padding mask, or None.
        query_length: T, the number of new tokens.
        past_length: number of cached positions before them.
        device: where to build the mask.

    Returns:
        ``(mask, is_causal)``: either ``(None, True)`` when a plain causal kernel suffices, or a
        (B|1, 1, T, S) boolean mask. Query rows that would see no key at all (left padding)
        are opened to every key, so their (ignored) outputs are finite instead of NaN.
    """
    key_length = past_length + query_length
    padded = attention_mask is not None and not bool(attention_mask.all())
    if not padded and past_length == 0:
        return None, query_length > 1
    if not padded and query_length == 1:
        return None, False  # one new token may see every cached one
    mask = torch.ones(query_length, key_length, dtype=torch.bool, device=device).tril(past_length)[None, None]
    if padded:
        mask = mask & attention_mask.bool()[:, None, None, :key_length]
        mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask, False
