"""Batch samplers for training: shuffled batches, optionally grouped by length, sharded across replicas.

Both samplers are *batch* samplers (``DataLoader(dataset, batch_sampler=sampler, collate_fn=...)``): they yield
lists of dataset indices. They share one contract:

- **Epochs.** The order of an epoch depends only on ``(seed, epoch)``: it is drawn from
  ``torch.Generator().manual_seed(seed + epoch)``. Call :meth:`set_epoch` before each epoch.
- **Sharding.** With ``num_replicas=R``, the epoch is cut into *global* batches of ``batch_size * R`` indices,
  and replica ``rank`` takes the slice ``[rank * batch_size, (rank + 1) * batch_size)`` of each. So step ``k`` of
  every replica belongs to the same global batch, the replicas never share an index within an epoch, and all
  of them yield the same number of batches. A short final global batch of ``r`` indices is split into ``R``
  equal slices of ``ceil(r / R)``, repeating its own indices to fill them (at most ``R - 1`` repeats, as
  ``torch.utils.data.DistributedSampler`` does), or dropped with ``drop_last=True``.
- **Exact resume.** ``start_batch=n`` (or :meth:`skip_batches`) makes iteration begin at batch ``n`` of the same
  epoch permutation, without producing, let alone loading and collating, the ``n`` batches already consumed.
  :meth:`set_epoch` resets it to 0. ``len()`` is the number of batches the next iteration yields.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch


class _EpochBatchSampler:
    """The shared machinery: epochs, sharding, drop_last, resume. Subclasses order the global batches."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        num_replicas: int,
        rank: int,
        drop_last: bool,
        start_batch: int,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas=} {rank=}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0
        self.skip_batches(start_batch)

    @property
    def global_batch_size(self) -> int:
        """Indices per step over all replicas: ``batch_size * num_replicas``."""
        return self.batch_size * self.num_replicas

    @property
    def batches_per_epoch(self) -> int:
        """Batches each replica gets in a whole epoch (``len()`` when not resuming)."""
        full, rest = divmod(self.num_samples, self.global_batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration yields, from its first batch."""
        self.epoch = epoch
        self.start_batch = 0

    def skip_batches(self, n: int) -> None:
        """Make the next iterations of this epoch start at batch ``n`` (the number already consumed)."""
        if not 0 <= n <= self.batches_per_epoch:
            raise ValueError(f"cannot skip {n} batches of an epoch of {self.batches_per_epoch}")
        self.start_batch = n

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        full, tail = self._global_batches(generator)  # (num_full, batch_size * R) and (r,) with r < batch_size * R
        rank_slice = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        yield from full[self.start_batch :, rank_slice].tolist()
        if len(tail) and not self.drop_last and self.start_batch <= len(full):
            per_rank = math.ceil(len(tail) / self.num_replicas)
            tail = tail.repeat(math.ceil(per_rank * self.num_replicas / len(tail)))[: per_rank * self.num_replicas]
            yield tail[self.rank * per_rank : (self.rank + 1) * per_rank].tolist()

    def _global_batches(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _cut(self, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cut an epoch order into full global batches ``(num_full, batch_size * R)`` and the short rest."""
        size = self.global_batch_size
        num_full = len(order) // size
        return order[: num_full * size].view(num_full, size), order[num_full * size :]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, batch_size={self.batch_size}, seed={self.seed}, "
            f"epoch={self.epoch}, num_replicas={self.num_replicas}, rank={self.rank}, drop_last={self.drop_last}, "
            f"start_batch={self.start_batch})"
        )


