"""Key/value cache for incremental decoding, returned in ``past_key_values``."""

from __future__ import annotations

import torch


class DynamicCache:
    """Grows one (B, nkv, S, hs) key and value tensor per layer as tokens are decoded."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's key/value for ``layer_idx``; return the full key/value so far."""
        if layer_idx == len(self.keys):
            self.keys.append(key)
            self.values.append(value)
        elif layer_idx < len(self.keys):
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], key], dim=-2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], value], dim=-2)
        else:
            raise IndexError(f"cache has {len(self.keys)} layers, cannot update layer {layer_idx}")
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.keys[layer_idx].shape[-2] if layer_idx < len(self.keys) else 0

    def __len__(self) -> int:
        return len(self.keys)

    def reorder(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch dimension, e.g. after beam search picked its beams."""
        self.keys = [k.index_select(0, beam_idx.to(k.device)) for k in self.keys]
        self.values = [v.index_select(0, beam_idx.to(v.device)) for v in self.values]

    def crop(self, max_length: int) -> None:
        """Drop cached positions past ``max_length`` (assisted decoding rolls back this way)."""
        self.keys = [k[..., :max_length, :] for k in self.keys]
        self.values = [v[..., :max_length, :] for v in self.values]
