"""Collators: turn a list of dataset rows (as a ``DataLoader`` yields them) into a batch of tensors.

Rows are mappings of Python ints/floats/lists, numpy arrays or tensors. Padding happens here, in torch, on the
already tokenized ids: one flat tensor is built from all rows and scattered into the padded batch through a
boolean mask, so nothing is re-tokenized and there is no per-token Python work.

Conventions shared by every collator (as in Hugging Face):

- ``label`` and ``label_ids`` become ``labels`` (int64 for integer labels, float32 for float labels).
- Non-numeric fields (strings such as the raw ``text``) and ``None`` values are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import torch

# field -> value filling padded positions; input_ids take the tokenizer's pad id instead
PADDED_FIELDS: dict[str, int] = {
    "input_ids": -1,  # placeholder: replaced by tokenizer.pad_token_id
    "attention_mask": 0,
    "token_type_ids": 0,
    "special_tokens_mask": 1,  # padding counts as special, so masked language modeling never picks it
}
LABEL_FIELDS = ("label", "label_ids")
IGNORE_INDEX = -100  # the label cross-entropy skips


def default_data_collator(features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack rows of equal-shaped values into tensors, without padding.

    Args:
        features: the rows; every numeric field must have the same shape in every row.

    Returns:
        Field -> tensor with a leading batch dimension; ``label``/``label_ids`` are renamed ``labels``;
        string and ``None`` fields are dropped.

    Raises:
        ValueError: a field has rows of different lengths (use :class:`DataCollatorWithPadding`), or the rows
            do not all have the same keys.
    """
    rows = _as_rows(features)
    if not rows:
        return {}
    _check_same_keys(rows)
    return _collate_columns(rows, skip=())


@dataclass
class DataCollatorWithPadding:
    """Pad ``input_ids``, ``attention_mask``, ``token_type_ids`` and ``special_tokens_mask`` to one length.

    ``input_ids`` are padded with ``tokenizer.pad_token_id``, the masks and token types with 0 (except
    ``special_tokens_mask``, padded with 1: a pad is a special token), on ``tokenizer.padding_side`` (read at
    each call). A missing ``attention_mask`` is created. Other numeric fields are stacked as they are.

    Args:
        tokenizer: gives ``pad_token_id`` and ``padding_side``.
        padding: ``True``/``"longest"`` pads to the longest row, ``"max_length"`` to ``max_length`` (default
            ``tokenizer.model_max_length``), ``False``/``"do_not_pad"`` requires rows of equal length.
        max_length: the length for ``padding="max_length"``; ignored by ``"longest"``.
        pad_to_multiple_of: round the padded length up to a multiple of this (8 or 64 suit tensor cores).
        return_tensors: only ``"pt"``.
    """

    tokenizer: Any
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def __post_init__(self) -> None:
        _check_padding_options(self.padding, self.pad_to_multiple_of, self.return_tensors)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        rows = _as_rows(features)
        _check_same_keys(rows)
        batch = pad_rows(rows, self.tokenizer, self.padding, self.max_length, self.pad_to_multiple_of)
        batch.update(_collate_columns(rows, skip=PADDED_FIELDS))
        return batch


