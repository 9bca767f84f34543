"""Class labels: what a label column holds, and label names that look like typos of each other.

A label column holds either names (strings) or ids (ints 0..K-1). Floats and booleans are refused
with a message that says so: they are not class labels until rounded or named. Names that differ
only by case, spacing or Unicode form (``fresh``, ``Fresh``, ``fresh ``), or by one letter inside
a word (``rotten``, ``rotton``), are refused unless folded with a label map or confirmed distinct:
a typo otherwise becomes a class of its own, and the model a 5-class one.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Any

from tasks.readers import DatasetError

INT_TEXT = re.compile(r"[+-]?\d+")
FLOAT_TEXT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+)")
SEPARATORS = re.compile(r"[\s_\-]+")
MIN_TYPO_LENGTH = 4  # shorter names differ by one letter on purpose (pos/neg, yes/no, cat/cut)
MIN_SUBSTITUTION_LENGTH = 5  # "spam"/"scam": one letter replaced in a 4-letter word is another word
MAX_NAMES_FOR_EDITS = 2000  # beyond this many distinct names only the normalized-equality check runs (linear)


def apply_label_map(values: list[Any], label_map: dict[str, str]) -> list[Any]:
    """Each label replaced by ``label_map[str(label)]`` where there is an entry (a string, int, float or bool)."""
    if not label_map:
        return values
    return [label_map.get(str(v), v) if v is not None else v for v in values]


def from_csv_text(values: list[Any]) -> list[Any]:
    """CSV cells are text: a column whose every value is an integer becomes ints (ids), as a typed file would give.

    A column of decimals stays text here and is refused by :func:`label_names` as floats.
    """
    present = [v for v in values if isinstance(v, str)]
    if present and all(INT_TEXT.fullmatch(v.strip()) for v in present):
        return [int(v) if isinstance(v, str) else v for v in values]
    if present and all(INT_TEXT.fullmatch(v.strip()) or FLOAT_TEXT.fullmatch(v.strip()) for v in present):
        return [float(v) if isinstance(v, str) else v for v in values]
    return values


def label_names(values: list[Any], where: str) -> tuple[tuple[str, ...], list[int]]:
    """Label names (id order) and each row's label id; ``values`` hold no missing labels.

    Names are sorted; ints must be exactly 0..K-1 and are named ``LABEL_<i>``.

    Raises:
        DatasetError: naming ``where`` (the dataset and column): float or bool labels, ints that are
            not 0..K-1, a mix of types.
    """
    kinds = {_kind(v) for v in values}
    if "bool" in kinds:
        raise DatasetError(
            f"{where}: labels are booleans (true/false), not class labels; "
            "write them as names or as 0/1, or name them with label_map, e.g. {'True': 'positive', 'False': 'negative'}"
        )
    if "float" in kinds:
        examples = sorted({v for v in values if isinstance(v, float)})[:5]
        raise DatasetError(
            f"{where}: labels are floats ({examples}), and float labels are not class labels; "
            "round them to ints 0..K-1 in the file, or name them with label_map, e.g. {'1.0': 'positive'}"
        )
    if kinds == {"str"}:
        names = tuple(sorted(set(values)))
        index = {name: i for i, name in enumerate(names)}
        return names, [index[v] for v in values]
    if kinds == {"int"}:
        distinct = sorted(set(values))
        if distinct != list(range(len(distinct))):
            raise DatasetError(f"{where}: integer labels must be 0..K-1; found {distinct[:10]}")
        return tuple(f"LABEL_{i}" for i in distinct), list(values)
    raise DatasetError(f"{where}: labels mix types ({', '.join(sorted(kinds))}); use all ints or all names")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "str"}.get(type(value), type(value).__name__)


def check_similar_labels(names: list[str], counts: Counter, where: str) -> None:
    """Refuse label names that look like typos of each other.

    Args:
        names: the distinct label names.
        counts: rows per name (for the message).
        where: the dataset and column, for the message.

    Raises:
        DatasetError: naming ``where``, each group of look-alike names with its row counts, and a
            ``label_map`` that folds each group into its most frequent name.
    """
    groups = similar_groups(names)
    if not groups:
        return
    described = []
    folding: dict[str, str] = {}
    for group in groups:
        keep = max(group, key=lambda name: (counts[name], name))
        folding |= {name: keep for name in group if name != keep}
        described.append(", ".join(f"{name!r} ({counts[name]:,} rows)" for name in group))
    raise DatasetError(
        f"{where}: labels look like typos of each other: {'; '.join(f'[{d}]' for d in described)}. "
        f"Fold them with label_map={folding!r}, or set allow_similar_labels=True if they are distinct classes"
    )


def similar_groups(names: list[str]) -> list[list[str]]:
    """Groups (two or more names each, sorted) of names that look alike; see :func:`look_alike`."""
    parent = {name: name for name in names}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    def join(a: str, b: str) -> None:
        parent[root(b)] = root(a)

    by_key: dict[str, list[str]] = {}
    for name in names:
        by_key.setdefault(normalize(name), []).append(name)
    for same in by_key.values():
        for name in same[1:]:
            join(same[0], name)
    if len(by_key) <= MAX_NAMES_FOR_EDITS:  # one edit apart: compare keys of equal or next length only
        by_length: dict[int, list[str]] = {}
        for key in by_key:
            by_length.setdefault(len(key), []).append(key)
        for key in by_key:
            for other in by_length.get(len(key), []) + by_length.get(len(key) + 1, []):
                if other != key and look_alike(key, other):
                    join(by_key[key][0], by_key[other][0])
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(root(name), []).append(name)
    return sorted(sorted(group) for group in groups.values() if len(group) > 1)


def normalize(name: str) -> str:
    """Unicode NFKC, case-folded, separators (spaces, ``_``, ``-``) as one space, trimmed."""
    return SEPARATORS.sub(" ", unicodedata.normalize("NFKC", name).casefold()).strip()


def look_alike(a: str, b: str) -> bool:
    """Whether two distinct names look like one label typed twice.

    Equal after :func:`normalize`; or one letter apart (inserted, deleted, replaced, or two letters
    swapped) inside a word of at least 4 letters, the names being at least 4 characters long (5
    for a replaced letter). Digits never count: ``LABEL_1``/``LABEL_2`` and ``0``/``1`` are classes,
    and so are ``class_a``/``class_b`` (the letter is a word of its own).
    """
    x, y = normalize(a), normalize(b)
    if x == y:
        return True
    if min(len(x), len(y)) < MIN_TYPO_LENGTH:
        return False
    edit = _single_edit(x, y)
    if edit is None:
        return False
    kind, position = edit
    longer = x if len(x) >= len(y) else y
    if kind == "replace" and len(x) < MIN_SUBSTITUTION_LENGTH:
        return False
    changed = longer[position : position + (2 if kind == "swap" else 1)]
    if not changed.isalpha():
        return False
    return len(_word_at(longer, position)) >= MIN_TYPO_LENGTH


def _single_edit(x: str, y: str) -> tuple[str, int] | None:
    """("insert" | "replace" | "swap", index in the longer string) when ``x`` and ``y`` are one edit apart."""
    if len(x) > len(y):
        x, y = y, x
    start = 0
    while start < len(x) and x[start] == y[start]:
        start += 1
    if len(y) == len(x) + 1:
        return ("insert", start) if x[start:] == y[start + 1 :] else None
    if len(x) != len(y):
        return None
    if x[start + 1 :] == y[start + 1 :]:
        return "replace", start
    if x[start : start + 2] == y[start : start + 2][::-1] and x[start + 2 :] == y[start + 2 :]:
        return "swap", start
    return None


def _word_at(text: str, position: int) -> str:
    start = position
    while start > 0 and text[start - 1].isalpha():
        start -= 1
    end = position
    while end < len(text) and text[end].isalpha():
        end += 1
    return text[start:end]
