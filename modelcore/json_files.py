"""Reading the JSON files of a checkpoint (config.json, tokenizer_config.json, ...) with errors that name them.

Every way such a file can be unreadable as a JSON object (bytes that are not UTF-8, JSON syntax, nesting
too deep for the parser, an integer too long to convert, a top level that is not an object) becomes one
error of the caller's kind (``ConfigError``, ``TokenizerError``) whose message starts with the path and
gives the position. JSON's ``NaN``/``Infinity`` literals are kept: whoever needs a finite number refuses them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelcore.errors import ModelcoreError


def decode_utf8(raw: bytes, path: Path, error: type[ModelcoreError]) -> str:
    """``raw`` as text; a byte that is not UTF-8 is ``error`` naming the file and the byte's position.

    Args:
        raw: the file's bytes (a leading UTF-8 byte-order mark is dropped).
        path: the file, for the message.
        error: the error class to raise.

    Returns:
        The decoded text.
    """
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise error(
            f"{path}: not valid UTF-8 at byte {err.start} (line {line}, column {column}): {err.reason}; "
            "the file is damaged or was saved in another encoding (save it as UTF-8)"
        ) from err


def parse_json(text: str, path: Path, error: type[ModelcoreError]) -> Any:
    """Parse JSON text; a syntax error is ``error`` naming the file, the line and the column.

    Args:
        text: the file's text.
        path: the file, for the message.
        error: the error class to raise.

    Returns:
        The parsed value.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    except RecursionError as err:
        raise error(f"{path}: not usable JSON: nested too deeply to parse") from err
    except ValueError as err:  # an integer literal longer than Python's int conversion limit
        raise error(f"{path}: not usable JSON: {err}") from err


def read_json_object(path: Path, error: type[ModelcoreError]) -> dict[str, Any]:
    """Read a JSON file whose top level must be an object.

    Args:
        path: the file.
        error: the error class to raise (``ConfigError``, ``TokenizerError``, ...).

    Returns:
        The parsed object.

    Raises:
        error: the bytes are not UTF-8, the text is not JSON, or the top level is not an object; the message
            starts with the path and gives the position.
    """
    data = parse_json(decode_utf8(path.read_bytes(), path, error), path, error)
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object at the top level, got {json_type(data)}")
    return data


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages: object, array, string, number, boolean, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
