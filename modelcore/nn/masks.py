"""Boolean attention masks (True = may attend) from 2-D padding masks."""

from __future__ import annotations

import torch


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, S) 0/1 padding mask -> (B, 1, 1, S) boolean key mask for bidirectional attention.

    Returns None when nothing is padded, so SDPA can take its fastest path; while exporting or compiling a
    graph the mask is always built, since the graph must not depend on the values of one example.
    """
    if attention_mask is None or _unpadded(attention_mask):
        return None
    return attention_mask.bool()[:, None, None, :]


def _unpadded(attention_mask: torch.Tensor) -> bool:
    """True when every position is real: a data-dependent shortcut, never taken while exporting or compiling.

    Reading a tensor's value in Python would break a ``torch.compile`` graph (and bake one example's padding into
    an exported one), so traced code always builds the mask; eager code skips it when nothing is padded.
    """
    if torch.compiler.is_exporting() or torch.compiler.is_compiling():
        return False
    return bool(attention_mask.all())


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
    if torch.compiler.is_exporting():  # one graph for every past length and padding
        return _exported_causal_mask(attention_mask, query_length, past_length, device), False
    padded = attention_mask is not None and not _unpadded(attention_mask)
    if not padded and past_length == 0:
        return None, query_length > 1
    if not padded and query_length == 1:
        return None, False  # one new token may see every cached one
    mask = torch.ones(query_length, key_length, dtype=torch.bool, device=device).tril(past_length)[None, None]
    if padded:
        mask = mask & attention_mask.bool()[:, None, None, :key_length]
        mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask, False


def _exported_causal_mask(
    attention_mask: torch.Tensor | None, query_length: int, past_length: int, device: torch.device
) -> torch.Tensor:
    """``causal_mask``'s general case written with symbolic sizes only (no branch on a length or a value)."""
    query_positions = torch.arange(query_length, device=device)[:, None] + past_length  # (T, 1)
    key_positions = torch.arange(past_length + query_length, device=device)[None, :]  # (1, S)
    mask = (key_positions <= query_positions)[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, None, :]
        mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask


def static_causal_mask(
    attention_mask: torch.Tensor | None, cache_position: torch.Tensor, max_cache_len: int
) -> torch.Tensor:
    """Causal mask over a preallocated cache of ``max_cache_len`` positions, with no branch on tensor values.

    Query i (written at ``cache_position[i]``) may attend key j when ``j <= cache_position[i]`` and key j is not
    padding; positions not written yet lie after every query and stay masked. Built from shapes and tensor ops only,
    so a compiled decode step keeps one graph for every position.

    Args:
        attention_mask: (B, S) 0/1 padding mask with S <= ``max_cache_len`` (missing positions count as padding),
            or None.
        cache_position: (T,) the cache slots of the new tokens.
        max_cache_len: L, the cache's length.

    Returns:
        (B|1, 1, T, L) boolean mask; query rows that would see no key (left padding) are opened to every key,
        so their (ignored) outputs are finite instead of NaN.
    """
    key_positions = torch.arange(max_cache_len, device=cache_position.device)
    mask = (key_positions[None, :] <= cache_position[:, None])[None, None]  # (1, 1, T, L)
    if attention_mask is not None:
        keep = attention_mask.to(torch.long)
        if keep.shape[-1] < max_cache_len:
            keep = torch.nn.functional.pad(keep, (0, max_cache_len - keep.shape[-1]))
        mask = mask & keep.bool()[:, None, None, :max_cache_len]
    return mask | ~mask.any(dim=-1, keepdim=True)