@dataclass
class DataCollatorForLanguageModeling:
    """Pad rows and build language-modeling ``labels``: causal (``mlm=False``) or masked (``mlm=True``).

    Causal: ``labels`` is a copy of ``input_ids`` with padded positions set to -100. Padding is read from the
    attention mask, not from the pad id, because the pad token is often the eos token (a real eos keeps its
    label). The model shifts the labels itself.

    Masked (BERT): each position that is neither a special token nor padding is chosen with probability
    ``mlm_probability``; ``labels`` holds the original id at chosen positions and -100 elsewhere. A chosen
    position becomes the mask token with probability ``mask_replace_prob`` (0.8), a uniformly random token id
    with probability ``random_replace_prob`` (0.1), and stays unchanged otherwise. Special tokens are those of
    a ``special_tokens_mask`` field when the rows carry one (it is then dropped from the batch), else the ids in
    ``tokenizer.all_special_ids``.

    Rows may also be bare id sequences (lists or tensors). Any ``label``/``label_ids``/``labels`` field of the
    rows is replaced by the language-modeling labels; other numeric fields are stacked as they are.

    Args:
        tokenizer: gives ``pad_token_id``, ``padding_side``, ``mask_token_id``, ``all_special_ids``, ``len()``.
        mlm: masked (True) or causal (False) language modeling.
        mlm_probability: the share of eligible tokens chosen for prediction.
        pad_to_multiple_of: round the padded length up to a multiple of this.
        seed: when given, masking draws from a ``torch.Generator`` seeded with it (``seed + worker id`` inside a
            ``DataLoader`` worker, so workers do not repeat each other), making runs reproducible; otherwise it
            draws from torch's global generator.
        mask_replace_prob: the share of chosen tokens replaced by the mask token.
        random_replace_prob: the share of chosen tokens replaced by a random token.

    Raises:
        ValueError: ``mlm=True`` and the tokenizer has no mask token; probabilities out of range.
    """

    tokenizer: Any
    mlm: bool = True
    mlm_probability: float = 0.15
    pad_to_multiple_of: int | None = None
    seed: int | None = None
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    _generator: torch.Generator | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mlm and self.tokenizer.mask_token_id is None:
            raise ValueError(
                "DataCollatorForLanguageModeling(mlm=True) needs a tokenizer with a mask token, and this one has "
                "none; use mlm=False for causal language modeling, or set tokenizer.mask_token"
            )
        if not 0.0 <= self.mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability must lie in [0, 1], got {self.mlm_probability}")
        replace = (self.mask_replace_prob, self.random_replace_prob)
        if min(replace) < 0.0 or sum(replace) > 1.0:
            raise ValueError(
                "mask_replace_prob and random_replace_prob must be >= 0 and sum to at most 1, got "
                f"{self.mask_replace_prob} and {self.random_replace_prob}"
            )
        _check_padding_options(True, self.pad_to_multiple_of, "pt")

    def __call__(self, features: Sequence[Mapping[str, Any] | Sequence[int] | torch.Tensor]) -> dict[str, Any]:
        rows = [row if isinstance(row, Mapping) else {"input_ids": row} for row in features]
        rows = _as_rows(rows)
        _check_same_keys(rows)
        batch = pad_rows(rows, self.tokenizer, True, None, self.pad_to_multiple_of)
        batch.update(_collate_columns(rows, skip=(*PADDED_FIELDS, *LABEL_FIELDS, "labels")))
        special = batch.pop("special_tokens_mask", None)
        if self.mlm:
            batch["input_ids"], batch["labels"] = self.mask_tokens(batch["input_ids"], batch["attention_mask"], special)
        else:
            batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        return batch

    def mask_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, special_tokens_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Choose and corrupt positions for masked language modeling.

        Args:
            input_ids: ``(B, T)`` padded ids; not modified.
            attention_mask: ``(B, T)``, 0 at padding.
            special_tokens_mask: ``(B, T)``, 1 at special tokens; computed from ``tokenizer.all_special_ids``
                when None.

        Returns:
            ``(inputs, labels)``: the corrupted ids and the labels (original id at chosen positions, -100 else).
        """
        generator = self._rng()
        if special_tokens_mask is None:
            ids = [i for i in self.tokenizer.all_special_ids if i is not None]
            special_ids = torch.tensor(ids, dtype=input_ids.dtype)
            special_tokens_mask = torch.isin(input_ids, special_ids)
        ineligible = special_tokens_mask.bool() | (attention_mask == 0)
        probability = torch.full(input_ids.shape, self.mlm_probability).masked_fill(ineligible, 0.0)
        chosen = torch.bernoulli(probability, generator=generator).bool()
        labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)

        # one uniform draw per position splits the chosen ones: [0, p_mask) -> mask, [p_mask, p_mask + p_rand) -> random
        draw = torch.rand(input_ids.shape, generator=generator)
        to_mask = chosen & (draw < self.mask_replace_prob)
        to_random = chosen & ~to_mask & (draw < self.mask_replace_prob + self.random_replace_prob)
        random_ids = torch.randint(len(self.tokenizer), input_ids.shape, generator=generator, dtype=input_ids.dtype)
        inputs = input_ids.masked_fill(to_mask, self.tokenizer.mask_token_id)
        inputs = torch.where(to_random, random_ids, inputs)
        return inputs, labels

    def _rng(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None:  # created on first use, i.e. inside the DataLoader worker that calls us
            worker = torch.utils.data.get_worker_info()
            self._generator = torch.Generator().manual_seed(self.seed + (worker.id if worker else 0))
        return self._generator


# ---------------------------------------------------------------------------------------------------- padding


def pad_rows(
    rows: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    padding: bool | str = True,
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pad the sequence fields of ``rows`` (those of :data:`PADDED_FIELDS` present) into ``(B, T)`` int64 tensors.

    Args:
        rows: mappings with at least ``input_ids``; the other padded fields must match its lengths.
        tokenizer: gives ``pad_token_id`` and ``padding_side``.
        padding: as in :class:`DataCollatorWithPadding`.
        max_length: as in :class:`DataCollatorWithPadding`.
        pad_to_multiple_of: as in :class:`DataCollatorWithPadding`.

    Returns:
        The padded fields, ``attention_mask`` always included.

    Raises:
        ValueError: a row lacks ``input_ids``; the tokenizer has no pad token; a row is longer than
            ``max_length``; rows differ in length with padding off; a field's length differs from ``input_ids``.
    """
    if not rows:
        raise ValueError("cannot collate an empty batch")
    for i, row in enumerate(rows):
        if "input_ids" not in row:
            raise ValueError(f"feature {i} has no 'input_ids' field (it has {sorted(row)}); tokenize the data first")
    lengths = torch.tensor([len(row["input_ids"]) for row in rows], dtype=torch.long)
    target = _target_length(lengths, tokenizer, padding, max_length, pad_to_multiple_of)
    pad_id = tokenizer.pad_token_id
    if pad_id is None and bool((lengths < target).any()):
        raise ValueError(
            "the tokenizer has no pad token (pad_token_id is None), so rows of different lengths cannot be padded; "
            "set one first, e.g. tokenizer.pad_token = tokenizer.eos_token"
        )
    # (B, T) True at real tokens; row-major order of the True cells is the order of the concatenated rows
    positions = torch.arange(target)
    if getattr(tokenizer, "padding_side", "right") == "left":
        real = positions >= (target - lengths)[:, None]
    else:
        real = positions < lengths[:, None]
    batch = {}
    for name, fill in PADDED_FIELDS.items():
        if name not in rows[0]:
            continue
        column = [row[name] for row in rows]
        if name != "input_ids":
            _check_lengths_match(name, column, lengths)
        padded = torch.full((len(rows), target), pad_id if name == "input_ids" else fill, dtype=torch.long)
        padded[real] = _concat(column)
        batch[name] = padded
    if "attention_mask" not in batch:
        batch["attention_mask"] = real.long()
    return batch


