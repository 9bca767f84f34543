"""The Hugging Face tokenizer layout on disk: reading a checkpoint's tokenizer files and writing them back.

A checkpoint directory holds ``tokenizer.json`` (the whole pipeline: normalizer, pre-tokenizer, model,
post-processor, decoder, added tokens) plus ``tokenizer_config.json`` / ``special_tokens_map.json``
(special tokens, ``model_max_length``, padding side, chat template) and, from transformers v5, perhaps
``chat_template.jinja``. Older BERT checkpoints ship only ``vocab.txt``; for those we build the BERT WordPiece
pipeline ourselves, as Hugging Face does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tokenizers
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors

from modelcore.errors import TokenizerError
from modelcore.json_files import decode_utf8, json_type, parse_json, read_json_object
from modelcore.tokenization_checks import (
    ADDITIONAL,
    SPECIAL_TOKEN_NAMES,
    check_settings,
    check_token,
    check_token_ids,
    failing_part,
    is_library_failure,
    library_errors_named,
    library_failure,
    probe_backend,
)

if TYPE_CHECKING:
    from modelcore.tokenization import Tokenizer

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
VOCAB_FILE = "vocab.txt"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers v5 saves a template; read, never written

NO_MAX_LENGTH = int(1e30)  # Hugging Face's VERY_LARGE_INTEGER: "this tokenizer has no length limit"

# tokenizer_config.json keys held as Tokenizer attributes (everything else is carried in `extra_config`)
_MANAGED = {*SPECIAL_TOKEN_NAMES, ADDITIONAL, "extra_special_tokens", "model_max_length", "padding_side"}
_MANAGED |= {"truncation_side", "chat_template", "model_input_names", "clean_up_tokenization_spaces", "tokenizer_class"}
# keys that describe where the files came from, not the tokenizer: dropped on save
_NOT_SAVED = {"name_or_path", "tokenizer_file", "special_tokens_map_file", "added_tokens_decoder", "auto_map"}
_NOT_SAVED |= {"is_local", "local_files_only"}
# the tokenizer_config.json entries Tokenizer.from_pretrained() takes as overrides
OVERRIDABLE = (_MANAGED - {"tokenizer_class", "extra_special_tokens"}) | {"do_lower_case"}


def read_pretrained(directory: Path, overrides: Mapping[str, Any]) -> tuple[tokenizers.Tokenizer, dict[str, Any]]:
    """Read the tokenizer files of a checkpoint directory.

    Args:
        directory: holds ``tokenizer.json`` or ``vocab.txt`` (+ ``tokenizer_config.json``,
            ``special_tokens_map.json``, ``chat_template.jinja``).
        overrides: tokenizer_config entries that win over the files' (already checked against ``OVERRIDABLE``).

    Returns:
        The backend and the keyword arguments of :class:`~modelcore.tokenization.Tokenizer` for it.

    Raises:
        FileNotFoundError: the directory has neither ``tokenizer.json`` nor ``vocab.txt``.
        TokenizerError: a file is not UTF-8, not JSON, holds an entry of the wrong shape, or the tokenizers
            library fails (or panics) on it; the message names the file and the key.
    """
    config, origins = _read_settings(directory, overrides)
    tokenizer_file, vocab_file = directory / TOKENIZER_FILE, directory / VOCAB_FILE
    if tokenizer_file.is_file():
        spec, backend = read_backend(tokenizer_file)
        source = tokenizer_file
    elif vocab_file.is_file():
        spec, backend = None, _bert_backend(vocab_file, config, origins)
        source = vocab_file
    else:
        raise FileNotFoundError(f"{directory}: no tokenizer files found (looked for {TOKENIZER_FILE}, {VOCAB_FILE})")
    logger.debug("loaded tokenizer from %s (%s)", directory, source.name)
    chat_template = _read_chat_template(directory, config.get("chat_template"))
    with library_errors_named(origins.get("added_tokens_decoder", str(source)) + ": added_tokens_decoder"):
        settings = tokenizer_settings(backend, config, chat_template)
    probe_backend(backend, source, spec)
    return backend, settings


def _read_settings(directory: Path, overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """tokenizer_config.json, then special_tokens_map.json (which wins, as in Hugging Face), then the overrides.

    Returns:
        The merged entries, and for each key the file (or "Tokenizer.from_pretrained") it came from.
    """
    config: dict[str, Any] = {}
    origins: dict[str, str] = {}
    layers = [(str(path), read_json_object(path, TokenizerError)) for path in _settings_files(directory)]
    layers.append(("Tokenizer.from_pretrained", dict(overrides)))
    for where, entries in layers:
        config.update(check_settings(entries, where))
        origins.update(dict.fromkeys(entries, where))
    return config, origins


def _settings_files(directory: Path) -> list[Path]:
    paths = [directory / TOKENIZER_CONFIG_FILE, directory / SPECIAL_TOKENS_MAP_FILE]
    return [path for path in paths if path.is_file()]


def tokenizer_settings(
    backend: tokenizers.Tokenizer, config: dict[str, Any], chat_template: str | None
) -> dict[str, Any]:
    """The keyword arguments of :class:`~modelcore.tokenization.Tokenizer` for a backend and its settings.

    Args:
        backend: the ``tokenizers.Tokenizer``; tokens of ``added_tokens_decoder`` it lacks are added to it.
        config: ``tokenizer_config.json``-style entries (special tokens, ``model_max_length``, ...), overrides
            applied.
        chat_template: the chat template, if any.

    Returns:
        ``special_tokens``, ``model_max_length``, ``padding_side``, ... for ``Tokenizer(backend, **settings)``.
    """
    config = dict(config)
    check_settings(config, "tokenizer settings")
    # Settings baked into tokenizer.json's padding/truncation are defaults, as in Hugging Face.
    json_padding, json_truncation = backend.padding or {}, backend.truncation or {}
    config.setdefault("pad_token", json_padding.get("pad_token"))
    _add_tokens_from_config(backend, config.get("added_tokens_decoder") or {})
    special_tokens = {name: token_content(config[name]) for name in SPECIAL_TOKEN_NAMES if config.get(name)}
    extra = config.get(ADDITIONAL) or config.get("extra_special_tokens") or []
    extra = list(extra.values()) if isinstance(extra, dict) else extra  # v5's named extras: keep the tokens
    special_tokens[ADDITIONAL] = [token_content(token) for token in extra]
    return dict(
        special_tokens=special_tokens,
        model_max_length=int(config.get("model_max_length") or NO_MAX_LENGTH),
        padding_side=config.get("padding_side") or json_padding.get("direction", "right"),
        truncation_side=config.get("truncation_side") or json_truncation.get("direction", "right"),
        chat_template=chat_template,
        model_input_names=config.get("model_input_names"),
        clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        tokenizer_class=config.get("tokenizer_class"),
        extra_config={key: value for key, value in config.items() if key not in _MANAGED | _NOT_SAVED},
    )


def files_to_save(tokenizer: Tokenizer) -> dict[str, str]:
    """The text of ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` for a tokenizer.

    Args:
        tokenizer: the tokenizer to save.

    Returns:
        File name -> text (ending with a newline).
    """
    config = {
        **tokenizer.extra_config,
        "tokenizer_class": tokenizer.tokenizer_class or "PreTrainedTokenizerFast",
        **tokenizer.special_tokens_map,
        "model_max_length": tokenizer.model_max_length,
        "padding_side": tokenizer.padding_side,
        "truncation_side": tokenizer.truncation_side,
        "model_input_names": tokenizer.model_input_names,
        "clean_up_tokenization_spaces": tokenizer.clean_up_tokenization_spaces,
    }
    if tokenizer.chat_template:
        config["chat_template"] = tokenizer.chat_template
    files = {
        TOKENIZER_FILE: tokenizer.backend.to_str(pretty=True),
        TOKENIZER_CONFIG_FILE: json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True),
        SPECIAL_TOKENS_MAP_FILE: json.dumps(tokenizer.special_tokens_map, indent=2, ensure_ascii=False),
    }
    return {name: text + "\n" for name, text in files.items()}


def bert_pipeline(vocab: dict[str, int], unk_token: str, config: Mapping[str, Any]) -> tokenizers.Tokenizer:
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


def bert_template(backend: tokenizers.Tokenizer, cls_token: str, sep_token: str) -> processors.TemplateProcessing:
    """BERT's ``[CLS] A [SEP] B [SEP]`` post-processor, with the ids ``backend`` gives the two tokens."""
    ids = {token: backend.token_to_id(token) for token in (cls_token, sep_token)}
    missing = [token for token, token_id in ids.items() if token_id is None]
    if missing:
        raise TokenizerError(f"the vocabulary lacks the template's special tokens {missing}")
    return processors.TemplateProcessing(
        single=f"{cls_token}:0 $A:0 {sep_token}:0",
        pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
        special_tokens=list(ids.items()),
    )


def token_content(token: Any) -> str:
    """A special token as a string: accepts str, AddedToken and Hugging Face's ``{"content": ...}`` dicts."""
    check_token(token, "token")
    if isinstance(token, dict):
        return token["content"]
    return token.content if isinstance(token, AddedToken) else str(token)


def added_token(token: Any, special: bool = True) -> AddedToken:
    """A token (str, AddedToken or Hugging Face's ``{"content": ..., "lstrip": ...}`` dict) as an AddedToken.

    Raises:
        TokenizerError: ``token`` is of none of these shapes (a number, a list, a dict without a string
            ``content`` or with a flag that is not a boolean).
    """
    check_token(token, "token")
    if isinstance(token, AddedToken):
        return token
    if isinstance(token, dict):
        flags = {key: token[key] for key in ("single_word", "lstrip", "rstrip", "normalized") if key in token}
        return AddedToken(token["content"], special=special, **flags)
    return AddedToken(str(token), special=special, normalized=not special)


def _read_chat_template(directory: Path, from_config: Any) -> str | None:
    """The chat template: ``chat_template.jinja`` wins over tokenizer_config's entry, as in transformers."""
    path = directory / CHAT_TEMPLATE_FILE
    if path.is_file():
        return decode_utf8(path.read_bytes(), path, TokenizerError)
    if isinstance(from_config, list):  # the legacy multi-template form: [{"name": ..., "template": ...}]
        return {entry["name"]: entry["template"] for entry in from_config}.get("default")
    return from_config


def read_backend(path: Path) -> tuple[dict[str, Any], tokenizers.Tokenizer]:
    """Parse ``tokenizer.json`` and build its ``tokenizers.Tokenizer``.

    Args:
        path: the file.

    Returns:
        ``(parsed JSON, backend)``.

    Raises:
        TokenizerError: not UTF-8, not JSON, not an object, or the tokenizers library fails or panics on it;
            the message names the file and, where it can be isolated, the part (``normalizer``, ...).
    """
    text = decode_utf8(path.read_bytes(), path, TokenizerError)
    spec = parse_json(text, path, TokenizerError)
    if not isinstance(spec, dict):
        raise TokenizerError(f"{path}: expected a JSON object at the top level, got {json_type(spec)}")
    check_token_ids(spec, path)
    try:
        return spec, tokenizers.Tokenizer.from_str(text)
    except BaseException as err:
        if not is_library_failure(err):
            raise
        raise TokenizerError(
            f"{path}: the tokenizers library cannot read it ({library_failure(err)}){failing_part(spec, encode=False)}"
        ) from err


_BERT_DEFAULTS = {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"}


def _bert_backend(vocab_file: Path, config: Mapping[str, Any], origins: Mapping[str, str]) -> tokenizers.Tokenizer:
    """BERT's WordPiece pipeline over ``vocab.txt`` (one token a line, the line number is the id)."""
    text = decode_utf8(vocab_file.read_bytes(), vocab_file, TokenizerError)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # the newlines open() would translate
    if lines and lines[-1] == "":
        lines.pop()
    vocab = {line: index for index, line in enumerate(lines)}
    roles = {role: token_content(config.get(role) or default) for role, default in _BERT_DEFAULTS.items()}
    for role, token in roles.items():
        if token not in vocab:
            where = f" (set by {origins[role]})" if role in origins else ""
            raise TokenizerError(
                f"{vocab_file}: {role} {token!r}{where} is not in the vocabulary ({len(vocab)} tokens); "
                "the file is not a BERT vocabulary, or the special token is misnamed"
            )
    with library_errors_named(str(vocab_file)):
        backend = bert_pipeline(vocab, roles["unk_token"], config)
        backend.post_processor = bert_template(backend, roles["cls_token"], roles["sep_token"])
    return backend


def _add_tokens_from_config(backend: tokenizers.Tokenizer, added_tokens_decoder: Mapping[str, Any]) -> None:
    """Add the tokens of tokenizer_config's ``added_tokens_decoder`` that the backend does not know yet."""
    known = {token.content for token in backend.get_added_tokens_decoder().values()}
    for _, spec in sorted(added_tokens_decoder.items(), key=lambda item: int(item[0])):
        token = added_token(spec, special=bool(spec.get("special", False)) if isinstance(spec, dict) else True)
        if token.content not in known:
            (backend.add_special_tokens if token.special else backend.add_tokens)([token])
