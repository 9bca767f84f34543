"""Tokenizer: a small wrapper over ``tokenizers.Tokenizer`` that reads and writes the Hugging Face layout.

A checkpoint directory holds ``tokenizer.json`` (the whole pipeline: normalizer, pre-tokenizer, model,
post-processor, decoder, added tokens) plus ``tokenizer_config.json`` / ``special_tokens_map.json``
(special tokens, ``model_max_length``, padding side, chat template). Older BERT checkpoints ship only
``vocab.txt``; for those we build the BERT WordPiece pipeline ourselves, as Hugging Face does.

Padding and truncation are configured on the Rust backend for the length of one call and switched off
afterwards, so the backend saved by :meth:`Tokenizer.save_pretrained` never carries per-call state. (As with
Hugging Face's fast tokenizers, one instance should therefore not be called from several threads at once.)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors, trainers

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
VOCAB_FILE = "vocab.txt"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers v5 saves a template; read, never written

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
ADDITIONAL = "additional_special_tokens"
NO_MAX_LENGTH = int(1e30)  # Hugging Face's VERY_LARGE_INTEGER: "this tokenizer has no length limit"

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
# tokenizer_config.json keys held as Tokenizer attributes (everything else is carried in `extra_config`)
_MANAGED = {*SPECIAL_TOKEN_NAMES, ADDITIONAL, "extra_special_tokens", "model_max_length", "padding_side"}
_MANAGED |= {"truncation_side", "chat_template", "model_input_names", "clean_up_tokenization_spaces", "tokenizer_class"}
# keys that describe where the files came from, not the tokenizer: dropped on save
_NOT_SAVED = {"name_or_path", "tokenizer_file", "special_tokens_map_file", "added_tokens_decoder", "auto_map"}
_NOT_SAVED |= {"is_local", "local_files_only"}
_OVERRIDABLE = (_MANAGED - {"tokenizer_class", "extra_special_tokens"}) | {"do_lower_case"}


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
            raise ValueError("word_ids() needs the backend encodings, which this BatchEncoding does not hold")
        return self.encodings[batch_index].word_ids


class _SpecialToken:
    """Descriptor: ``tok.pad_token`` reads and sets a named special token; ``tok.pad_token_id`` gives its id."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.token_name = name.removesuffix("_id")
        self.is_id = name.endswith("_id")

    def __get__(self, tokenizer: Tokenizer | None, owner: type) -> Any:
        if tokenizer is None:
            return self
        token = tokenizer._special_tokens.get(self.token_name)
        if token is None or not self.is_id:
            return token
        return tokenizer._backend.token_to_id(token)

    def __set__(self, tokenizer: Tokenizer, value: Any) -> None:
        if self.is_id and value is not None:
            value = tokenizer.convert_ids_to_tokens(int(value))
        tokenizer.add_special_tokens({self.token_name: value})


