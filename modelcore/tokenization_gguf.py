"""Build a tokenizer from a GGUF file's metadata (a GGUF file carries no ``tokenizer.json``).

llama.cpp stores the vocabulary as ``tokenizer.ggml.*`` metadata: the model kind (``gpt2`` for byte-level
BPE), the tokens, their types (normal, control, user-defined, ...), the merges, the pre-tokenizer name
(``tokenizer.ggml.pre``: how text is split before BPE), the special token ids and ``add_bos_token``; the
chat template is ``tokenizer.chat_template``. This module turns those into a ``tokenizers.Tokenizer`` and the
settings of :class:`~modelcore.tokenization.Tokenizer`.

Only byte-level BPE (``gpt2``: GPT-2, Llama 3, SmolLM, Qwen, ...) is built; SentencePiece vocabularies
(``llama``: Llama 2, Mistral) are refused with an error naming the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors

from modelcore.serialization.gguf import GGUFError, field_value, open_gguf
from modelcore.tokenization_checks import check_settings, library_errors_named, probe_backend
from modelcore.tokenization_files import tokenizer_settings

logger = logging.getLogger(__name__)

# llama.cpp token types (llama_token_type)
_CONTROL, _USER_DEFINED = 3, 4

# The splits llama.cpp applies before BPE, by ``tokenizer.ggml.pre`` (llama-vocab.cpp); each list is applied
# in order, every regex isolating its matches. None means the GPT-2 split alone (ByteLevel's own regex).
_DIGITS = r"\p{N}"
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZER_SPLITS: dict[str, list[str] | None] = {
    **dict.fromkeys(("default", "gpt-2", "mpt", "olmo", "jais"), None),
    # one digit per token, then the GPT-2 split
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"), [_DIGITS]),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx"), [_LLAMA3]),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "stablelm2"), [_QWEN2]),
}


def read_gguf_tokenizer(
    path: str | os.PathLike, overrides: Mapping[str, Any]
) -> tuple[tokenizers.Tokenizer, dict[str, Any]]:
    """The tokenizer a GGUF file describes.

    Args:
        path: the ``.gguf`` file.
        overrides: ``tokenizer_config.json``-style entries that win over the file's (special tokens,
            ``padding_side``, ``model_max_length``, ``chat_template``, ...).

    Returns:
        The backend and the keyword arguments of :class:`~modelcore.tokenization.Tokenizer` for it.

    Raises:
        GGUFError: naming the file and key, when the tokenizer metadata is missing or of an unsupported kind.
        TokenizerError: naming the file, when the tokenizers library fails (or panics) on the vocabulary,
            merges or special tokens, or an override has the wrong shape.
    """
    path = Path(path)
    with library_errors_named(f"{path}: tokenizer.ggml.*"):
        backend, settings = _read_gguf_tokenizer(path, overrides)
    probe_backend(backend, path)
    return backend, settings


def _read_gguf_tokenizer(path: Path, overrides: Mapping[str, Any]) -> tuple[tokenizers.Tokenizer, dict[str, Any]]:
    reader = open_gguf(path)
    kind = field_value(reader, "tokenizer.ggml.model", None)
    if kind != "gpt2":
        raise GGUFError(
            f"{path}: tokenizer.ggml.model is {kind!r}; only 'gpt2' (byte-level BPE) tokenizers are built from GGUF"
        )
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    merges = field_value(reader, "tokenizer.ggml.merges")
    if not all(isinstance(merge, str) and " " in merge for merge in merges):
        bad = next(merge for merge in merges if not (isinstance(merge, str) and " " in merge))
        raise GGUFError(f"{path}: tokenizer.ggml.merges holds {bad!r}, not a 'left right' pair")
    token_types = field_value(reader, "tokenizer.ggml.token_type", None) or [1] * len(tokens)
    if len(token_types) != len(tokens):
        raise GGUFError(f"{path}: tokenizer.ggml.token_type has {len(token_types)} entries for {len(tokens)} tokens")
    backend = byte_level_bpe(
        tokens, merges, _pre_tokenizer_splits(path, field_value(reader, "tokenizer.ggml.pre", None))
    )
    backend.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, k in zip(tokens, token_types, strict=True)
            if k == _CONTROL
        ]
    )
    backend.add_tokens(
        [
            AddedToken(t, special=False, normalized=False)
            for t, k in zip(tokens, token_types, strict=True)
            if k == _USER_DEFINED
        ]
    )

    config: dict[str, Any] = {}
    for role, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        token_id = field_value(reader, f"tokenizer.ggml.{key}_token_id", None)
        if token_id is not None:
            if not 0 <= token_id < len(tokens):
                raise GGUFError(f"{path}: tokenizer.ggml.{key}_token_id={token_id} is outside the vocabulary")
            config[f"{role}_token"] = tokens[token_id]
    for flag in ("add_bos_token", "add_eos_token"):
        config[flag] = bool(field_value(reader, f"tokenizer.ggml.{flag}", False))
    architecture = field_value(reader, "general.architecture", "")
    context_length = field_value(reader, f"{architecture}.context_length", None)
    if context_length:
        config["model_max_length"] = context_length
    config.update(check_settings(dict(overrides), "Tokenizer.from_pretrained"))
    backend.post_processor = _post_processor(backend, config)
    chat_template = config.pop("chat_template", None) or field_value(reader, "tokenizer.chat_template", None)
    logger.debug("built a %d-token byte-level BPE tokenizer from %s", len(tokens), path)
    return backend, tokenizer_settings(backend, config, chat_template)


def byte_level_bpe(tokens: list[str], merges: list[str], splits: list[str] | None) -> tokenizers.Tokenizer:
    """A GPT-2-style byte-level BPE pipeline over a vocabulary written in the byte-to-unicode alphabet.

    Args:
        tokens: the vocabulary, id order.
        merges: ``"a b"`` strings, highest priority first.
        splits: regexes applied (isolating matches) before the GPT-2 split; None for the GPT-2 split alone.

    Returns:
        The ``tokenizers.Tokenizer`` (no post-processor; special tokens not yet added).
    """
    vocab = {token: index for index, token in enumerate(tokens)}
    pairs = [tuple(merge.split(" ", 1)) for merge in merges]
    backend = tokenizers.Tokenizer(models.BPE(vocab, pairs, fuse_unk=False, byte_fallback=False))
    if splits is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif splits == [_DIGITS]:  # the digit split keeps the GPT-2 split after it
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_DIGITS), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    else:  # the regex replaces the GPT-2 split
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in splits]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    backend.decoder = decoders.ByteLevel()
    return backend


def _pre_tokenizer_splits(path: Path, pre: str | None) -> list[str] | None:
    if pre is None or pre in PRE_TOKENIZER_SPLITS:
        return PRE_TOKENIZER_SPLITS.get(pre or "default")
    logger.warning(
        "%s: tokenizer.ggml.pre %r is not known to modelcore; splitting text as GPT-2 does (ids may differ "
        "from llama.cpp's on some text)",
        path,
        pre,
    )
    return None


def _post_processor(backend: tokenizers.Tokenizer, config: Mapping[str, Any]) -> Any:
    """``bos $A eos`` as the file's ``add_bos_token`` / ``add_eos_token`` ask; byte-level offsets otherwise."""
    bos = config.get("bos_token") if config.get("add_bos_token") else None
    eos = config.get("eos_token") if config.get("add_eos_token") else None
    if bos is None and eos is None:
        return processors.ByteLevel(trim_offsets=False)
    ends = dict.fromkeys(token for token in (bos, eos) if token is not None)

    def sequence(piece: str, type_id: int) -> list[str]:  # a list, not one string: tokens may hold spaces
        return [*([f"{bos}:{type_id}"] if bos else []), f"{piece}:{type_id}", *([f"{eos}:{type_id}"] if eos else [])]

    return processors.TemplateProcessing(
        single=sequence("$A", 0),
        pair=sequence("$A", 0) + sequence("$B", 1),
        special_tokens=[(token, backend.token_to_id(token)) for token in ends],
    )
