"""The stages of :meth:`Tokenizer.__call__ <modelcore.tokenization.Tokenizer.__call__>` and ``decode``.

Checking the padding/truncation arguments, shaping texts and pairs into backend inputs, running the backend with
per-call padding and truncation (switched off again afterwards), gathering the output columns as lists or tensors,
and the id and text conversions of decoding.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import tokenizers

from modelcore.tokenization_files import NO_MAX_LENGTH

if TYPE_CHECKING:
    from modelcore.tokenization import Tokenizer

logger = logging.getLogger(__name__)

_PADDING = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}
_TRUNCATION = {
    None: None,
    False: None,
    "do_not_truncate": None,
    True: "longest_first",
    "longest_first": "longest_first",
    "only_first": "only_first",
    "only_second": "only_second",
}


def resolve_strategies(
    tokenizer: Tokenizer,
    padding: bool | str,
    truncation: bool | str | None,
    max_length: int | None,
    return_tensors: str | None,
) -> tuple[str | None, str | None, int | None]:
    """Check ``__call__``'s padding, truncation and tensor arguments and settle what the backend is to do.

    Returns:
        The padding strategy (``"longest"``, ``"max_length"`` or None), the truncation strategy (None when not
        truncating) and the length to truncate or pad to (``model_max_length`` when not given and needed).
    """
    padding_strategy = _choice(_PADDING, padding, "padding")
    truncation_strategy = _choice(_TRUNCATION, truncation, "truncation")
    if return_tensors not in (None, "pt", "np"):
        raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
    if truncation is None and max_length is not None and padding_strategy is None:
        truncation_strategy = "longest_first"
    if padding_strategy and tokenizer.pad_token is None:
        raise ValueError(
            "padding needs a pad token, and this tokenizer has none: set one with "
            "tokenizer.pad_token = tokenizer.eos_token or tokenizer.add_special_tokens({'pad_token': '[PAD]'})"
        )
    if max_length is None and (truncation_strategy or padding_strategy == "max_length"):
        max_length = None if tokenizer.model_max_length >= NO_MAX_LENGTH else tokenizer.model_max_length
        if max_length is None:
            logger.warning("no max_length given and the tokenizer has no model_max_length: not truncating")
            truncation_strategy = None
            if padding_strategy == "max_length":
                raise ValueError("padding='max_length' needs max_length: this tokenizer has no model_max_length")
    return padding_strategy, truncation_strategy, max_length


def pack_inputs(text: Any, text_pair: Any) -> tuple[list[Any], bool]:
    """The backend's inputs (texts, or ``(text, pair)`` tuples) and whether ``text`` was a batch."""
    is_batched = not isinstance(text, str)
    texts = _as_text_list(text, "text")
    inputs: list[Any] = texts
    if text_pair is not None:
        pairs = _as_text_list(text_pair, "text_pair")
        if isinstance(text_pair, str) == is_batched:
            raise ValueError("text and text_pair must both be strings or both be lists")
        if len(pairs) != len(texts):
            raise ValueError(f"text and text_pair differ in batch size ({len(texts)} vs {len(pairs)})")
        inputs = list(zip(texts, pairs, strict=True))
    return inputs, is_batched


def encode_batch(
    tokenizer: Tokenizer,
    inputs: list[Any],
    add_special_tokens: bool,
    padding_strategy: str | None,
    truncation_strategy: str | None,
    max_length: int | None,
    pad_to_multiple_of: int | None,
) -> list[tokenizers.Encoding]:
    """Run the backend on ``inputs`` with padding and truncation enabled for this call only."""
    backend = tokenizer.backend
    try:
        if truncation_strategy:
            backend.enable_truncation(max_length, strategy=truncation_strategy, direction=tokenizer.truncation_side)
        if padding_strategy:
            backend.enable_padding(
                direction=tokenizer.padding_side,
                pad_id=tokenizer.pad_token_id,
                pad_type_id=int(tokenizer.extra_config.get("pad_token_type_id", 0)),
                pad_token=tokenizer.pad_token,
                length=max_length if padding_strategy == "max_length" else None,
                pad_to_multiple_of=pad_to_multiple_of,
            )
        return backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
    except Exception as err:  # the Rust side raises plain Exception (e.g. "sequence to truncate too short")
        raise ValueError(f"tokenization failed: {err}") from err
    finally:
        backend.no_truncation()
        backend.no_padding()


def collect_columns(
    encodings: list[tokenizers.Encoding],
    *,
    token_type_ids: bool,
    attention_mask: bool,
    special_tokens_mask: bool,
    offset_mapping: bool,
) -> dict[str, list]:
    """``input_ids`` and the asked-for other columns, one row per encoding."""
    data: dict[str, list] = {"input_ids": [encoding.ids for encoding in encodings]}
    if token_type_ids:
        data["token_type_ids"] = [encoding.type_ids for encoding in encodings]
    if attention_mask:
        data["attention_mask"] = [encoding.attention_mask for encoding in encodings]
    if special_tokens_mask:
        data["special_tokens_mask"] = [encoding.special_tokens_mask for encoding in encodings]
    if offset_mapping:
        data["offset_mapping"] = [encoding.offsets for encoding in encodings]
    return data


def to_tensor(key: str, rows: list[list[Any]], kind: str) -> Any:
    """The rows of column ``key`` as a ``"pt"`` (torch) or ``"np"`` (numpy) int64 tensor; they must be equal length."""
    if len({len(row) for row in rows}) > 1:
        raise ValueError(
            f"cannot make a rectangular {kind!r} tensor of {key!r}: sequences have different lengths "
            f"{sorted({len(row) for row in rows})}; pass padding=True (and truncation=True) to batch them"
        )
    if kind == "pt":
        import torch

        return torch.tensor(rows, dtype=torch.long)
    import numpy as np

    return np.array(rows, dtype=np.int64)


def as_id_list(ids: Any) -> Any:
    """Tensors and arrays to (nested) lists of ints; a lone int to a one-element list."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [ids] if isinstance(ids, int) else ids


def clean_up_tokenization(text: str) -> str:
    """Hugging Face's ``clean_up_tokenization``: join spaces before punctuation and English contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't")):
        text = text.replace(before, after)
    for suffix in ("'m", "'s", "'ve", "'re"):
        text = text.replace(" " + suffix, suffix)
    return text


def _choice(table: Mapping[Any, str | None], value: Any, argument: str) -> str | None:
    if isinstance(value, (bool, str)) or value is None:
        for key, strategy in table.items():
            if key is value or (isinstance(key, str) and key == value):
                return strategy
    options = ", ".join(repr(key) for key in table)
    raise ValueError(f"{argument} must be one of {options}; got {value!r}")


def _as_text_list(text: Any, argument: str) -> list[str]:
    texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
    if texts is None or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{argument} must be a str or a list of str, got {type(text).__name__}")
    return texts