def _target_length(
    lengths: torch.Tensor, tokenizer: Any, padding: bool | str, max_length: int | None, multiple: int | None
) -> int:
    longest = int(lengths.max()) if len(lengths) else 0
    if padding in (False, "do_not_pad"):
        if bool((lengths != longest).any()):
            raise ValueError(
                f"rows have different lengths ({int(lengths.min())} to {longest}) and padding is off; "
                "pass padding=True or 'max_length'"
            )
        return longest
    if padding == "max_length":
        limit = max_length if max_length is not None else tokenizer.model_max_length
        if longest > limit:
            raise ValueError(
                f"a row has {longest} tokens, more than max_length={limit}; truncate when tokenizing "
                "(tokenizer(..., truncation=True, max_length=...))"
            )
        longest = limit
    if multiple:
        longest = math.ceil(longest / multiple) * multiple
    return longest


def _check_padding_options(padding: bool | str, multiple: int | None, return_tensors: str) -> None:
    if padding not in (True, False, "longest", "max_length", "do_not_pad"):
        raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
    if multiple is not None and (not isinstance(multiple, int) or multiple < 1):
        raise ValueError(f"pad_to_multiple_of must be a positive int, got {multiple!r}")
    if return_tensors != "pt":
        raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")


def _check_lengths_match(name: str, column: list[Any], lengths: torch.Tensor) -> None:
    for i, (values, length) in enumerate(zip(column, lengths.tolist(), strict=True)):
        if len(values) != length:
            raise ValueError(f"feature {i}: '{name}' has {len(values)} values but 'input_ids' has {length}")


def _concat(column: list[Any]) -> torch.Tensor:
    """All rows of one field as one flat int64 tensor."""
    if isinstance(column[0], (torch.Tensor, np.ndarray)):
        return torch.cat([torch.as_tensor(values).reshape(-1) for values in column]).long()
    return torch.tensor(list(chain.from_iterable(column)), dtype=torch.long)


# ---------------------------------------------------------------------------------------------------- stacking


def _as_rows(features: Sequence[Any]) -> list[Mapping[str, Any]]:
    rows = list(features)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"feature {i} is a {type(row).__name__}, not a mapping of field -> value")
    return rows


def _check_same_keys(rows: Sequence[Mapping[str, Any]]) -> None:
    keys = set(rows[0]) if rows else set()
    for i, row in enumerate(rows[1:], start=1):
        if set(row) != keys:
            missing, extra = sorted(keys - set(row)), sorted(set(row) - keys)
            raise ValueError(
                f"feature {i} has different fields from feature 0 (missing {missing}, extra {extra}); "
                "every row of a batch needs the same fields"
            )


def _collate_columns(rows: Sequence[Mapping[str, Any]], skip: Sequence[str]) -> dict[str, torch.Tensor]:
    """Stack every numeric field not in ``skip``; ``label``/``label_ids`` become ``labels``."""
    batch = {}
    for name, first in rows[0].items():
        if name in skip or first is None or isinstance(first, (str, bytes)):
            continue
        if isinstance(first, (list, tuple)) and first and isinstance(first[0], (str, bytes)):
            continue  # a list of strings (e.g. words) is not numeric either
        column = [row[name] for row in rows]
        out_name = "labels" if name in LABEL_FIELDS else name
        batch[out_name] = _stack(name, column)
    return batch


def _stack(name: str, column: list[Any]) -> torch.Tensor:
    first = column[0]
    try:
        if isinstance(first, torch.Tensor):
            return torch.stack(column)
        if isinstance(first, np.ndarray):
            return torch.from_numpy(np.stack(column))
        if isinstance(first, (bool, np.bool_)):
            return torch.tensor(column, dtype=torch.bool)
        if isinstance(first, (int, np.integer)):
            return torch.tensor(column, dtype=torch.long)
        if isinstance(first, (float, np.floating)):
            return torch.tensor(column, dtype=torch.float32)
        return torch.tensor(column)
    except (RuntimeError, ValueError, TypeError) as err:
        lengths = sorted({len(values) for values in column if hasattr(values, "__len__")})
        detail = f" (row lengths {lengths})" if len(lengths) > 1 else ""
        raise ValueError(f"cannot stack field '{name}' into a tensor{detail}: {err}") from err
