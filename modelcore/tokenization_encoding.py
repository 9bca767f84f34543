"""The stages of :meth:`Tokenizer.__call__ <modelcore.tokenization.Tokenizer.__call__>` and ``decode``.

Checking the padding/truncation arguments, shaping texts and pairs into backend inputs, running a backend configured
for the call's padding and truncation, gathering the output columns as lists or tensors, and the id and text
conversions of decoding.

Thread safety: a ``tokenizers.Tokenizer`` stores padding and truncation in itself, so switching them on the shared
backend for each call lets concurrent calls see each other's settings (a served model answered 0.2-0.4% of requests
from 8 clients with unpadded, ragged batches). Instead, :class:`ConfiguredBackends` keeps a few copies of the backend,
each configured once for one :class:`EncodingSettings` and never changed afterwards; the Rust ``encode_batch`` only
reads its tokenizer, so any number of threads can run it on the same copy at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import tokenizers

from modelcore.errors import TokenizerError
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
# configured backend copies one tokenizer keeps (least recently used dropped first): a pipeline uses two settings,
# and a copy of a 30k-word WordPiece backend takes about 6 MB
MAX_CONFIGURED_BACKENDS = 8


class EncodingSettings(NamedTuple):
    """The padding and truncation one backend copy is configured for; fields that do not apply are None."""

    padding: str | None = None  # "longest", "max_length" or None
    pad_id: int | None = None
    pad_type_id: int | None = None
    pad_token: str | None = None
    padding_side: str | None = None
    pad_length: int | None = None  # padding="max_length" only
    pad_to_multiple_of: int | None = None
    truncation: str | None = None  # "longest_first", "only_first", "only_second" or None
    max_length: int | None = None
    truncation_side: str | None = None


class ConfiguredBackends:
    """Copies of one backend, each configured once for one :class:`EncodingSettings` and never changed afterwards.

    The source backend itself is never configured. Looking up a built copy takes no lock; building one does, so
    each settings' copy is built once. At most ``capacity`` copies are kept. :meth:`clear` drops them all: the
    owner calls it whenever the source backend changes (added tokens, a new normalizer, ...).

    Args:
        source: the backend to copy (``tokenizers.Tokenizer``).
        capacity: the most copies kept.
    """

    def __init__(self, source: tokenizers.Tokenizer, capacity: int = MAX_CONFIGURED_BACKENDS) -> None:
        self.source = source
        self.capacity = capacity
        self._lock = threading.Lock()
        self._copies: OrderedDict[EncodingSettings, tokenizers.Tokenizer] = OrderedDict()

    def get(self, settings: EncodingSettings) -> tokenizers.Tokenizer:
        """The backend copy configured for ``settings`` (built on first use).

        Returns:
            A ``tokenizers.Tokenizer`` that must only be read (encoded with), never configured.
        """
        copies = self._copies  # clear() swaps in a new dict: read the current one once
        backend = copies.get(settings)
        if backend is not None:
            with contextlib.suppress(KeyError):  # evicted by another thread meanwhile: still usable here
                copies.move_to_end(settings)
            return backend
        with self._lock:
            backend = self._copies.get(settings)
            if backend is None:
                backend = _configured_copy(self.source, settings)
                self._copies[settings] = backend
                while len(self._copies) > self.capacity:
                    self._copies.popitem(last=False)
            return backend

    def clear(self) -> None:
        """Drop every copy (after the source backend changed); calls running on an old copy finish on it."""
        with self._lock:  # waits for a copy being built from the old source, then drops it too
            self._copies = OrderedDict()

    def __len__(self) -> int:
        return len(self._copies)

    def __getstate__(self) -> dict[str, Any]:  # a lock cannot be pickled; the copies are rebuilt on use
        return {"source": self.source, "capacity": self.capacity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["source"], state["capacity"])


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
        raise TokenizerError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
    if truncation is None and max_length is not None and padding_strategy is None:
        truncation_strategy = "longest_first"
    if padding_strategy and tokenizer.pad_token is None:
        raise TokenizerError(
            "padding needs a pad token, and this tokenizer has none: set one with "
            "tokenizer.pad_token = tokenizer.eos_token or tokenizer.add_special_tokens({'pad_token': '[PAD]'})"
        )
    if max_length is None and (truncation_strategy or padding_strategy == "max_length"):
        max_length = None if tokenizer.model_max_length >= NO_MAX_LENGTH else tokenizer.model_max_length
        if max_length is None:
            logger.warning("no max_length given and the tokenizer has no model_max_length: not truncating")
            truncation_strategy = None
            if padding_strategy == "max_length":
                raise TokenizerError("padding='max_length' needs max_length: this tokenizer has no model_max_length")
    return padding_strategy, truncation_strategy, max_length


def pack_inputs(text: Any, text_pair: Any) -> tuple[list[Any], bool]:
    """The backend's inputs (texts, or ``(text, pair)`` tuples) and whether ``text`` was a batch."""
    is_batched = not isinstance(text, str)
    texts = _as_text_list(text, "text")
    inputs: list[Any] = texts
    if text_pair is not None:
        pairs = _as_text_list(text_pair, "text_pair")
        if isinstance(text_pair, str) == is_batched:
            raise TokenizerError("text and text_pair must both be strings or both be lists")
        if len(pairs) != len(texts):
            raise TokenizerError(f"text and text_pair differ in batch size ({len(texts)} vs {len(pairs)})")
        inputs = list(zip(texts, pairs, strict=True))
    return inputs, is_batched


