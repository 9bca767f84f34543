"""Key/value caches for incremental decoding, returned in ``past_key_values``.

``DynamicCache`` grows by concatenation (any length, a new shape every step). ``StaticCache`` is preallocated
to a fixed length and written in place at ``cache_position``, so every decode step has the same shapes and a
``torch.compile``d forward does not recompile per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class DynamicCache:
    """Grows one (B, nkv, S, hs) key and value tensor per layer as tokens are decoded.

    ``keys[i]`` / ``values[i]`` are views of the filled part of a per-layer buffer with room to spare (half
    again as many positions when it fills up), so a decode step writes its one new position in place instead
    of copying the whole cache as ``torch.cat`` would. Where autograd records the cache (a grad-enabled forward
    whose keys require grad) or a graph is being traced, it appends by concatenation instead. The tensors
    ``update`` returns are those views: read them before the cache is cropped and appended to again.
    """

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._buffers: dict[tuple[str, int], torch.Tensor] = {}  # ("key"|"value", layer) -> (B, nkv, capacity, hs)
        self._views: dict[tuple[str, int], torch.Tensor] = {}  # the view of _buffers that append_slots last gave

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, cache_position: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's key/value for ``layer_idx``; return the full key/value so far.

        ``cache_position`` is accepted for a common signature with ``StaticCache`` and not needed: keys are appended.
        """
        if layer_idx == len(self.keys):
            self.keys.append(key)
            self.values.append(value)
        elif layer_idx < len(self.keys):
            self.keys[layer_idx] = self._append("key", layer_idx, self.keys[layer_idx], key)
            self.values[layer_idx] = self._append("value", layer_idx, self.values[layer_idx], value)
        else:
            raise IndexError(f"cache has {len(self.keys)} layers, cannot update layer {layer_idx}")
        return self.keys[layer_idx], self.values[layer_idx]

    def _append(self, kind: str, layer_idx: int, cached: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """``cat([cached, new], dim=-2)``, written into the layer's buffer when ``cached`` is a view of it."""
        recorded = torch.is_grad_enabled() and (cached.requires_grad or new.requires_grad)
        if recorded or torch.compiler.is_compiling() or torch.jit.is_tracing():
            return torch.cat([cached, new], dim=-2)
        length, total = cached.shape[-2], cached.shape[-2] + new.shape[-2]
        buffer = self._room(kind, layer_idx, cached, total, new.dtype)
        buffer[..., length:total, :] = new
        return buffer[..., :total, :]

    def _room(self, kind: str, layer_idx: int, cached: torch.Tensor, total: int, dtype: torch.dtype) -> torch.Tensor:
        """The layer's buffer, holding ``cached`` in its first positions and room for ``total`` in all."""
        length = cached.shape[-2]
        buffer = self._buffers.get((kind, layer_idx))
        if not _is_filled_part_of(cached, buffer) or buffer.shape[-2] < total or buffer.dtype != dtype:
            capacity = total + max(16, total // 2)  # geometric growth: a copy every few dozen tokens, not every token
            buffer = cached.new_empty((*cached.shape[:-2], capacity, cached.shape[-1]), dtype=dtype)
            buffer[..., :length, :] = cached
            self._buffers[(kind, layer_idx)] = buffer
        return buffer

    def append_slots(
        self, layers: Sequence[int], count: int, cache_position: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor, int]] | None:
        """Room for ``count`` new positions in each of ``layers``, which the caller writes itself (native decoding).

        Returns:
            per layer (keys, values, first): the (B, nkv, S, hs) views ``update`` would return, the new positions
            included (unwritten until the caller writes them), and the index of the first new one; None, with
            nothing changed, where a layer has no entry yet or autograd, a compiler or a tracer records (then use
            ``update``).
        """
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing():
            return None
        if any(layer_idx >= len(self.keys) for layer_idx in layers):
            return None
        slots = []
        for layer_idx in layers:
            length = self.keys[layer_idx].shape[-2]
            keys = self._grown("key", layer_idx, self.keys, length + count)
            slots.append((keys, self._grown("value", layer_idx, self.values, length + count), length))
        return slots

    def _grown(self, kind: str, layer_idx: int, tensors: list[torch.Tensor], total: int) -> torch.Tensor:
        """``tensors[layer_idx]`` replaced by the view of the first ``total`` positions of its buffer (made or grown
        where needed). A decode step does this for every layer: when the cached tensor is the view given last time
        and the buffer has room, no check of strides and shapes is needed."""
        slot = (kind, layer_idx)
        cached, buffer = tensors[layer_idx], self._buffers.get(slot)
        if buffer is None or cached is not self._views.get(slot) or buffer.shape[-2] < total:
            buffer = self._room(kind, layer_idx, cached, total, cached.dtype)
        # narrow: the same view as [..., :total, :] in a third of the time
        tensors[layer_idx] = self._views[slot] = view = buffer.narrow(-2, 0, total)
        return view

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.keys[layer_idx].shape[-2] if layer_idx < len(self.keys) else 0

    def __len__(self) -> int:
        return len(self.keys)

    def reorder(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch dimension, e.g. after beam search picked its beams."""
        self.keys = [k.index_select(0, beam_idx.to(k.device)) for k in self.keys]
        self.values = [v.index_select(0, beam_idx.to(v.device)) for v in self.values]
        self._buffers.clear()  # the reordered tensors are new; the next append starts new buffers
        self._views.clear()

    def crop(self, max_length: int) -> None:
        """Drop cached positions past ``max_length`` (assisted decoding rolls back this way)."""
        self.keys = [k[..., :max_length, :] for k in self.keys]
        self.values = [v[..., :max_length, :] for v in self.values]


def _is_filled_part_of(cached: torch.Tensor, buffer: torch.Tensor | None) -> bool:
    """True when ``cached`` is the view ``buffer[..., :n, :]`` (so appending may write after it in place)."""
    return (
        buffer is not None
        and cached.data_ptr() == buffer.data_ptr()
        and cached.shape[:-2] == buffer.shape[:-2]
        and cached.shape[-1] == buffer.shape[-1]
        and cached.stride() == buffer.stride()
    )


class StaticCache:
    """One preallocated (B, nkv, L, hs) key and value buffer per layer, written in place at ``cache_position``.

    Positions not written yet hold zeros; the model masks them out (keys after the query's position are never
    attended), so the buffers' content past the written positions does not matter.

    Args:
        config: a decoder configuration with ``num_hidden_layers``, ``num_key_value_heads`` and ``head_dim``.
        max_batch_size: B, the rows of every batch fed to the cache.
        max_cache_len: L, the most positions (prompt plus new tokens) the cache holds.
        dtype: the buffers' dtype (the model's).
        device: where the buffers live (the model's).
    """

    def __init__(
        self,
        config: Any,
        max_batch_size: int,
        max_cache_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if max_batch_size < 1 or max_cache_len < 1:
            raise ValueError(f"max_batch_size and max_cache_len must be >= 1, got {max_batch_size}, {max_cache_len}")
        self.max_batch_size = max_batch_size
        self.max_cache_len = max_cache_len
        shape = (max_batch_size, config.num_key_value_heads, max_cache_len, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, cache_position: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's (B, nkv, T, hs) key/value at ``cache_position`` (T,); return the whole (B, nkv, L, hs) buffers.

        Raises:
            ValueError: no ``cache_position`` (a fixed-size cache cannot guess where the tokens go).
        """
        if cache_position is None:
            raise ValueError("StaticCache.update needs cache_position, the (T,) indices where the new keys go")
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys.index_copy_(2, cache_position, key.to(keys.dtype))  # in place: same buffers, same shapes every step
        values.index_copy_(2, cache_position, value.to(values.dtype))
        return keys, values

    def append_slots(
        self, layers: Sequence[int], count: int, cache_position: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor, int]] | None:
        """Per layer of ``layers`` its whole (B, nkv, L, hs) buffers and ``cache_position[0]``, where the caller
        writes ``count`` new positions itself (native decoding); None without ``cache_position`` or past the
        buffers' end."""
        if cache_position is None or cache_position.numel() != count:
            return None
        first = int(cache_position[0])
        if first < 0 or first + count > self.max_cache_len:
            return None
        return [(self.keys[layer_idx], self.values[layer_idx], first) for layer_idx in layers]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions written so far in row 0 (a data-dependent count: for eager code, not inside a compiled step)."""
        return int(self.keys[layer_idx][0, 0].any(dim=-1).sum())

    def __len__(self) -> int:
        return len(self.keys)

    def reset(self) -> None:
        """Forget every cached position (zero the buffers in place), to reuse the cache for new prompts."""
        for buffer in (*self.keys, *self.values):
            buffer.zero_()
