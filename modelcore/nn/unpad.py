"""Padding-free computation: run the per-token layers of a padded batch on its real tokens only.

In a Transformer encoder everything but attention works token by token (projections, feed-forward, LayerNorm,
dropout), so a padded position costs as much as a real one and changes nothing that is kept. With random
batches of real text about half of the padded tokens are padding (Rotten Tomatoes at batch 32: 48%).
:class:`Unpadded` gathers the real tokens of a ``(B, T, ...)`` tensor into ``(N, ...)`` rows and scatters them
back into a zero-padded ``(B, T, ...)`` tensor (``unpad`` / ``pad``). Attention needs a sequence layout: it gets
the rows in groups of similar length, each group padded only to its own longest row (``to_groups`` /
``from_groups``), so a batch mixing short and long sequences wastes little on padding there either. Every move
is differentiable (``index_select`` / ``index_put``), and the batches stay as random as the sampler made them.
"""

from __future__ import annotations

import torch


class Unpadded:
    """Where the real tokens of a padded batch are, from its ``(B, T)`` attention mask (1 = real token).

    Any padding layout works (right, left, or holes): the positions are read from the mask.

    Args:
        attention_mask: ``(B, T)`` 0/1 mask.
        attention_groups: how many groups of rows (sorted by length) :meth:`to_groups` makes for attention.
    """

    def __init__(self, attention_mask: torch.Tensor, attention_groups: int = 4) -> None:
        if attention_mask.dim() != 2:
            raise ValueError(f"attention_mask must be (batch, seq_length), got shape {tuple(attention_mask.shape)}")
        if attention_groups < 1:
            raise ValueError(f"attention_groups must be >= 1, got {attention_groups}")
        self.batch_size, self.seq_length = attention_mask.shape
        real = attention_mask.reshape(-1) != 0
        self.index = real.nonzero().squeeze(1)  # (N,) flat positions of the real tokens
        # All groups live in one (sum of rows * width) buffer, group after group; ``_slots`` (N,) is each real
        # token's place there, so tokens move into the groups and back with one scatter and one gather per call.
        self._masks, self._slots = _attention_groups(real.view(self.batch_size, self.seq_length), attention_groups)

    @property
    def num_tokens(self) -> int:
        """N: the real tokens of the batch."""
        return self.index.numel()

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """``(B, T, *rest)`` -> ``(N, *rest)``: the real tokens, in batch-major order."""
        flat = padded.reshape(self.batch_size * self.seq_length, *padded.shape[2:])
        return flat.index_select(0, self.index)

    def pad(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, *rest)`` -> ``(B, T, *rest)``, with zeros at the padded positions."""
        rest = tokens.shape[1:]
        flat = tokens.new_zeros(self.batch_size * self.seq_length, *rest).index_put((self.index,), tokens)
        return flat.view(self.batch_size, self.seq_length, *rest)

    def to_groups(self, tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(N, *rest)`` -> per group, ``(b, t, *rest)`` rows (zeros past each row's length) and their key mask.

        The rows of a group have similar lengths, so attention over them wastes little on padding even when the
        batch mixes short and long sequences. A row's real tokens sit left-aligned, in their order: attention
        does not see where padding was, only which keys are real. The mask is ``(b, 1, 1, t)`` bool.
        """
        rest = tokens.shape[1:]
        buffer = tokens.new_zeros(sum(mask.numel() for mask in self._masks), *rest).index_put((self._slots,), tokens)
        out, start = [], 0
        for mask in self._masks:
            rows, width = mask.shape
            out.append((buffer[start : start + rows * width].view(rows, width, *rest), mask[:, None, None, :]))
            start += rows * width
        return out

    def from_groups(self, grouped: list[torch.Tensor]) -> torch.Tensor:
        """Per group ``(b, t, *rest)`` (as :meth:`to_groups` laid out) -> ``(N, *rest)`` in batch-major order."""
        buffer = torch.cat([values.reshape(-1, *values.shape[2:]) for values in grouped])
        return buffer.index_select(0, self._slots)


def _attention_groups(real: torch.Tensor, num_groups: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Split the rows of a (B, T) real-token mask, sorted by length, into up to ``num_groups`` equal-sized groups.

    Returns each group's key mask ``(rows, width)`` bool, and each real token's flat slot (N,) in
    the groups laid out one after another, each as a (rows, width) block with its rows' tokens left-aligned.
    """
    lengths = real.sum(1)  # (B,)
    first = torch.cumsum(lengths, 0) - lengths  # each row's first token among the N real tokens
    order = torch.argsort(lengths, descending=True, stable=True)
    slots = torch.empty(int(lengths.sum()), dtype=torch.long, device=real.device)
    masks, start = [], 0
    for rows in torch.tensor_split(order, min(num_groups, len(order))):
        if len(rows) == 0:
            continue
        row_lengths = lengths[rows]
        width = max(int(row_lengths.max()), 1)
        within = torch.arange(width, device=real.device)  # (width,)
        filled = within[None, :] < row_lengths[:, None]  # (rows, width): left-aligned real tokens
        local_row, column = filled.nonzero(as_tuple=True)
        slots[first[rows][local_row] + column] = start + local_row * width + column
        mask = filled.clone()
        mask[:, 0] = True  # a row without tokens attends to one zero key, not to nothing (no NaN); it is dropped
        masks.append(mask)
        start += len(rows) * width
    return masks, slots