class RandomBatchSampler(_EpochBatchSampler):
    """Shuffled batches: each epoch a fresh permutation of ``range(num_samples)``, cut into batches.

    Args:
        num_samples: the dataset size.
        batch_size: indices per batch on each replica.
        seed: the epoch's permutation comes from ``torch.Generator().manual_seed(seed + epoch)``.
        num_replicas: the number of data-parallel replicas (see the module docstring for the split).
        rank: this replica, in ``[0, num_replicas)``.
        drop_last: drop the final short batch instead of yielding it.
        start_batch: begin the current epoch at this batch (resuming); reset by :meth:`set_epoch`.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        start_batch: int = 0,
    ) -> None:
        super().__init__(num_samples, batch_size, seed, num_replicas, rank, drop_last, start_batch)

    def _global_batches(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._cut(torch.randperm(self.num_samples, generator=generator))


class LengthGroupedSampler(_EpochBatchSampler):
    """Shuffled batches of similar lengths, so little of each padded batch is padding.

    Each epoch: shuffle all indices; cut them into mega-batches of ``batch_size * num_replicas * mega_batch_mult``;
    sort each mega-batch by length, longest first; cut into global batches; shuffle the order of the full batches
    (so long and short batches alternate through the epoch), then swap the batch holding the longest sequence to
    the front, as Hugging Face does, so that an out-of-memory error shows on the first step rather than hours in.
    The short final batch (the shortest sequences of the last mega-batch) stays last. Larger ``mega_batch_mult``
    gives tighter length groups and a less random batch composition.

    Args:
        lengths: the length of each sample (see :func:`lengths_of`).
        batch_size: indices per batch on each replica.
        mega_batch_mult: mega-batch size in global batches.
        seed: the epoch's order comes from ``torch.Generator().manual_seed(seed + epoch)``.
        num_replicas: the number of data-parallel replicas (see the module docstring for the split).
        rank: this replica, in ``[0, num_replicas)``.
        drop_last: drop the final short batch instead of yielding it.
        start_batch: begin the current epoch at this batch (resuming); reset by :meth:`set_epoch`.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        mega_batch_mult: int = 50,
        seed: int = 0,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        start_batch: int = 0,
    ) -> None:
        if mega_batch_mult < 1:
            raise ValueError(f"mega_batch_mult must be >= 1, got {mega_batch_mult}")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        if self.lengths.dim() != 1:
            raise ValueError(f"lengths must be one int per sample, got shape {tuple(self.lengths.shape)}")
        self.mega_batch_mult = mega_batch_mult
        super().__init__(len(self.lengths), batch_size, seed, num_replicas, rank, drop_last, start_batch)

    def _global_batches(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.randperm(self.num_samples, generator=generator)
        # sort by (mega-batch, length descending): two stable sorts, the primary key last
        mega_id = torch.arange(self.num_samples) // (self.global_batch_size * self.mega_batch_mult)
        by_length = torch.argsort(self.lengths[order], descending=True, stable=True)
        by_mega = torch.argsort(mega_id[by_length], stable=True)
        full, tail = self._cut(order[by_length[by_mega]])
        if len(full):
            full = full[torch.randperm(len(full), generator=generator)]
            longest = int(torch.argmax(self.lengths[full[:, 0]]))  # rows are sorted: column 0 holds each maximum
            full[[0, longest]] = full[[longest, 0]]
        return full, tail


def is_hf_dataset(dataset: Any) -> bool:
    """Whether ``dataset`` is a Hugging Face ``datasets`` object (read through Arrow, by column, not row by row)."""
    return type(dataset).__module__.startswith("datasets.")


def lengths_of(dataset: Any, column: str = "input_ids") -> list[int]:
    """The length of every sample, for :class:`LengthGroupedSampler`.

    Uses a ``length`` field when the samples have one, else the length of ``column``.

    Args:
        dataset: a sequence of mappings (e.g. a list of dicts), or a ``datasets.Dataset``; the latter is read
            through Arrow (``list_value_length`` on the column), never row by row.
        column: the field whose length counts.

    Returns:
        One int per sample.

    Raises:
        KeyError: the samples have neither ``length`` nor ``column``.
    """
    if is_hf_dataset(dataset):
        import pyarrow.compute as pc

        table = dataset.with_format("arrow")  # honours select()/shuffle() index mappings
        if "length" in dataset.column_names:
            return table["length"].to_pylist()
        if column not in dataset.column_names:
            raise KeyError(f"the dataset has neither a 'length' nor a {column!r} column: {dataset.column_names}")
        return pc.list_value_length(table[column]).to_pylist()
    if len(dataset) == 0:
        return []
    first = dataset[0]
    if not isinstance(first, Mapping):
        raise TypeError(f"expected samples that are mappings, got {type(first).__name__}")
    if "length" in first:
        return [int(sample["length"]) for sample in dataset]
    if column not in first:
        raise KeyError(f"the samples have neither a 'length' nor a {column!r} field: {sorted(first)}")
    return [len(sample[column]) for sample in dataset]