class Tokenizer:
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

    bos_token = _SpecialToken()
    eos_token = _SpecialToken()
    unk_token = _SpecialToken()
    sep_token = _SpecialToken()
    pad_token = _SpecialToken()
    cls_token = _SpecialToken()
    mask_token = _SpecialToken()
    bos_token_id = _SpecialToken()
    eos_token_id = _SpecialToken()
    unk_token_id = _SpecialToken()
    sep_token_id = _SpecialToken()
    pad_token_id = _SpecialToken()
    cls_token_id = _SpecialToken()
    mask_token_id = _SpecialToken()

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
        self._backend.no_padding()  # padding and truncation are set per call, never stored
        self._backend.no_truncation()
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
        """Load a tokenizer from a checkpoint directory (or an asset name).

        Args:
            src: a directory with ``tokenizer.json`` or ``vocab.txt`` (+ ``tokenizer_config.json``,
                ``special_tokens_map.json``), or an asset name known to ``modelcore.assets``.
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
        from modelcore.serialization.sources import resolve_source

        unknown = sorted(set(overrides) - _OVERRIDABLE)
        if unknown:
            raise TypeError(
                f"Tokenizer.from_pretrained() got unexpected overrides {unknown}; allowed: {sorted(_OVERRIDABLE)}"
            )
        directory = resolve_source(src)
        config = _read_json(directory / TOKENIZER_CONFIG_FILE, default={})
        for key, value in _read_json(directory / SPECIAL_TOKENS_MAP_FILE, default={}).items():
            config[key] = value  # as in Hugging Face, special_tokens_map.json wins over tokenizer_config.json
        config.update(overrides)

        tokenizer_file, vocab_file = directory / TOKENIZER_FILE, directory / VOCAB_FILE
        if tokenizer_file.is_file():
            backend = _read_backend(tokenizer_file)
        elif vocab_file.is_file():
            backend = _bert_backend(vocab_file, config)
        else:
            raise FileNotFoundError(
                f"{directory}: no tokenizer files found (looked for {TOKENIZER_FILE}, {VOCAB_FILE})"
            )
        logger.debug(
            "loaded tokenizer from %s (%s)", directory, tokenizer_file.name if tokenizer_file.is_file() else VOCAB_FILE
        )

        # Settings baked into tokenizer.json's padding/truncation are defaults, as in Hugging Face.
        json_padding, json_truncation = backend.padding or {}, backend.truncation or {}
        config.setdefault("pad_token", json_padding.get("pad_token"))
        _add_tokens_from_config(backend, config.get("added_tokens_decoder") or {})
        special_tokens = {name: _content(config[name]) for name in SPECIAL_TOKEN_NAMES if config.get(name)}
        extra = config.get(ADDITIONAL) or config.get("extra_special_tokens") or []
        extra = list(extra.values()) if isinstance(extra, dict) else extra  # v5's named extras: keep the tokens
        special_tokens[ADDITIONAL] = [_content(token) for token in extra]
        return cls(
            backend,
            special_tokens=special_tokens,
            model_max_length=int(config.get("model_max_length") or NO_MAX_LENGTH),
            padding_side=config.get("padding_side") or json_padding.get("direction", "right"),
            truncation_side=config.get("truncation_side") or json_truncation.get("direction", "right"),
            chat_template=_read_chat_template(directory, config.get("chat_template")),
            model_input_names=config.get("model_input_names"),
            clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
            tokenizer_class=config.get("tokenizer_class"),
            extra_config={key: value for key, value in config.items() if key not in _MANAGED | _NOT_SAVED},
        )

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
        padding_strategy = _choice(_PADDING, padding, "padding")
        truncation_strategy = _choice(_TRUNCATION, truncation, "truncation")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
        if truncation is None and max_length is not None and padding_strategy is None:
            truncation_strategy = "longest_first"
        if padding_strategy and self.pad_token is None:
            raise ValueError(
                "padding needs a pad token, and this tokenizer has none: set one with "
                "tokenizer.pad_token = tokenizer.eos_token or tokenizer.add_special_tokens({'pad_token': '[PAD]'})"
            )
        if max_length is None and (truncation_strategy or padding_strategy == "max_length"):
            max_length = None if self.model_max_length >= NO_MAX_LENGTH else self.model_max_length
            if max_length is None:
                logger.warning("no max_length given and the tokenizer has no model_max_length: not truncating")
                truncation_strategy = None
                if padding_strategy == "max_length":
                    raise ValueError("padding='max_length' needs max_length: this tokenizer has no model_max_length")

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

        encodings = self._encode_batch(
            inputs, add_special_tokens, padding_strategy, truncation_strategy, max_length, pad_to_multiple_of
        )
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        data: dict[str, list] = {"input_ids": [encoding.ids for encoding in encodings]}
        if return_token_type_ids:
            data["token_type_ids"] = [encoding.type_ids for encoding in encodings]
        if return_attention_mask:
            data["attention_mask"] = [encoding.attention_mask for encoding in encodings]
        if return_special_tokens_mask:
            data["special_tokens_mask"] = [encoding.special_tokens_mask for encoding in encodings]
        if return_offsets_mapping:
            data["offset_mapping"] = [encoding.offsets for encoding in encodings]

        if return_tensors is not None:
            return BatchEncoding({key: _to_tensor(key, rows, return_tensors) for key, rows in data.items()}, encodings)
        if not is_batched:
            data = {key: rows[0] for key, rows in data.items()}
        return BatchEncoding(data, encodings)

    def _encode_batch(
        self,
        inputs: list[Any],
        add_special_tokens: bool,
        padding_strategy: str | None,
        truncation_strategy: str | None,
        max_length: int | None,
        pad_to_multiple_of: int | None,
    ) -> list[tokenizers.Encoding]:
        backend = self._backend
        try:
            if truncation_strategy:
                backend.enable_truncation(max_length, strategy=truncation_strategy, direction=self.truncation_side)
            if padding_strategy:
                backend.enable_padding(
                    direction=self.padding_side,
                    pad_id=self.pad_token_id,
                    pad_type_id=int(self.extra_config.get("pad_token_type_id", 0)),
                    pad_token=self.pad_token,
                    length=max_length if padding_strategy == "max_length" else None,
                    pad_to_multiple_of=pad_to_multiple_of,
                )
            return backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
        except Exception as err:  # the Rust side raises plain Exception (e.g. "sequence to truncate too short")
            raise ValueError(f"tokenization failed: {err}") from err
        finally:
            backend.no_truncation()
            backend.no_padding()

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
        return self._backend.encode(text, add_special_tokens=add_special_tokens).tokens

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
        ids = _as_id_list(ids)
        text = self._backend.decode(ids, skip_special_tokens=skip_special_tokens)
        if self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces:
            text = _clean_up_tokenization(text)
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
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in _as_id_list(sequences)]

    # ------------------------------------------------------------------ vocabulary and special tokens

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Id of a token (or ids of a list of tokens); unknown tokens map to ``unk_token_id``."""
        if isinstance(tokens, str):
            token_id = self._backend.token_to_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Token string of an id (or of a list of ids)."""
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(i) for i in _as_id_list(ids) if i not in special]

    def get_vocab(self) -> dict[str, int]:
        """Token -> id, added tokens included."""
        return self._backend.get_vocab(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (without added tokens)."""
        return self._backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._backend

    @property
    def special_tokens_map(self) -> dict[str, Any]:
        """Role -> token for the set special tokens, plus ``additional_special_tokens`` when any."""
        tokens: dict[str, Any] = dict(self._special_tokens)
        if self.additional_special_tokens:
            tokens[ADDITIONAL] = list(self.additional_special_tokens)
        return tokens

    @property
    def all_special_tokens(self) -> list[str]:
        """Every special token, named roles first (bos, eos, unk, sep, pad, cls, mask), without repeats."""
        named = [self._special_tokens[name] for name in SPECIAL_TOKEN_NAMES if name in self._special_tokens]
        return list(dict.fromkeys(named + self.additional_special_tokens))

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of :attr:`all_special_tokens`."""
        return [self._backend.token_to_id(token) for token in self.all_special_tokens]

    def add_special_tokens(self, special_tokens: Mapping[str, Any]) -> int:
        """Set named special tokens (and/or extend ``additional_special_tokens``), adding unknown ones.

        Args:
            special_tokens: role -> token (a str, an ``AddedToken``, or a Hugging Face ``{"content": ...}``
                dict), and optionally ``"additional_special_tokens"`` -> list of tokens (appended).

        Returns:
            The number of tokens added to the vocabulary.
        """
        to_add: list[AddedToken] = []
        for name, value in special_tokens.items():
            if name == ADDITIONAL:
                tokens = [_added_token(token) for token in value]
                self.additional_special_tokens += [
                    t.content for t in tokens if t.content not in self.additional_special_tokens
                ]
                to_add += tokens
            elif name in SPECIAL_TOKEN_NAMES:
                if value is None:
                    self._special_tokens.pop(name, None)
                    continue
                token = _added_token(value)
                self._special_tokens[name] = token.content
                to_add.append(token)
            else:
                raise ValueError(
                    f"unknown special token role {name!r}; expected one of {SPECIAL_TOKEN_NAMES + (ADDITIONAL,)}"
                )
        known = {token.content for token in self._backend.get_added_tokens_decoder().values()}
        before = len(self)
        self._backend.add_special_tokens([token for token in to_add if token.content not in known])
        return len(self) - before

    def add_tokens(self, tokens: str | AddedToken | Sequence[str | AddedToken], special_tokens: bool = False) -> int:
        """Add (non-special, unless asked) tokens to the vocabulary.

        Args:
            tokens: a token or a list of tokens.
            special_tokens: add them as special tokens (skipped by ``decode(skip_special_tokens=True)``).

        Returns:
            The number of tokens the backend added (as in Hugging Face, a token already in the base vocabulary
            counts: it becomes an added token, matched whole even inside words).
        """
        tokens = [tokens] if isinstance(tokens, (str, AddedToken)) else list(tokens)
        if special_tokens:
            return self.add_special_tokens({ADDITIONAL: tokens})
        return self._backend.add_tokens([AddedToken(t, normalized=True) if isinstance(t, str) else t for t in tokens])

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
            ValueError: neither the tokenizer nor the call has a chat template.
        """
        template = chat_template or self.chat_template
        if not template:
            raise ValueError(
                "this tokenizer has no chat_template; pass chat_template=... or set tokenizer.chat_template"
            )
        context = {**self._special_tokens, **template_kwargs}
        plain_messages = json.loads(json.dumps(list(messages)))  # plain data only inside the sandbox
        rendered = _compile_template(template).render(
            messages=plain_messages, add_generation_prompt=add_generation_prompt, **context
        )
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
        config = {
            **self.extra_config,
            "tokenizer_class": self.tokenizer_class or "PreTrainedTokenizerFast",
            **self._special_tokens,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "model_input_names": self.model_input_names,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
        }
        if self.additional_special_tokens:
            config[ADDITIONAL] = list(self.additional_special_tokens)
        if self.chat_template:
            config["chat_template"] = self.chat_template
        files = {
            TOKENIZER_FILE: self._backend.to_str(pretty=True),
            TOKENIZER_CONFIG_FILE: json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True),
            SPECIAL_TOKENS_MAP_FILE: json.dumps(self.special_tokens_map, indent=2, ensure_ascii=False),
        }
        written = [_atomic_write_text(directory / name, text + "\n") for name, text in files.items()]
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
        spec = json.loads(self._backend.to_str())
        model = spec["model"]
        kind = model["type"]
        if kind not in _TRAINERS:
            raise ValueError(f"train_new_from_iterator supports {sorted(_TRAINERS)} models, not {kind}")
        added = spec.pop("added_tokens", [])
        reserved = [token["content"] for token in added if token["special"]]
        reserved += [t for t in [*self.all_special_tokens, *(special_tokens or [])] if t not in reserved]
        if model.get("unk_token") and model["unk_token"] not in reserved:
            reserved.append(model["unk_token"])
        spec["added_tokens"], spec["padding"], spec["truncation"] = [], None, None
        model["vocab"] = {}
        if kind == "BPE":
            model["merges"] = []

        options: dict[str, Any] = dict(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=show_progress)
        options["special_tokens"] = [AddedToken(token, special=True, normalized=False) for token in reserved]
        if kind in ("BPE", "WordPiece"):
            for key in ("continuing_subword_prefix", "end_of_word_suffix"):
                if model.get(key):
                    options[key] = model[key]
            if "ByteLevel" in json.dumps(spec.get("pre_tokenizer")):  # byte-level: every byte stays encodable
                options["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()

        backend = tokenizers.Tokenizer.from_str(json.dumps(spec))
        backend.train_from_iterator(_flatten(text_iterator), trainer=_TRAINERS[kind](**options))
        trained = json.loads(backend.to_str())
        trained["post_processor"] = _remap_post_processor(spec.get("post_processor"), backend.token_to_id)
        backend = tokenizers.Tokenizer.from_str(json.dumps(trained))
        backend.add_tokens([AddedToken(t["content"], normalized=t["normalized"]) for t in added if not t["special"]])

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
        if model not in ("bpe", "wordpiece"):
            raise ValueError(f"model must be 'bpe' or 'wordpiece', got {model!r}")
        special_tokens = dict(special_tokens or _DEFAULT_SPECIAL_TOKENS[model])
        options: dict[str, Any] = dict(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=show_progress)
        options["special_tokens"] = [AddedToken(t, special=True, normalized=False) for t in special_tokens.values()]
        if model == "bpe":
            backend = tokenizers.Tokenizer(models.BPE())
            if lowercase:
                backend.normalizer = normalizers.Lowercase()
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            backend.decoder = decoders.ByteLevel()
            backend.post_processor = processors.ByteLevel(trim_offsets=False)
            trainer = trainers.BpeTrainer(initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **options)
        else:
            unk_token = special_tokens.get("unk_token", "[UNK]")
            backend = _bert_pipeline({}, unk_token, {"do_lower_case": lowercase is not False})
            trainer = trainers.WordPieceTrainer(continuing_subword_prefix="##", **options)
        backend.train_from_iterator(_flatten(text_iterator), trainer=trainer)
        if model == "wordpiece" and {"cls_token", "sep_token"} <= special_tokens.keys():
            backend.post_processor = _bert_template(backend, special_tokens["cls_token"], special_tokens["sep_token"])
        return cls(backend, special_tokens=special_tokens, model_max_length=model_max_length)


_DEFAULT_SPECIAL_TOKENS = {
    "bpe": {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
    "wordpiece": {
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    },
}
_TRAINERS = {
    "BPE": trainers.BpeTrainer,
    "WordPiece": trainers.WordPieceTrainer,
    "WordLevel": trainers.WordLevelTrainer,
}


# ---------------------------------------------------------------------- helpers


def _read_json(path: Path, default: dict) -> dict:
    if not path.is_file():
        return dict(default)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _read_chat_template(directory: Path, from_config: Any) -> str | None:
    """The chat template: ``chat_template.jinja`` wins over tokenizer_config's entry, as in transformers."""
    if (directory / CHAT_TEMPLATE_FILE).is_file():
        return (directory / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    if isinstance(from_config, list):  # the legacy multi-template form: [{"name": ..., "template": ...}]
        return {entry["name"]: entry["template"] for entry in from_config}.get("default")
    return from_config


def _read_backend(path: Path) -> tokenizers.Tokenizer:
    text = path.read_text(encoding="utf-8")
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    try:
        return tokenizers.Tokenizer.from_str(text)
    except Exception as err:  # tokenizers raises a plain Exception for a malformed pipeline
        raise ValueError(f"{path}: the tokenizers library cannot read it ({err})") from err


def _bert_pipeline(vocab: dict[str, int], unk_token: str, config: Mapping[str, Any]) -> tokenizers.Tokenizer:
    """BERT's WordPiece pipeline (as Hugging Face's BertTokenizer builds it), without the template."""
    backend = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=unk_token, continuing_subword_prefix="##"))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True) is not False,
        strip_accents=config.get("strip_accents"),
        lowercase=config.get("do_lower_case", True) is not False,
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


