"""Attention kernels behind one dispatch table, chosen by ``config.attn_implementation``.

Every kernel takes query (B, nh, T, hs), key/value (B, nkv, S, hs) with nh a multiple of nkv
(grouped-query attention), an optional boolean mask (B|1, 1, T, S) where True means "may
attend", and returns the output as (B, T, nh, hs) plus the attention weights when asked.
On GPU, ``sdpa`` dispatches to flash / memory-efficient kernels by itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def repeat_kv(hidden: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, nkv, S, hs) -> (B, nkv * n_rep, S, hs), each key/value head shared by n_rep query heads."""
    if n_rep == 1:
        return hidden
    b, nkv, s, hs = hidden.shape
    return hidden[:, :, None].expand(b, nkv, n_rep, s, hs).reshape(b, nkv * n_rep, s, hs)


def eager_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    scaling: float,
    dropout: float = 0.0,
    is_causal: bool = False,
    output_attentions: bool = False,
    dropout_fn: Callable[[torch.Tensor, float], torch.Tensor] = F.dropout,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention written out in torch ops; ``dropout_fn(probs, p)`` drops attention weights when ``dropout > 0``."""
    n_rep = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling  # (B, nh, T, S)
    if is_causal and mask is None:
        t, s = scores.shape[-2:]
        mask = torch.ones(t, s, dtype=torch.bool, device=scores.device).tril(s - t)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # softmax in fp32 for stability
    if dropout > 0:
        probs = dropout_fn(probs, dropout)
    out = torch.matmul(probs, value)  # (B, nh, T, hs)
    return out.transpose(1, 2).contiguous(), probs if output_attentions else None


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    scaling: float,
    dropout: float = 0.0,
    is_causal: bool = False,
    output_attentions: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if output_attentions:  # SDPA never materializes the weights
        return eager_attention(
            query, key, value, mask, scaling=scaling, dropout=dropout, is_causal=is_causal, output_attentions=True
        )
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        dropout_p=dropout,
        is_causal=is_causal and mask is None,
        scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


AttentionFn = Callable[..., tuple[torch.Tensor, "torch.Tensor | None"]]
ATTENTION_FUNCTIONS: dict[str, AttentionFn] = {"eager": eager_attention, "sdpa": sdpa_attention}


def get_attention_function(name: str) -> AttentionFn:
    try:
        return ATTENTION_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"attn_implementation {name!r} is not one of {sorted(ATTENTION_FUNCTIONS)}") from None
