"""WhisperTokenizer: Whisper's byte-level BPE from its ``tokenizer.json``, decoding without the special tokens.

The vocabulary is GPT-2's 50,257 tokens plus Whisper's special tokens (``<|endoftext|>``,
``<|startoftranscript|>``, languages, tasks, ``<|notimestamps|>``); the model's output layer has more rows:
the timestamp tokens ``<|0.00|>`` ... ``<|30.00|>`` that follow ``<|notimestamps|>``. Encoding applies the
file's template (``<|startoftranscript|><|notimestamps|> text <|endoftext|>``: training labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelcore.tokenization import Tokenizer
from modelcore.tokenization_encoding import as_id_list

NO_TIMESTAMPS = "<|notimestamps|>"


class WhisperTokenizer(Tokenizer):
    """A :class:`~modelcore.tokenization.Tokenizer` that knows Whisper's timestamp tokens.

    ``decode(ids, skip_special_tokens=True)`` drops the special tokens and the timestamp ids (those after
    ``<|notimestamps|>``), as transformers' ``WhisperTokenizer`` does; load with ``from_pretrained(folder)``.
    """

    @property
    def timestamp_begin(self) -> int | None:
        """The id of ``<|0.00|>``, the first timestamp token (one after ``<|notimestamps|>``), if known."""
        no_timestamps = self._backend.token_to_id(NO_TIMESTAMPS)
        return None if no_timestamps is None else no_timestamps + 1

    def decode(
        self,
        ids: int | Sequence[int] | Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        """Text of ``ids``; with ``skip_special_tokens`` the special and timestamp tokens are dropped.

        Args:
            ids: a list of ids, a 1-D tensor or array, or a single id.
            skip_special_tokens: drop ``<|startoftranscript|>``, ``<|endoftext|>``, ... and timestamps.
            clean_up_tokenization_spaces: as :meth:`Tokenizer.decode`.
        """
        ids = as_id_list(ids)
        begin = self.timestamp_begin
        if skip_special_tokens and begin is not None:
            ids = [i for i in ids if i < begin]
        return super().decode(ids, skip_special_tokens, clean_up_tokenization_spaces)