def _bert_template(backend: tokenizers.Tokenizer, cls_token: str, sep_token: str) -> processors.TemplateProcessing:
    ids = {token: backend.token_to_id(token) for token in (cls_token, sep_token)}
    missing = [token for token, token_id in ids.items() if token_id is None]
    if missing:
        raise ValueError(f"the vocabulary lacks the template's special tokens {missing}")
    return processors.TemplateProcessing(
        single=f"{cls_token}:0 $A:0 {sep_token}:0",
        pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
        special_tokens=list(ids.items()),
    )


def _bert_backend(vocab_file: Path, config: Mapping[str, Any]) -> tokenizers.Tokenizer:
    with open(vocab_file, encoding="utf-8") as handle:
        vocab = {line.rstrip("\n"): index for index, line in enumerate(handle)}
    backend = _bert_pipeline(vocab, _content(config.get("unk_token") or "[UNK]"), config)
    cls_token, sep_token = _content(config.get("cls_token") or "[CLS]"), _content(config.get("sep_token") or "[SEP]")
    backend.post_processor = _bert_template(backend, cls_token, sep_token)
    return backend


def _add_tokens_from_config(backend: tokenizers.Tokenizer, added_tokens_decoder: Mapping[str, Any]) -> None:
    """Add the tokens of tokenizer_config's ``added_tokens_decoder`` that the backend does not know yet."""
    known = {token.content for token in backend.get_added_tokens_decoder().values()}
    for _, spec in sorted(added_tokens_decoder.items(), key=lambda item: int(item[0])):
        token = _added_token(spec, special=bool(spec.get("special", False)) if isinstance(spec, dict) else True)
        if token.content not in known:
            (backend.add_special_tokens if token.special else backend.add_tokens)([token])


