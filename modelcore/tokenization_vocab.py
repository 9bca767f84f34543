"""The vocabulary half of :class:`~modelcore.tokenization.Tokenizer`: token <-> id lookups, the named special
tokens (``tok.pad_token``, ``tok.pad_token_id``, ...) and adding tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tokenizers
from tokenizers import AddedToken

from modelcore.errors import TokenizerError
from modelcore.tokenization_checks import ADDITIONAL, SPECIAL_TOKEN_NAMES, library_errors_named
from modelcore.tokenization_encoding import as_id_list
from modelcore.tokenization_files import added_token


class _SpecialToken:
    """Descriptor: ``tok.pad_token`` reads and sets a named special token; ``tok.pad_token_id`` gives its id."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.token_name = name.removesuffix("_id")
        self.is_id = name.endswith("_id")

    def __get__(self, tokenizer: VocabularyMixin | None, owner: type) -> Any:
        if tokenizer is None:
            return self
        token = tokenizer._special_tokens.get(self.token_name)
        if token is None or not self.is_id:
            return token
        return tokenizer._backend.token_to_id(token)

    def __set__(self, tokenizer: VocabularyMixin, value: Any) -> None:
        if self.is_id and value is not None:
            value = tokenizer.convert_ids_to_tokens(int(value))
        tokenizer.add_special_tokens({self.token_name: value})


class VocabularyMixin:
    """Token <-> id lookups, named special tokens and adding tokens, over the backend's vocabulary.

    The class using it sets ``_backend`` (the ``tokenizers.Tokenizer``), ``_special_tokens`` (role -> token) and
    ``additional_special_tokens`` (a list of tokens).
    """

    _backend: tokenizers.Tokenizer
    _special_tokens: dict[str, str]
    additional_special_tokens: list[str]

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
        return [self._backend.id_to_token(i) for i in as_id_list(ids) if i not in special]

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
                tokens = [added_token(token) for token in value]
                self.additional_special_tokens += [
                    t.content for t in tokens if t.content not in self.additional_special_tokens
                ]
                to_add += tokens
            elif name in SPECIAL_TOKEN_NAMES:
                if value is None:
                    self._special_tokens.pop(name, None)
                    continue
                token = added_token(value)
                self._special_tokens[name] = token.content
                to_add.append(token)
            else:
                raise TokenizerError(
                    f"unknown special token role {name!r}; expected one of {SPECIAL_TOKEN_NAMES + (ADDITIONAL,)}"
                )
        known = {token.content for token in self._backend.get_added_tokens_decoder().values()}
        before = len(self)
        with library_errors_named(f"add_special_tokens({_roles(special_tokens)})", panics_only=True):
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
        with library_errors_named("add_tokens", panics_only=True):
            return self._backend.add_tokens(
                [AddedToken(t, normalized=True) if isinstance(t, str) else t for t in tokens]
            )


def _roles(special_tokens: Mapping[str, Any]) -> str:
    return ", ".join(str(name) for name in special_tokens)