def encoding_settings(
    tokenizer: Tokenizer,
    padding_strategy: str | None,
    truncation_strategy: str | None,
    max_length: int | None,
    pad_to_multiple_of: int | None,
) -> EncodingSettings:
    """The backend settings of one call: the resolved strategies plus the tokenizer's pad token and sides."""
    padding: dict[str, Any] = {}
    if padding_strategy:
        padding = dict(
            padding=padding_strategy,
            pad_id=tokenizer.pad_token_id,
            pad_type_id=int(tokenizer.extra_config.get("pad_token_type_id", 0)),
            pad_token=tokenizer.pad_token,
            padding_side=tokenizer.padding_side,
            pad_length=max_length if padding_strategy == "max_length" else None,
            pad_to_multiple_of=pad_to_multiple_of,
        )
    truncation: dict[str, Any] = {}
    if truncation_strategy:
        truncation = dict(
            truncation=truncation_strategy, max_length=max_length, truncation_side=tokenizer.truncation_side
        )
    return EncodingSettings(**padding, **truncation)


def encode_batch(
    backends: ConfiguredBackends, inputs: list[Any], settings: EncodingSettings, add_special_tokens: bool
) -> list[tokenizers.Encoding]:
    """Run the backend copy configured for ``settings`` on ``inputs`` (no shared state changes: thread-safe).

    Raises:
        TokenizerError: the ``tokenizers`` library failed or panicked on these inputs or settings.
    """
    backend = backends.get(settings)
    with rust_errors("tokenization"):
        return backend.encode_batch(inputs, add_special_tokens=add_special_tokens)


@contextlib.contextmanager
def rust_errors(action: str) -> Iterator[None]:
    """Turn errors of the ``tokenizers`` library into :class:`TokenizerError`, panics included.

    The Rust side raises plain ``Exception`` (e.g. "sequence to truncate too short"), and a Rust panic (e.g. a
    normalizer regex that exceeds Oniguruma's backtracking limit) arrives as ``pyo3_runtime.PanicException``, a
    ``BaseException`` that ``except Exception`` does not catch and that would kill a serving thread.
    """
    try:
        yield
    except TokenizerError:
        raise
    except BaseException as err:
        if not (isinstance(err, Exception) or type(err).__name__ == "PanicException"):
            raise  # KeyboardInterrupt, SystemExit, GeneratorExit
        raise TokenizerError(f"{action} failed in the tokenizers library: {err}") from err


def _configured_copy(source: tokenizers.Tokenizer, settings: EncodingSettings) -> tokenizers.Tokenizer:
    """A new backend like ``source``, with padding and truncation set from ``settings`` alone."""
    with rust_errors("copying the tokenizer backend"):
        backend = tokenizers.Tokenizer.from_str(source.to_str())
    # whatever the source's tokenizer.json carried, the call's arguments decide (as in Hugging Face)
    backend.no_padding()
    backend.no_truncation()
    with rust_errors("configuring padding and truncation"):
        if settings.truncation:
            backend.enable_truncation(
                settings.max_length, strategy=settings.truncation, direction=settings.truncation_side
            )
        if settings.padding:
            backend.enable_padding(
                direction=settings.padding_side,
                pad_id=settings.pad_id,
                pad_type_id=settings.pad_type_id,
                pad_token=settings.pad_token,
                length=settings.pad_length,
                pad_to_multiple_of=settings.pad_to_multiple_of,
            )
    logger.debug("configured a tokenizer backend copy for %s", settings)
    return backend


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
        raise TokenizerError(
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
    raise TokenizerError(f"{argument} must be one of {options}; got {value!r}")


def _as_text_list(text: Any, argument: str) -> list[str]:
    texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
    if texts is None:
        raise TypeError(f"{argument} must be a str or a list of str, got {type(text).__name__}")
    for index, item in enumerate(texts):
        if not isinstance(item, str):
            raise TypeError(f"{argument}[{index}] must be a str, got {type(item).__name__} ({item!r:.40})")
    return texts