def _content(token: Any) -> str:
    """A special token as a string: accepts str, AddedToken and Hugging Face's ``{"content": ...}`` dicts."""
    if isinstance(token, dict):
        return token["content"]
    return token.content if isinstance(token, AddedToken) else str(token)


def _added_token(token: Any, special: bool = True) -> AddedToken:
    if isinstance(token, AddedToken):
        return token
    if isinstance(token, dict):
        flags = {key: bool(token[key]) for key in ("single_word", "lstrip", "rstrip", "normalized") if key in token}
        return AddedToken(token["content"], special=special, **flags)
    return AddedToken(str(token), special=special, normalized=not special)


def _remap_post_processor(spec: dict | None, token_to_id: Any) -> dict | None:
    """Point the special tokens of a post-processor's JSON at their ids in a new vocabulary."""

    def lookup(token: str) -> int:
        token_id = token_to_id(token)
        if token_id is None:
            raise ValueError(f"post-processor token {token!r} is not in the new vocabulary")
        return token_id

    if spec is None:
        return None
    if spec["type"] == "TemplateProcessing":
        for entry in spec["special_tokens"].values():
            entry["ids"] = [lookup(token) for token in entry["tokens"]]
    elif spec["type"] in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            spec[key] = [spec[key][0], lookup(spec[key][0])]
    elif spec["type"] == "Sequence":
        spec["processors"] = [_remap_post_processor(inner, token_to_id) for inner in spec["processors"]]
    return spec


