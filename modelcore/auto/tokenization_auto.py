"""AutoTokenizer: pick the tokenizer class of a checkpoint from its files, through an explicit registry."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from modelcore.errors import ConfigError, ModelcoreError, TokenizerError
from modelcore.json_files import read_json_object
from modelcore.tokenization import Tokenizer
from modelcore.tokenization_files import TOKENIZER_CONFIG_FILE

logger = logging.getLogger(__name__)

# key (a config.json `model_type`, or a tokenizer_config.json `tokenizer_class` name) -> class
TOKENIZER_REGISTRY: dict[str, type[Tokenizer]] = {}


class AutoTokenizer:
    """Loads the registered tokenizer class of a checkpoint; :class:`~modelcore.tokenization.Tokenizer` by default.

    The class is looked up by ``tokenizer_class`` (tokenizer_config.json) first, then by ``model_type``
    (config.json). Tokenizers are data-driven (``tokenizer.json``), so most families need no class of their own.
    """

    def __init__(self) -> None:
        raise OSError("AutoTokenizer is not instantiated; use AutoTokenizer.from_pretrained(src)")

    @staticmethod
    def register(key: str, tokenizer_class: type[Tokenizer], exist_ok: bool = False) -> None:
        """Map a ``model_type`` or ``tokenizer_class`` name to a tokenizer class.

        Args:
            key: the ``model_type`` (``"bert"``) or ``tokenizer_class`` name (``"BertTokenizer"``).
            tokenizer_class: a :class:`Tokenizer` subclass (or ``Tokenizer`` itself).
            exist_ok: allow replacing an existing registration.

        Raises:
            ValueError: ``key`` is registered already and ``exist_ok`` is False.
            TypeError: ``tokenizer_class`` is not a Tokenizer class.
        """
        if not (isinstance(tokenizer_class, type) and issubclass(tokenizer_class, Tokenizer)):
            raise TypeError(f"tokenizer_class must be a subclass of Tokenizer, got {tokenizer_class!r}")
        if key in TOKENIZER_REGISTRY and not exist_ok:
            raise ValueError(
                f"{key!r} is already registered to {TOKENIZER_REGISTRY[key].__name__}; pass exist_ok=True to replace it"
            )
        TOKENIZER_REGISTRY[key] = tokenizer_class

    @staticmethod
    def from_pretrained(src: str | os.PathLike, **kwargs: Any) -> Tokenizer:
        """Load the tokenizer of a checkpoint with its registered class.

        Args:
            src: a checkpoint directory or an asset name (see ``modelcore.serialization.sources``).
            **kwargs: passed to the class's ``from_pretrained`` (overrides such as ``padding_side``).

        Returns:
            The tokenizer.
        """
        from modelcore.serialization.sources import resolve_source

        directory = resolve_source(src)
        keys = [_json_field(directory / TOKENIZER_CONFIG_FILE, "tokenizer_class", TokenizerError)]
        keys.append(_json_field(directory / "config.json", "model_type", ConfigError))
        tokenizer_class = next((TOKENIZER_REGISTRY[key] for key in keys if key in TOKENIZER_REGISTRY), Tokenizer)
        logger.debug("AutoTokenizer: %s -> %s (keys %s)", directory, tokenizer_class.__name__, keys)
        return tokenizer_class.from_pretrained(directory, **kwargs)


def _json_field(path: Path, field: str, error: type[ModelcoreError]) -> str | None:
    """A string entry of a JSON file, or None (no file, no entry, or not a string); a broken file is ``error``."""
    if not path.is_file():
        return None
    value = read_json_object(path, error).get(field)
    return value if isinstance(value, str) else None


def _register_builtin_tokenizers() -> None:
    """Families whose tokenizer needs a class of its own (Whisper: timestamp tokens dropped on decode)."""
    from modelcore.models.whisper.tokenization_whisper import WhisperTokenizer

    for key in ("whisper", "WhisperTokenizer"):
        TOKENIZER_REGISTRY.setdefault(key, WhisperTokenizer)


_register_builtin_tokenizers()
