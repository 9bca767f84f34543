"""Tokenizer: a small wrapper over ``tokenizers.Tokenizer`` that reads and writes the Hugging Face layout.

This module is the public face (:class:`BatchEncoding`, :class:`Tokenizer`); the work lives next to it:
:mod:`modelcore.tokenization_files` (the on-disk layout: ``tokenizer.json``, ``tokenizer_config.json``,
``vocab.txt``, ...), :mod:`modelcore.tokenization_encoding` (the stages of ``__call__`` and ``decode``),
:mod:`modelcore.tokenization_vocab` (token <-> id lookups and special tokens, a mixin of :class:`Tokenizer`),
:mod:`modelcore.tokenization_training` (training) and :mod:`modelcore.chat_template` (the Jinja sandbox).

Thread safety: encoding and decoding change nothing shared, so one instance may be called from many threads at
once (a served model is). The Rust backend itself is never configured for padding or truncation; each call encodes
with a copy configured once for its settings (see :class:`~modelcore.tokenization_encoding.ConfiguredBackends`), so
the backend saved by :meth:`Tokenizer.save_pretrained` never carries per-call state either. Changing the tokenizer
(adding tokens, setting a special token, editing :attr:`Tokenizer.backend`) while other threads encode is not
supported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken, models

from modelcore.chat_template import render_chat_template
from modelcore.errors import TokenizerError
from modelcore.serialization.atomic import atomic_write_text
from modelcore.tokenization_encoding import (
    ConfiguredBackends,
    EncodingSettings,
    as_id_list,
    clean_up_tokenization,
    collect_columns,
    encode_batch,
    encoding_settings,
    pack_inputs,
    resolve_strategies,
    rust_errors,
    to_tensor,
)
from modelcore.tokenization_files import ADDITIONAL, NO_MAX_LENGTH, OVERRIDABLE, files_to_save, read_pretrained
from modelcore.tokenization_training import retrain_backend, train_backend
from modelcore.tokenization_vocab import VocabularyMixin

logger = logging.getLogger(__name__)


class BatchEncoding(dict):
    """The output of :meth:`Tokenizer.__call__`: a dict of ``input_ids``, ``attention_mask``, ... .

    Keys read as attributes too (``enc.input_ids``). ``encodings`` keeps the backend ``tokenizers.Encoding``
    objects (word ids, offsets, ...).
    """

    def __init__(self, data: Mapping[str, Any], encodings: list[tokenizers.Encoding] | None = None) -> None:
        super().__init__(data)
        self.encodings = encodings

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: Any) -> BatchEncoding:
        """Move every tensor value to ``device`` (a ``torch.device`` or a string) in place.

        Returns:
            ``self``, for chaining.
        """
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """The index of the word each token of sequence ``batch_index`` comes from (None for special tokens)."""
        if not self.encodings:
            raise TokenizerError("word_ids() needs the backend encodings, which this BatchEncoding does not hold")
        return self.encodings[batch_index].word_ids


class Tokenizer(VocabularyMixin):
    """A text tokenizer with the Hugging Face fast-tokenizer interface, over a ``tokenizers.Tokenizer``.

    Args:
        backend: the ``tokenizers.Tokenizer`` holding the pipeline and vocabulary.
        special_tokens: role -> token, e.g. ``{"pad_token": "[PAD]"}``, plus an optional
            ``"additional_special_tokens"`` list. Tokens missing from the backend are added as special tokens.
        model_max_length: the longest input the model takes; the default ``max_length`` when truncating.
        padding_side: ``"right"`` or ``"left"``.
        truncation_side: ``"right"`` or ``"left"``.
        chat_template: a Jinja template for :meth:`apply_chat_template`.
        model_input_names: the keys ``__call__`` returns by default; derived from the backend model when None
            (``token_type_ids`` only for WordPiece).
        clean_up_tokenization_spaces: the default of :meth:`decode`'s argument of the same name.
        tokenizer_class: the ``tokenizer_class`` written to ``tokenizer_config.json`` (Hugging Face picks its
            class from it); None means ``"PreTrainedTokenizerFast"``, which loads ``tokenizer.json`` as is.
        extra_config: other ``tokenizer_config.json`` entries to carry through a save (``do_lower_case``, ...).
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        special_tokens: Mapping[str, Any] | None = None,
        model_max_length: int = NO_MAX_LENGTH,
        padding_side: str = "right",
        truncation_side: str = "right",
        chat_template: str | None = None,
        model_input_names: Sequence[str] | None = None,
        clean_up_tokenization_spaces: bool = False,
        tokenizer_class: str | None = None,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        self._backend = backend
        self._backend.no_padding()  # never configured: each call encodes with a copy configured for it
        self._backend.no_truncation()
        self._configured = ConfiguredBackends(backend)
        self._special_tokens: dict[str, str] = {}
        self.additional_special_tokens: list[str] = []
        self.add_special_tokens(special_tokens or {})
        self.model_max_length = model_max_length
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.chat_template = chat_template
        if model_input_names is None:  # segment ids are a BERT (WordPiece) thing; BPE models take none
            with_types = isinstance(backend.model, models.WordPiece)
            model_input_names = ["input_ids", "token_type_ids", "attention_mask"] if with_types else None
        self.model_input_names = list(model_input_names or ["input_ids", "attention_mask"])
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.tokenizer_class = tokenizer_class
        self.extra_config = dict(extra_config or {})

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, src: str | os.PathLike, **overrides: Any) -> Tokenizer:
        """Load a tokenizer from a checkpoint directory, an asset name or a GGUF file.

        Args:
            src: a directory with ``tokenizer.json`` or ``vocab.txt`` (+ ``tokenizer_config.json``,
                ``special_tokens_map.json``), an asset name known to ``modelcore.assets``, or a ``.gguf`` file
                (the tokenizer is built from its metadata, see ``modelcore.tokenization_gguf``).
            **overrides: tokenizer_config entries to override: special tokens, ``model_max_length``,
                ``padding_side``, ``truncation_side``, ``chat_template``, ``model_input_names``,
                ``clean_up_tokenization_spaces``, ``do_lower_case``.

        Returns:
            The tokenizer.

        Raises:
            FileNotFoundError: the directory has neither ``tokenizer.json`` nor ``vocab.txt``.
            ValueError: a file is not valid JSON or ``tokenizers`` cannot parse it (the message names it).
            TypeError: an unknown override.
        """
        from modelcore.serialization.sources import is_gguf_file, resolve_source

        unknown = sorted(set(overrides) - OVERRIDABLE)
        if unknown:
            raise TypeError(
                f"Tokenizer.from_pretrained() got unexpected overrides {unknown}; allowed: {sorted(OVERRIDABLE)}"
            )
        location = resolve_source(src)
        if is_gguf_file(location):
            from modelcore.tokenization_gguf import read_gguf_tokenizer

            backend, settings = read_gguf_tokenizer(location, overrides)
        else:
            backend, settings = read_pretrained(location, overrides)
        return cls(backend, **settings)

    # ------------------------------------------------------------------ encoding

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
        return_attention_mask: bool = True,
        return_token_type_ids: bool | None = None,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        pad_to_multiple_of: int | None = None,
    ) -> BatchEncoding:
        """Tokenize one text (or text pair) or a batch of them.

        Args:
            text: a string, or a list of strings (a batch).
            text_pair: the second sequence(s), same shape as ``text``.
            padding: ``True``/``"longest"`` pads to the longest in the batch, ``"max_length"`` to ``max_length``;
                ``False``/``"do_not_pad"`` does not pad.
            truncation: ``True``/``"longest_first"``, ``"only_first"``, ``"only_second"``, or ``None``/``False``.
                ``None`` with a ``max_length`` and no padding truncates (longest first), as Hugging Face does.
            max_length: the length to truncate or pad to; defaults to ``model_max_length``.
            return_tensors: ``None`` (Python lists), ``"pt"`` (torch tensors) or ``"np"`` (numpy arrays).
            add_special_tokens: apply the post-processor template (``[CLS] ... [SEP]``).
            return_attention_mask: include ``attention_mask``.
            return_token_type_ids: include ``token_type_ids``; None means "if in ``model_input_names``".
            return_special_tokens_mask: include ``special_tokens_mask``.
            return_offsets_mapping: include ``offset_mapping`` (character spans).
            pad_to_multiple_of: round padded lengths up to a multiple of this.

        Returns:
            A :class:`BatchEncoding`; for a single string without ``return_tensors``, its values are flat lists.
        """
        padding_strategy, truncation_strategy, max_length = resolve_strategies(
            self, padding, truncation, max_length, return_tensors
        )
        inputs, is_batched = pack_inputs(text, text_pair)
        settings = encoding_settings(self, padding_strategy, truncation_strategy, max_length, pad_to_multiple_of)
        encodings = encode_batch(self._configured, inputs, settings, add_special_tokens)
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        data = collect_columns(
            encodings,
            token_type_ids=return_token_type_ids,
            attention_mask=return_attention_mask,
            special_tokens_mask=return_special_tokens_mask,
            offset_mapping=return_offsets_mapping,
        )
        if return_tensors is not None:
            return BatchEncoding({key: to_tensor(key, rows, return_tensors) for key, rows in data.items()}, encodings)
        if not is_batched:
            data = {key: rows[0] for key, rows in data.items()}
        return BatchEncoding(data, encodings)

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        *,
        truncation: bool | str | None = None,
        max_length: int | None = None,
    ) -> list[int]:
        """Token ids of one text (or pair).

        Args:
            text: the text.
            text_pair: an optional second text.
            add_special_tokens: apply the post-processor template.
            truncation: as in :meth:`__call__`.
            max_length: as in :meth:`__call__`.

        Returns:
            The ids.
        """
        encoding = self(
            text,
            text_pair,
            add_special_tokens=add_special_tokens,
            truncation=truncation,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return encoding["input_ids"]

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[str]:
        """The tokens (strings) of ``text``, without special tokens unless asked.

        Args:
            text: the text.
            add_special_tokens: apply the post-processor template.

        Returns:
            The token strings.
        """
        if not isinstance(text, str):
            raise TypeError(f"tokenize() takes one str, got {type(text).__name__}")
        return encode_batch(self._configured, [text], EncodingSettings(), add_special_tokens)[0].tokens

    # ------------------------------------------------------------------ decoding

    def decode(
        self,
        ids: int | Sequence[int] | Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        """Turn ids back into text.

        Args:
            ids: a list of ids, a 1-D tensor or array, or a single id.
            skip_special_tokens: drop special tokens (``[CLS]``, ``[PAD]``, ...).
            clean_up_tokenization_spaces: remove spaces before punctuation and contractions (`` ,`` -> ``,``);
                defaults to the tokenizer's setting.

        Returns:
            The text.
        """
        ids = as_id_list(ids)
        with rust_errors("decoding"):
            text = self._backend.decode(ids, skip_special_tokens=skip_special_tokens)
        if self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces:
            text = clean_up_tokenization(text)
        return text

    def batch_decode(
        self,
        sequences: Sequence[Sequence[int]] | Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> list[str]:
        """Decode each sequence of a batch (a list of lists, or a 2-D tensor or array).

        Args:
            sequences: the batch of id sequences.
            skip_special_tokens: as in :meth:`decode`.
            clean_up_tokenization_spaces: as in :meth:`decode`.

        Returns:
            One text per sequence.
        """
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in as_id_list(sequences)]

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (never configured for padding or truncation).

        Reading this property drops the configured copies calls encode with, so a change made to the returned
        backend (a new normalizer, added tokens) applies from the next call on. Read it again after a later change:
        a change through a reference kept across calls is not seen by copies built in between.
        """
        self._configured.clear()
        return self._backend

    def add_special_tokens(self, special_tokens: Mapping[str, Any]) -> int:
        """:meth:`VocabularyMixin.add_special_tokens`, then the configured backend copies are rebuilt on next use."""
        try:
            return super().add_special_tokens(special_tokens)
        finally:
            self._configured.clear()  # the backend's added tokens may have changed: rebuild the copies

    def add_tokens(self, tokens: str | AddedToken | Sequence[str | AddedToken], special_tokens: bool = False) -> int:
        """:meth:`VocabularyMixin.add_tokens`, then the configured backend copies are rebuilt on next use."""
        try:
            return super().add_tokens(tokens, special_tokens)
        finally:
            self._configured.clear()

    @property
    def padding_side(self) -> str:
        """Which side ``padding`` fills: ``"right"`` or ``"left"``."""
        return self._padding_side

    @padding_side.setter
    def padding_side(self, side: str) -> None:
        self._padding_side = _side(side, "padding_side")

    @property
    def truncation_side(self) -> str:
        """Which side ``truncation`` cuts: ``"right"`` or ``"left"``."""
        return self._truncation_side

    @truncation_side.setter
    def truncation_side(self, side: str) -> None:
        self._truncation_side = _side(side, "truncation_side")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, len={len(self)}, model_max_length="
            f"{self.model_max_length}, padding_side={self.padding_side!r}, special_tokens={self.special_tokens_map})"
        )

    # ------------------------------------------------------------------ chat template

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        return_tensors: str | None = None,
        return_dict: bool = True,
        chat_template: str | None = None,
        **template_kwargs: Any,
    ) -> str | list[int] | BatchEncoding:
        """Render a conversation with the chat template, in a Jinja sandbox, and optionally tokenize it.

        Args:
            messages: ``[{"role": "user", "content": "..."}, ...]``.
            add_generation_prompt: end with the template's cue for the assistant's turn.
            tokenize: return ids instead of the rendered text.
            return_tensors: with ``tokenize``: ``None``, ``"pt"`` or ``"np"``.
            return_dict: with ``tokenize``: a :class:`BatchEncoding` (as Hugging Face v5) rather than a list of ids.
            chat_template: use this template instead of the tokenizer's.
            **template_kwargs: extra variables for the template (``tools``, ``documents``, ...).

        Returns:
            The rendered text, its ids, or a :class:`BatchEncoding`.

        Raises:
            TokenizerError: neither the tokenizer nor the call has a chat template.
        """
        template = chat_template or self.chat_template
        if not template:
            raise TokenizerError(
                "this tokenizer has no chat_template; pass chat_template=... or set tokenizer.chat_template"
            )
        context = {**self._special_tokens, **template_kwargs}
        rendered = render_chat_template(template, messages, add_generation_prompt, context)
        if not tokenize:
            return rendered
        # the template writes bos/eos itself, so the post-processor must not add them again
        encoding = self(rendered, add_special_tokens=False, return_tensors=return_tensors, return_token_type_ids=False)
        return encoding if return_dict else encoding["input_ids"]

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[Path]:
        """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` atomically.

        Args:
            save_directory: created if missing.

        Returns:
            The paths written.
        """
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in files_to_save(self).items():
            atomic_write_text(directory / name, text)
            written.append(directory / name)
        logger.info("saved tokenizer to %s", directory)
        return written

    # ------------------------------------------------------------------ training

    def train_new_from_iterator(
        self,
        text_iterator: Iterable[str] | Iterable[Sequence[str]],
        vocab_size: int,
        *,
        min_frequency: int = 2,
        special_tokens: Sequence[str] | None = None,
        show_progress: bool = False,
    ) -> Tokenizer:
        """Train a tokenizer of the same kind (same normalizer, pre-tokenizer, decoder and template) on new text.

        The special tokens keep their roles and take the first ids; the post-processor's special token ids are
        re-mapped to the new vocabulary.

        Args:
            text_iterator: texts, or batches (lists) of texts.
            vocab_size: size of the new vocabulary, special tokens included.
            min_frequency: the least count a merge needs.
            special_tokens: extra special tokens to reserve (added as ``additional_special_tokens``).
            show_progress: show the ``tokenizers`` progress bar.

        Returns:
            The new tokenizer.
        """
        reserved = [*self.all_special_tokens, *(special_tokens or [])]
        backend = retrain_backend(
            self._backend,
            text_iterator,
            vocab_size,
            reserved,
            min_frequency=min_frequency,
            show_progress=show_progress,
        )
        new_special = dict(self.special_tokens_map)
        new_special[ADDITIONAL] = [*self.additional_special_tokens, *(special_tokens or [])]
        return self._like(backend, new_special)

    def _like(self, backend: tokenizers.Tokenizer, special_tokens: Mapping[str, Any]) -> Tokenizer:
        return type(self)(
            backend,
            special_tokens=special_tokens,
            model_max_length=self.model_max_length,
            padding_side=self.padding_side,
            truncation_side=self.truncation_side,
            chat_template=self.chat_template,
            model_input_names=self.model_input_names,
            clean_up_tokenization_spaces=self.clean_up_tokenization_spaces,
            tokenizer_class=self.tokenizer_class,
            extra_config=self.extra_config,
        )

    @classmethod
    def train(
        cls,
        text_iterator: Iterable[str] | Iterable[Sequence[str]],
        model: str = "bpe",
        vocab_size: int = 8000,
        *,
        special_tokens: Mapping[str, str] | None = None,
        lowercase: bool | None = None,
        min_frequency: int = 2,
        model_max_length: int = NO_MAX_LENGTH,
        show_progress: bool = False,
    ) -> Tokenizer:
        """Train a fresh tokenizer from a corpus.

        ``"bpe"`` is byte-level BPE (GPT-2 style: any text round-trips through ``decode``, no template, default
        special tokens ``<s>``, ``</s>``, ``<pad>``). ``"wordpiece"`` is BERT's pipeline (BertNormalizer,
        ``##`` sub-words, ``[CLS] A [SEP] B [SEP]`` template, special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]``).

        Args:
            text_iterator: texts, or batches (lists) of texts.
            model: ``"bpe"`` or ``"wordpiece"``.
            vocab_size: size of the vocabulary, special tokens included.
            special_tokens: role -> token (``{"pad_token": "<pad>", ...}``), replacing the defaults.
            lowercase: lowercase the text first; default False for BPE, True for WordPiece.
            min_frequency: the least count a merge needs.
            model_max_length: stored as the tokenizer's ``model_max_length``.
            show_progress: show the ``tokenizers`` progress bar.

        Returns:
            The trained tokenizer.
        """
        backend, special_tokens = train_backend(
            text_iterator,
            model,
            vocab_size,
            special_tokens,
            lowercase=lowercase,
            min_frequency=min_frequency,
            show_progress=show_progress,
        )
        return cls(backend, special_tokens=special_tokens, model_max_length=model_max_length)


# ---------------------------------------------------------------------- helpers


def _side(side: str, argument: str) -> str:
    if side not in ("right", "left"):
        raise TokenizerError(f"{argument} must be 'right' or 'left', got {side!r}")
    return side