def _choice(table: Mapping[Any, str | None], value: Any, argument: str) -> str | None:
    if isinstance(value, (bool, str)) or value is None:
        for key, strategy in table.items():
            if key is value or (isinstance(key, str) and key == value):
                return strategy
    options = ", ".join(repr(key) for key in table)
    raise ValueError(f"{argument} must be one of {options}; got {value!r}")


def _side(side: str, argument: str) -> str:
    if side not in ("right", "left"):
        raise ValueError(f"{argument} must be 'right' or 'left', got {side!r}")
    return side


def _as_text_list(text: Any, argument: str) -> list[str]:
    texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
    if texts is None or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{argument} must be a str or a list of str, got {type(text).__name__}")
    return texts


def _as_id_list(ids: Any) -> Any:
    """Tensors and arrays to (nested) lists of ints; a lone int to a one-element list."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [ids] if isinstance(ids, int) else ids


def _to_tensor(key: str, rows: list[list[Any]], kind: str) -> Any:
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


def _flatten(text_iterator: Iterable[Any]) -> Iterator[str]:
    for item in text_iterator:
        if isinstance(item, str):
            yield item
        else:
            yield from item


def _clean_up_tokenization(text: str) -> str:
    """Hugging Face's ``clean_up_tokenization``: join spaces before punctuation and English contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't")):
        text = text.replace(before, after)
    for suffix in ("'m", "'s", "'ve", "'re"):
        text = text.replace(" " + suffix, suffix)
    return text


@lru_cache(maxsize=16)
def _compile_template(template: str) -> Any:
    """Compile a chat template in an immutable Jinja sandbox (templates come from checkpoints: untrusted)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, indent: int | None = None) -> str:  # Jinja's own escapes HTML, which chat text must keep
        return json.dumps(value, ensure_ascii=False, indent=indent)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file next to ``path``, then rename it over ``path``."""
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as f:
        f.write(text)
        temp = Path(f.name)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
