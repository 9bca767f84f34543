"""The rows of a served model's request, checked: texts, chat conversations, or images.

MLflow's scoring server hands the model a DataFrame, a dict of columns or a list; these functions accept each
shape and refuse values that are not what the field must hold, naming the field and the row (the MLflow flavor
turns ``RequestError`` into an HTTP 400). A number, a null or a list is never scored as the text ``"None"``.
"""

from __future__ import annotations

from typing import Any

TEXT_FIELD = "text"
MESSAGES_FIELD = "messages"
IMAGE_FIELD = "image"


class RequestError(ValueError):
    """A request field that is missing or holds the wrong kind of value; the message names field and row."""


def request_texts(model_input: Any, field: str = TEXT_FIELD) -> list[str]:
    """The strings of ``field``: a DataFrame column, ``{field: [...]}``, a list of strings or of ``{field: ...}``
    rows, or one string.

    Raises:
        RequestError: no such field, or a value that is not a string.
    """
    values = _column(model_input, field)
    texts = []
    for row, value in enumerate(values):
        value = _row_value(value, field, row)
        if not isinstance(value, str):
            raise RequestError(f"{field!r} of row {row} must be a string, got {_kind(value)} ({value!r:.60})")
        texts.append(value)
    return texts


def request_conversations(model_input: Any) -> list[list[dict[str, str]]]:
    """The chat conversations of a ``messages`` field: each a list of ``{"role", "content"}`` strings.

    Raises:
        RequestError: no ``messages`` field, or a conversation that is not a list of role/content strings.
    """
    conversations = []
    for row, value in enumerate(_column(model_input, MESSAGES_FIELD)):
        value = _plain(_row_value(value, MESSAGES_FIELD, row))
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise RequestError(f"{MESSAGES_FIELD!r} of row {row} must be a non-empty list of messages")
        messages = []
        for position, message in enumerate(value):
            message = _plain(message)
            if (
                not isinstance(message, dict)
                or not isinstance(message.get("role"), str)
                or not isinstance(message.get("content"), str)
            ):
                raise RequestError(
                    f"message {position} of row {row} must be {{'role': str, 'content': str}}, got {message!r:.80}"
                )
            messages.append({"role": message["role"], "content": message["content"]})
        conversations.append(messages)
    return conversations


def request_images(model_input: Any, field: str = IMAGE_FIELD) -> list[Any]:
    """The images of ``field``, one per row: a base64 string of an image file (PNG, JPEG...; a ``data:`` URL too),
    the file's bytes, or pixels as nested lists or an array ((H, W) gray, (H, W, C) or (C, H, W)).

    Raises:
        RequestError: no such field; a string that is not base64; pixels that are not numbers, ragged, or not 2-D
            or 3-D; anything else (the message names field and row).
    """
    import base64
    import binascii

    import numpy as np

    images = []
    for row, value in enumerate(_column(model_input, field)):
        value = _row_value(value, field, row)
        if isinstance(value, str):
            data = value.split(",", 1)[1] if value.startswith("data:") else value
            try:
                value = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise RequestError(
                    f"{field!r} of row {row} must be an image file in base64 (or pixels as nested lists); "
                    f"got a string that is not base64 ({value!r:.40})"
                ) from None
            if not value:
                raise RequestError(f"{field!r} of row {row} is an empty string")
        elif isinstance(value, (list, tuple)):
            try:
                value = np.asarray(value)
            except ValueError:
                raise RequestError(f"{field!r} of row {row}: ragged pixel rows (rows of different lengths)") from None
            if value.dtype == object or not np.issubdtype(value.dtype, np.number) or value.ndim not in (2, 3):
                raise RequestError(
                    f"{field!r} of row {row} must hold numbers as (H, W), (H, W, C) or (C, H, W) pixels; got "
                    f"shape {value.shape} of {value.dtype}"
                )
        elif not isinstance(value, (bytes, bytearray)):
            raise RequestError(
                f"{field!r} of row {row} must be an image file in base64 or pixels as nested lists; got {_kind(value)}"
            )
        images.append(value)
    return images


def has_field(model_input: Any, field: str) -> bool:
    """Whether the request carries ``field`` (as a column, a key, or a key of its first row)."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        return field in model_input.columns
    if isinstance(model_input, dict):
        return field in model_input
    if isinstance(model_input, (list, tuple)) and model_input and isinstance(model_input[0], dict):
        return field in model_input[0]
    return False


def _column(model_input: Any, field: str) -> list[Any]:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if field not in model_input.columns:
            raise RequestError(f"the input has no {field!r} column (columns: {[str(c) for c in model_input.columns]})")
        return model_input[field].tolist()
    if isinstance(model_input, dict):
        if field not in model_input:
            raise RequestError(f"the input has no {field!r} field (fields: {[str(k) for k in model_input]})")
        values = _plain(model_input[field])
    else:
        values = _plain(model_input)
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)):
        raise RequestError(
            f"{field!r} must be a list of {'conversations' if field == MESSAGES_FIELD else 'strings'} (or a DataFrame"
            f" with a {field!r} column); got {_kind(values)} ({values!r:.60})"
        )
    return list(values)


def _row_value(value: Any, field: str, row: int) -> Any:
    value = _plain(value)  # `instances` rows arrive as 0-d arrays
    if isinstance(value, dict) and field in value:  # {"inputs": [{"text": ...}, ...]}: one record per row
        return _plain(value[field])
    if isinstance(value, dict) and field == TEXT_FIELD:
        raise RequestError(f"row {row} has no {field!r} field (fields: {[str(k) for k in value]})")
    return value


def _plain(value: Any) -> Any:
    """Arrays and Series (MLflow's JSON parser makes them) as lists, or as the scalar of a 0-d array."""
    return value.tolist() if hasattr(value, "tolist") and hasattr(value, "ndim") else value


def _kind(value: Any) -> str:
    return "null" if value is None or (isinstance(value, float) and value != value) else type(value).__name__
