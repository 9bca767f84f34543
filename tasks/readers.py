"""Read a dataset file into rows, naming the file and the line of anything that cannot be read.

CSV, JSON and JSON Lines are parsed here rather than by ``datasets`` (whose errors name neither
the file nor the row, and let a raw ``UnicodeDecodeError`` through for JSON Lines); parquet goes
through pyarrow. CSV cells stay strings: whether a label column holds ints, floats or names is
decided from the values (``tasks.labels``), not by a parser's guess (pandas turns an int column
with one empty cell into floats).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelcore.errors import DataError

FORMATS = (".csv", ".json", ".jsonl", ".parquet")
MISSING = None  # what a row holds for a column it lacks (a short CSV row, a JSON object without the key)


class DatasetError(DataError):
    """The dataset cannot be used: missing file or column, unreadable row, no rows, labels that do not fit."""


def read_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of ``path`` (a .csv, .json, .jsonl or .parquet file) and its column names.

    Args:
        path: the file; its suffix picks the format.

    Returns:
        ``(rows, columns)``: one dict per row (a column a row lacks is absent or None), and the
        column names in file order (for JSON: every key seen, in first-seen order).

    Raises:
        DatasetError: naming the file and the line: a byte that is not UTF-8, a line that is not
            JSON, a CSV row with more fields than the header, a file with no rows.
    """
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DatasetError(f"{path}: unsupported format {path.suffix!r}; use one of {list(FORMATS)}")
    if suffix == ".parquet":
        rows, columns = _read_parquet(path)
    elif suffix == ".csv":
        rows, columns = _read_csv(path)
    else:
        rows, columns = _read_json(path)
    if not rows:
        raise DatasetError(f"{path}: no rows (the file holds {'a header only' if columns else 'nothing'})")
    return rows, columns


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, decoded line with its ending) of a UTF-8 file; a leading BOM is dropped.

    Decoding line by line is exact: a newline byte is never part of a multi-byte UTF-8 sequence.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                bad = raw[error.start : error.end].hex(" ")
                raise DatasetError(
                    f"{path}: line {number}, column {error.start + 1}: byte(s) {bad} are not UTF-8 "
                    f"({error.reason}); save the file as UTF-8"
                ) from None
            yield number, (line.removeprefix("\ufeff") if number == 1 else line)


def _read_csv(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    lines = _text_lines(path)
    line_numbers: list[int] = []

    def tracked() -> Iterator[str]:
        for number, line in lines:
            line_numbers.append(number)
            yield line

    reader = csv.reader(tracked())
    try:
        header = next(reader, None)
        if header is None:
            return [], []
        rows = []
        for fields in reader:
            if not fields:  # a blank line
                continue
            if len(fields) > len(header):
                raise DatasetError(
                    f"{path}: line {line_numbers[-1]}: {len(fields)} fields, the header has {len(header)} "
                    "(quote a field that holds a comma)"
                )
            rows.append(dict(zip(header, fields, strict=False)))  # a short row lacks its last columns
    except csv.Error as error:
        raise DatasetError(f"{path}: line {line_numbers[-1] if line_numbers else 1}: not valid CSV ({error})") from None
    return rows, header


def _read_json(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """A JSON array of objects, or JSON Lines (one object per line; what a .jsonl file must be)."""
    lines = list(_text_lines(path))
    if path.suffix.lower() == ".json":
        text = "".join(line for _, line in lines)
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            if error.msg != "Extra data":  # "Extra data" after a first object: JSON Lines in a .json file
                raise DatasetError(
                    f"{path}: line {error.lineno}, column {error.colno}: not valid JSON ({error.msg})"
                ) from None
        else:
            if not isinstance(document, list):
                raise DatasetError(f"{path}: expected a JSON array of objects or JSON Lines, got {_kind(document)}")
            return _objects(path, [(index, item) for index, item in enumerate(document, start=1)], "item")
    records = []
    for number, line in lines:
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line.rstrip("\r\n"))))
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"{path}: line {number}, column {error.pos + 1}: not valid JSON ({error.msg}); "
                "a .jsonl file holds one JSON object per line"
            ) from None
    return _objects(path, records, "line")


def _objects(path: Path, records: list[tuple[int, Any]], unit: str) -> tuple[list[dict[str, Any]], list[str]]:
    columns: dict[str, None] = {}
    for number, record in records:
        if not isinstance(record, dict):
            raise DatasetError(f"{path}: {unit} {number}: expected a JSON object, got {_kind(record)}")
        columns.update(dict.fromkeys(record))
    return [record for _, record in records], list(columns)


def _kind(value: Any) -> str:
    """``an array``, ``a string``, ... for messages."""
    name = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _read_parquet(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a file that is not parquet
        raise DatasetError(f"{path}: cannot be read as parquet: {error}") from None
    return table.to_pylist(), list(table.column_names)


def is_missing(value: Any) -> bool:
    """None, a NaN (how pandas-written files mark an empty cell), or a string of whitespace only."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()
