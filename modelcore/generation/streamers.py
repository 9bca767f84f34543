"""Streamers: receive tokens from ``generate`` as they are produced and turn them into text.

``generate(..., streamer=s)`` calls ``s.put(prompt_ids)`` once with the (1, T) prompt, then ``s.put(ids)`` with
each new token, then ``s.end()``. The text is decoded from all tokens seen so far, and only the part that can no
longer change is emitted: a byte-level BPE may need the next token to finish a character, and a word piece may
glue onto the next one. The rules are Hugging Face's, so the chunks are the ones ``transformers`` emits.

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
    Thread(target=model.generate, kwargs=dict(input_ids=ids, streamer=streamer, max_new_tokens=50)).start()
    for text in streamer:
        ...
"""

from __future__ import annotations

import sys
import unicodedata
from queue import Queue
from typing import Any

# Code point ranges of the CJK Unified Ideographs blocks (and their extensions and compatibility forms):
# each such character is a word of its own, so it is emitted as soon as it is decoded.
CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def is_cjk_char(char: str) -> bool:
    """Whether ``char`` is a CJK ideograph (Hangul, Hiragana and Katakana are not: they are written with spaces)."""
    code = ord(char)
    return any(low <= code <= high for low, high in CJK_RANGES)


def is_word_text(text: str) -> bool:
    """Letters (with their combining marks), digits and spaces only: text that the next token cannot change.

    Symbols are held back: they may start a formatting sequence or be an unfinished character (``\\ufffd``).
    """
    return all(char.isspace() or unicodedata.category(char)[0] in "LMN" for char in text)


class BaseStreamer:
    """What ``generate`` calls: :meth:`put` with token ids, then :meth:`end` once."""

    def put(self, value: Any) -> None:
        """Receive token ids: a (1, T) or (T,) tensor."""
        raise NotImplementedError

    def end(self) -> None:
        """Generation has finished."""
        raise NotImplementedError


class TextStreamer(BaseStreamer):
    """Print the text to stdout as it is generated (batch size 1).

    Args:
        tokenizer: decodes the tokens (anything with ``decode(ids, **decode_kwargs)``).
        skip_prompt: do not print the prompt (the first :meth:`put` of each generation).
        **decode_kwargs: passed to ``tokenizer.decode`` (``skip_special_tokens=True``).
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, **decode_kwargs: Any) -> None:
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self.token_cache: list[int] = []  # tokens of the text not yet emitted (plus context before it)
        self.print_len = 0  # characters of decode(token_cache) already emitted
        self.next_tokens_are_prompt = True

    def put(self, value: Any) -> None:
        """Add token ids and emit the part of the text that is final.

        Args:
            value: (1, T) or (T,) token ids (a tensor or array).

        Raises:
            ValueError: for a batch of more than one sequence.
        """
        if len(value.shape) > 1 and value.shape[0] > 1:
            raise ValueError(
                f"{type(self).__name__} supports batch size 1 only, got token ids of shape {tuple(value.shape)}"
            )
        if len(value.shape) > 1:
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.token_cache.extend(int(token) for token in value.tolist())
        self.on_finalized_text(self._final_text())

    def _final_text(self) -> str:
        """The newly final text, advancing ``print_len`` past it."""
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\n"):
            # a line is complete: restart from its last token, kept as context for the next line's leading space
            printable = text[self.print_len :]
            self.token_cache = self.token_cache[-1:]
            self.print_len = len(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
            return printable
        pending = text[self.print_len :]
        if (text and is_cjk_char(text[-1])) or is_word_text(pending):
            printable = pending
        else:  # up to the last space: the word after it may still change
            printable = text[self.print_len : text.rfind(" ") + 1]
        self.print_len += len(printable)
        return printable

    def end(self) -> None:
        """Emit what is left, then end the stream."""
        printable = ""
        if self.token_cache:
            printable = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)[self.print_len :]
        self.token_cache, self.print_len = [], 0
        self.next_tokens_are_prompt = True
        self.on_finalized_text(printable, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Print ``text``; a newline ends the stream."""
        # printing is this class's job (it is the user-facing console streamer), so stdout, not logging
        sys.stdout.write(text + ("\n" if stream_end else ""))
        sys.stdout.flush()


class _StopSignal:
    """Marks the end of the stream in the queue (an object no text can equal)."""


STOP = _StopSignal()


class TextIteratorStreamer(TextStreamer):
    """Queue the text as it is generated; iterate over it in another thread.

    Args:
        tokenizer: decodes the tokens.
        skip_prompt: do not yield the prompt.
        timeout: seconds to wait for the next piece of text; None waits for ever. When it passes,
            iteration raises ``queue.Empty`` (so a consumer is not stuck when ``generate`` failed).
        **decode_kwargs: passed to ``tokenizer.decode``.
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, timeout: float | None = None, **decode_kwargs: Any):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: Queue[str | _StopSignal] = Queue()
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Queue ``text``, then the stop signal when the stream ends."""
        self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(STOP, timeout=self.timeout)

    def __iter__(self) -> TextIteratorStreamer:
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value is STOP:
            raise StopIteration
        return value  # type: ignore[return-value]
