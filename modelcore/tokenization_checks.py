"""Checks on tokenizer files: settings of the wrong shape, and failures (panics included) of the tokenizers library.

``tokenizer_config.json`` and ``special_tokens_map.json`` are checked entry by entry (special tokens, lengths,
sides, flags, chat templates), so that a wrong shape is a :class:`~modelcore.errors.TokenizerError` naming the
file and the key instead of a ``KeyError`` or ``TypeError`` deep inside. The tokenizers library fails on a bad
``tokenizer.json`` with a plain ``Exception`` or, for some inputs, a Rust panic (``pyo3_runtime.PanicException``,
a ``BaseException`` that ``except Exception`` lets through); both become a ``TokenizerError`` naming the file
and, where it can be isolated, the part of the pipeline that fails.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken

from modelcore.errors import ModelcoreError, TokenizerError
from modelcore.json_files import json_type

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
ADDITIONAL = "additional_special_tokens"

# ------------------------------------------------------------------ checking the settings files
_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")
_SIDES = ("left", "right")
_OPTIONAL_BOOLS = ("clean_up_tokenization_spaces", "do_lower_case", "tokenize_chinese_chars", "strip_accents")
_OPTIONAL_BOOLS += ("add_bos_token", "add_eos_token")


def check_token(token: Any, where: str) -> None:
    """Refuse a special token that is not a string, an AddedToken or ``{"content": str, <bool flags>}``.

    Args:
        token: the value read for a special token.
        where: ``"<file>: <key>"``, the start of the message.

    Raises:
        TokenizerError: naming ``where`` and saying which shapes are accepted.
    """
    if isinstance(token, (str, AddedToken)):
        return
    if isinstance(token, dict):
        if not isinstance(token.get("content"), str):
            raise TokenizerError(
                f'{where}: a token object needs a string "content", got {_short(token)}; write the token as a '
                'string or as {"content": "...", "lstrip": false, ...}'
            )
        for flag in _TOKEN_FLAGS:
            if flag in token and not isinstance(token[flag], bool):
                raise TokenizerError(f"{where}: {flag} must be true or false, got {_short(token[flag])}")
        return
    raise TokenizerError(
        f'{where}: a token must be a string or an object with "content", got {json_type(token)} {_short(token)}'
    )


def check_settings(config: dict[str, Any], where: str) -> dict[str, Any]:
    """Check the entries of ``tokenizer_config.json`` / ``special_tokens_map.json`` that modelcore uses.

    Unknown keys are kept as they are (they are written back on save).

    Args:
        config: the parsed file (or the overrides given in code).
        where: the file, the start of every message.

    Returns:
        ``config``, unchanged.

    Raises:
        TokenizerError: an entry of the wrong shape, naming ``where`` and the key.
    """
    for name in SPECIAL_TOKEN_NAMES:
        if config.get(name) is not None:
            check_token(config[name], f"{where}: {name}")
    for name in (ADDITIONAL, "extra_special_tokens"):
        tokens = config.get(name)
        if isinstance(tokens, dict) and name == "extra_special_tokens":  # v5: role name -> token
            tokens = list(tokens.values())
        if tokens is not None and not isinstance(tokens, list):
            raise TokenizerError(f"{where}: {name} must be a list of tokens, got {json_type(tokens)} {_short(tokens)}")
        for index, token in enumerate(tokens or []):
            check_token(token, f"{where}: {name}[{index}]")
    _check_added_tokens_decoder(config.get("added_tokens_decoder"), f"{where}: added_tokens_decoder")
    _check_length(config.get("model_max_length"), f"{where}: model_max_length")
    for name in ("padding_side", "truncation_side"):
        if config.get(name) is not None and config[name] not in _SIDES:
            raise TokenizerError(f"{where}: {name} must be 'left' or 'right', got {_short(config[name])}")
    for name in _OPTIONAL_BOOLS:
        if config.get(name) is not None and not isinstance(config[name], bool):
            raise TokenizerError(f"{where}: {name} must be true, false or null, got {_short(config[name])}")
    if config.get("tokenizer_class") is not None and not isinstance(config["tokenizer_class"], str):
        raise TokenizerError(f"{where}: tokenizer_class must be a string, got {_short(config['tokenizer_class'])}")
    names = config.get("model_input_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise TokenizerError(f"{where}: model_input_names must be a list of strings, got {_short(names)}")
    _check_chat_template(config.get("chat_template"), f"{where}: chat_template")
    return config


def _check_added_tokens_decoder(entries: Any, where: str) -> None:
    if entries is None:
        return
    if not isinstance(entries, dict):
        raise TokenizerError(f"{where} must be an object of id -> token, got {json_type(entries)}")
    for key, token in entries.items():
        if not (isinstance(key, int) or (isinstance(key, str) and key.isdigit() and len(key) < 12)):
            raise TokenizerError(f"{where}: key {_short(key)} is not a token id")
        check_token(token, f"{where}[{key!r}]")


def _check_length(value: Any, where: str) -> None:
    """``model_max_length``: a non-negative int, or a finite float (Hugging Face writes 1e30 for "no limit")."""
    if value is None:
        return
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or (isinstance(value, float) and not math.isfinite(value)) or value < 0:
        raise TokenizerError(f"{where} must be a non-negative finite number, got {_short(value)}")


def _check_chat_template(template: Any, where: str) -> None:
    if template is None or isinstance(template, str):
        return
    if isinstance(template, list):  # the legacy multi-template form: [{"name": ..., "template": ...}]
        for index, entry in enumerate(template):
            if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)):
                raise TokenizerError(f'{where}[{index}] must be an object with a string "name", got {_short(entry)}')
            if not isinstance(entry.get("template"), str):
                raise TokenizerError(f'{where}[{index}] must have a string "template", got {_short(entry)}')
        return
    raise TokenizerError(f"{where} must be a string or a list of named templates, got {json_type(template)}")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------ failures inside the tokenizers library
def is_rust_panic(error: BaseException) -> bool:
    """Whether ``error`` is a Rust panic surfaced by pyo3 (``pyo3_runtime.PanicException``).

    It derives from ``BaseException``, not ``Exception``, so ``except Exception`` lets it through.
    """
    return type(error).__name__ == "PanicException" and type(error).__module__ == "pyo3_runtime"


def is_library_failure(error: BaseException) -> bool:
    """A failure of the tokenizers library on bad input: its plain ``Exception``s and its panics.

    Not: our own errors (already named), ``OSError``, ``MemoryError``, ``KeyboardInterrupt`` and ``SystemExit``,
    which are never turned into file errors.
    """
    if is_rust_panic(error):
        return True
    return isinstance(error, Exception) and not isinstance(error, (MemoryError, OSError, ModelcoreError))


@contextlib.contextmanager
def library_errors_named(where: str, panics_only: bool = False) -> Iterator[None]:
    """Turn a failure (or a panic) of the tokenizers library inside the block into a ``TokenizerError``.

    Args:
        where: ``"<file>: <key>"`` the message starts with.
        panics_only: convert only panics; plain exceptions pass through (for code whose own errors are
            already meaningful).
    """
    try:
        yield
    except BaseException as err:
        if not is_library_failure(err) or (panics_only and not is_rust_panic(err)):
            raise
        raise TokenizerError(f"{where}: the tokenizers library cannot read it ({library_failure(err)})") from err


def library_failure(error: BaseException) -> str:
    """What the library said, for a message (marked when it was a panic)."""
    return f"{'it panicked: ' if is_rust_panic(error) else ''}{str(error)[:300]}"


# ------------------------------------------------------------------ probing a built pipeline
# The parts of a tokenizer.json, in the order a failure is looked for in them.
_PIPELINE_PARTS = ("model", "normalizer", "pre_tokenizer", "post_processor", "decoder", "added_tokens")
_PIPELINE_PARTS += ("padding", "truncation")
_PROBE_TEXTS = ("a", "Hello, world! 123")


def check_token_ids(spec: dict[str, Any], path: Path) -> None:
    """Refuse token ids far beyond the vocabulary's size (the rest of the ids are the library's to check).

    Ids are dense (0 to n-1, with few gaps) in every real file. The library accepts any u32, but writes the
    vocabulary back (``save_pretrained``, copies of the backend) by walking every id up to the largest: an id
    of 2**31 turns that into minutes of work and gigabytes of memory.
    """
    model = spec.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    entries = [("model.vocab", token, id_) for token, id_ in vocab.items()] if isinstance(vocab, dict) else []
    added = spec.get("added_tokens")
    if isinstance(added, list):
        entries += [
            ("added_tokens", token.get("content"), token.get("id")) for token in added if isinstance(token, dict)
        ]
    limit = 2 * len(entries) + 1024
    for key, token, token_id in entries:
        if isinstance(token_id, int) and not isinstance(token_id, bool) and token_id >= limit:
            raise TokenizerError(
                f"{path}: {key} gives {_short(token)} the id {token_id:,}, far beyond the {len(entries):,} tokens "
                "of the file (ids run from 0 to the vocabulary size); the file is damaged"
            )


def probe_backend(backend: tokenizers.Tokenizer, source: Path, spec: dict[str, Any] | None = None) -> None:
    """Encode and decode a short text once, so that a pipeline that makes the library panic is refused now.

    Some pipelines load but panic on every encode (a template naming a special token it has no id for);
    the panic is a ``BaseException`` that no caller's ``except Exception`` would catch. Plain errors on the
    probe text (no unknown token to map a character to, ...) are left to the encoder, which reports them.

    The backend's stored padding and truncation are switched off first (``Tokenizer`` sets them per call and
    never keeps them): a file's ``pad_to_multiple_of`` of 10**12 would otherwise make the probe allocate
    terabytes, which aborts the process.

    Args:
        backend: the built tokenizer; read its ``padding``/``truncation`` before, they are cleared.
        source: the file it came from, for the message.
        spec: the parsed ``tokenizer.json``, to name the failing part; None for a pipeline built from vocab.txt.

    Raises:
        TokenizerError: the library panicked, naming ``source`` (and the part).
    """
    backend.no_padding()
    backend.no_truncation()
    try:
        _encode_probe(backend)
    except BaseException as err:
        if not is_rust_panic(err):
            if is_library_failure(err):
                return
            raise
        part = failing_part(spec, encode=True) if spec is not None else ""
        raise TokenizerError(
            f"{source}: the tokenizers library panicked when encoding with it ({str(err)[:300]}){part}; "
            "the file is damaged or was written for another version of the library"
        ) from err


def _encode_probe(backend: tokenizers.Tokenizer) -> None:
    for text in _PROBE_TEXTS:
        for encoding in (backend.encode(text, add_special_tokens=True), backend.encode(text, text)):
            backend.decode(encoding.ids, skip_special_tokens=False)


def failing_part(spec: dict[str, Any], encode: bool) -> str:
    """``'; the damage is in its "normalizer"'`` when that part alone makes the library fail (or panic); else ``""``.

    Each part of the file is put in an otherwise empty pipeline (a one-token WordLevel model) and built (and
    probed), so that the message can say where the damage is. Run only after the whole file failed.
    """
    for part in _PIPELINE_PARTS:
        if spec.get(part) in (None, []) or (encode and part in ("padding", "truncation")):
            continue  # stored padding and truncation are never used (see probe_backend)
        alone = {
            "version": "1.0",
            **dict.fromkeys(("truncation", "padding", "normalizer", "pre_tokenizer", "post_processor", "decoder")),
            "added_tokens": [],
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"},
            part: spec[part],
        }
        try:
            backend = tokenizers.Tokenizer.from_str(json.dumps(alone))
            if encode:
                _encode_probe(backend)
        except BaseException as err:
            if not is_library_failure(err):
                raise
            if encode and not is_rust_panic(err):
                continue  # a plain error of this part alone on the probe text is not the panic looked for
            return f'; the damage is in its "{part}"'
    return ""
