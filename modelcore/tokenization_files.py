"""The Hugging Face tokenizer layout on disk: reading a checkpoint's tokenizer files and writing them back.

A checkpoint directory holds ``tokenizer.json`` (the whole pipeline: normalizer, pre-tokenizer, model,
post-processor, decoder, added tokens) plus ``tokenizer_config.json`` / ``special_tokens_map.json``
(special tokens, ``model_max_length``, padding side, chat template) and, from transformers v5, perhaps
``chat_template.jinja``. Older BERT checkpoints ship only ``vocab.txt``; for those we build the BERT WordPiece
pipeline ourselves, as Hugging Face does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tokenizers
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors

from modelcore.errors import ModelcoreError, TokenizerError
from modelcore.json_files import decode_utf8, json_type, parse_json, read_json_object

if TYPE_CHECKING:
    from modelcore.tokenization import Tokenizer

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
VOCAB_FILE = "vocab.txt"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers v5 saves a template; read, never written

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
ADDITIONAL = "additional_special_tokens"
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
    config: dict[str, Any] = {}
    origins: dict[str, str] = {}  # key -> the file (or "overrides") its value came from, for messages
    sources = [(directory / TOKENIZER_CONFIG_FILE, None), (directory / SPECIAL_TOKENS_MAP_FILE, None)]
    sources.append((Path("Tokenizer.from_pretrained"), dict(overrides)))  # overrides win last
    for path, given in sources:
        if given is None and not path.is_file():
            continue
        # as in Hugging Face, special_tokens_map.json wins over tokenizer_config.json
        entries = check_settings(read_json_object(path, TokenizerError) if given is None else given, str(path))
        config.update(entries)
        origins.update(dict.fromkeys(entries, str(path)))

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
        raise TokenizerError(f"{where}: the tokenizers library cannot read it ({_library_failure(err)})") from err


def _library_failure(error: BaseException) -> str:
    return f"{'it panicked: ' if is_rust_panic(error) else ''}{str(error)[:300]}"


def _read_chat_template(directory: Path, from_config: Any) -> str | None:
    """The chat template: ``chat_template.jinja`` wins over tokenizer_config's entry, as in transformers."""
    path = directory / CHAT_TEMPLATE_FILE
    if path.is_file():
        return decode_utf8(path.read_bytes(), path, TokenizerError)
    if isinstance(from_config, list):  # the legacy multi-template form: [{"name": ..., "template": ...}]
        return {entry["name"]: entry["template"] for entry in from_config}.get("default")
    return from_config


# The parts of a tokenizer.json, in the order a failure is looked for in them.
_PIPELINE_PARTS = ("model", "normalizer", "pre_tokenizer", "post_processor", "decoder", "added_tokens")
_PIPELINE_PARTS += ("padding", "truncation")
_PROBE_TEXTS = ("a", "Hello, world! 123")


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
    _check_token_ids(spec, path)
    try:
        return spec, tokenizers.Tokenizer.from_str(text)
    except BaseException as err:
        if not is_library_failure(err):
            raise
        raise TokenizerError(
            f"{path}: the tokenizers library cannot read it ({_library_failure(err)}){_failing_part(spec, encode=False)}"
        ) from err


def _check_token_ids(spec: dict[str, Any], path: Path) -> None:
    """Refuse token ids far beyond the vocabulary's size (the rest of the ids are the library's to check).

    Ids are dense (0 to n-1, with few gaps) in every real file. The library accepts any u32, but writes the
    vocabulary back (``save_pretrained``, copies of the backend) by walking every id up to the largest: an id
    of 2**31 turns that into minutes of work and gigabytes of memory.
    """
    model = spec.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    added = spec.get("added_tokens") if isinstance(spec.get("added_tokens"), list) else []
    entries = (
        [("model.vocab", token, token_id) for token, token_id in (vocab or {}).items()]
        if isinstance(vocab, dict)
        else []
    )
    entries += [("added_tokens", t.get("content"), t.get("id")) for t in added if isinstance(t, dict)]
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
        part = _failing_part(spec, encode=True) if spec is not None else ""
        raise TokenizerError(
            f"{source}: the tokenizers library panicked when encoding with it ({str(err)[:300]}){part}; "
            "the file is damaged or was written for another version of the library"
        ) from err


def _encode_probe(backend: tokenizers.Tokenizer) -> None:
    for text in _PROBE_TEXTS:
        for encoding in (backend.encode(text, add_special_tokens=True), backend.encode(text, text)):
            backend.decode(encoding.ids, skip_special_tokens=False)


def _failing_part(spec: dict[str, Any], encode: bool) -> str:
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


_BERT_DEFAULTS = {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"}


def _add_tokens_from_config(backend: tokenizers.Tokenizer, added_tokens_decoder: Mapping[str, Any]) -> None:
    """Add the tokens of tokenizer_config's ``added_tokens_decoder`` that the backend does not know yet."""
    known = {token.content for token in backend.get_added_tokens_decoder().values()}
    for _, spec in sorted(added_tokens_decoder.items(), key=lambda item: int(item[0])):
        token = added_token(spec, special=bool(spec.get("special", False)) if isinstance(spec, dict) else True)
        if token.content not in known:
            (backend.add_special_tokens if token.special else backend.add_tokens)([token])
