"""Datasets for language-model tasks: raw text or chats; load, split whole rows, tokenize with the task's ``prepare``.

Raw text: a row is one document (a Wikipedia article summary, a blank-line-separated block of a text file, a row
of a table's text column). Chat: a table with a ``messages`` column (lists of ``{"role", "content"}``) or with
``prompt`` and ``response`` columns; a row is one conversation. The held-out split takes whole rows, so no
article or conversation is half in training and half in the evaluation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelcore.serialization.atomic import atomic_directory
from tasks import settings
from tasks.data import DatasetRef, tokenizer_hash
from tasks.readers import DatasetError, read_rows

logger = logging.getLogger(__name__)

TEXT_ASSETS = ("wikipedia-summaries",)  # dataset refs served by modelcore.assets


def read_texts(
    ref: str, text_column: str, table: tuple[list[dict[str, Any]], list[str]] | None = None
) -> tuple[list[Any], int]:
    """The raw values of ``text_column`` in ``ref`` (an asset or a csv/json/jsonl/parquet/txt file), and rows read.

    ``table``: the file's ``(rows, columns)`` when the caller has read them already (they are not read twice).
    """
    if ref == "wikipedia-summaries":
        from modelcore import assets

        articles = json.loads(assets.fetch(ref).read_text(encoding="utf-8"))  # title -> {"extract": ...}
        values = [a.get("extract") if isinstance(a, dict) else None for a in articles.values()]
        return values, len(values)
    path = Path(ref).expanduser()
    if not path.is_file():
        raise DatasetError(f"dataset {ref!r}: no such file, and not a known text dataset asset ({list(TEXT_ASSETS)})")
    if path.suffix.lower() == ".txt":
        lines = path.read_text(encoding="utf-8").split("\n\n")  # a blank line separates documents
        return lines, len(lines)
    rows, available = table if table is not None else read_rows(path)
    if text_column not in available:
        raise DatasetError(f"dataset {ref!r}: no column {text_column!r}; columns are {available}")
    return [row.get(text_column) for row in rows], len(rows)


def read_chats(rows: list[dict[str, Any]], available: list[str]) -> tuple[dict[str, list], int] | None:
    """The conversation columns of a table (``messages``, or ``prompt`` and ``response``), or None if it has none."""
    columns = ["messages"] if "messages" in available else ["prompt", "response"]
    if not set(columns) <= set(available):
        return None
    kept = [row for row in rows if all(row.get(c) not in (None, "", []) for c in columns)]
    return {c: [row[c] for row in kept] for c in columns}, len(rows)


@task(name="load_text_dataset", cache_policy=NO_CACHE, retries=0)
def load_text_dataset(
    ref: str, text_column: str = "text", test_size: float = 0.2, seed: int = 0, max_examples: int | None = None
) -> DatasetRef:
    """Read the documents of ``ref``, drop the empty ones (counted), shuffle with ``seed`` and split by document.

    Args:
        ref: a text dataset asset (``wikipedia-summaries``) or a file (``.txt``: documents separated by a blank
            line; csv/json/jsonl/parquet: the ``text_column``).
        text_column: the column of a table that holds the text.
        test_size: held-out share of the documents (rounded up).
        seed: the shuffle's seed.
        max_examples: keep this many documents after the shuffle (a quick run); None keeps all.

    Raises:
        DatasetError: naming the dataset: no such file or column, no text left after dropping empty rows, a split
            that leaves one side empty.
    """
    path = Path(ref).expanduser()
    table = read_rows(path) if path.is_file() and path.suffix.lower() != ".txt" else None
    chats = read_chats(*table) if table is not None else None
    if chats is not None:
        columns, rows_read = chats
        _check_conversations(ref, columns)
        return _split(ref, columns, rows_read, "conversations", test_size, seed, max_examples)
    values, rows_read = read_texts(ref, text_column, table)
    texts = [v.strip() for v in values if isinstance(v, str) and v.strip()]
    if not texts:
        raise DatasetError(f"dataset {ref!r}: column {text_column!r} holds no text once empty rows are dropped")
    return _split(ref, {"text": texts}, rows_read, "documents", test_size, seed, max_examples)


def _check_conversations(ref: str, columns: dict[str, list]) -> None:
    """Every conversation checked before any training.

    Raises:
        DataError: naming the dataset and the row (0-based, in file order) of a conversation that does not
            alternate user and assistant turns or does not end with the assistant.
    """
    from modelcore.errors import DataError
    from modelcore.task_registry.chat import check_conversation, conversations

    for row, conversation in enumerate(conversations(columns)):
        try:
            check_conversation(conversation, row)
        except DataError as error:
            raise DataError(f"dataset {ref!r}: {error}") from None


def _split(
    ref: str,
    columns: dict[str, list],
    rows_read: int,
    unit: str,
    test_size: float,
    seed: int,
    max_examples: int | None,
) -> DatasetRef:
    """Rows (documents or conversations) shuffled with ``seed``, cut whole into train and test, stored once under
    their fingerprint, logged, and returned as a ``DatasetRef`` (the rows without text counted as dropped)."""
    kept = len(next(iter(columns.values())))
    dropped = rows_read - kept
    if dropped:
        logger.info("dataset %s: dropped %d of %d rows without text", ref, dropped, rows_read)
    order = list(range(kept))
    random.Random(seed).shuffle(order)
    if max_examples is not None:
        order = order[:max_examples]
    cut = len(order) - math.ceil(test_size * len(order))
    if cut <= 0 or cut >= len(order):
        raise DatasetError(f"dataset {ref!r}: {len(order)} {unit} leave an empty split at test_size={test_size}")
    digest = hashlib.sha256(json.dumps({"test_size": test_size, "seed": seed, "train": cut}).encode())
    for i in order:
        digest.update(json.dumps({c: columns[c][i] for c in columns}, ensure_ascii=False, default=str).encode())
    fingerprint = digest.hexdigest()[:16]
    target = settings.cache_dir() / "datasets" / fingerprint
    if not (target / "done").is_file():
        import datasets

        with atomic_directory(target) as staging:
            for split, part in (("train", order[:cut]), ("test", order[cut:])):
                datasets.Dataset.from_dict({c: [columns[c][i] for i in part] for c in columns}).save_to_disk(
                    str(staging / split)
                )
            (staging / "done").write_text(json.dumps({"source": ref, "unit": unit}))
    logger.info(
        "dataset %s: %d rows read, %d %s used (%d train / %d test), fingerprint %s",
        ref, rows_read, len(order), unit, cut, len(order) - cut, fingerprint,
    )  # fmt: skip
    reasons = (("empty text", dropped),) if dropped else ()
    return DatasetRef(str(target), fingerprint, (), cut, len(order) - cut, ref, rows_read, reasons)


@task(name="tokenize_for_task", cache_policy=NO_CACHE)
def tokenize_for_task(dataset: DatasetRef, tokenizer_ref: str, max_length: int, task_name: str) -> str:
    """The training split through the task's ``prepare`` (a causal LM: packed ``max_length`` blocks); cached on disk.

    The held-out split stays text: the evaluation reads it whole (perplexity over its concatenated documents).

    Raises:
        DatasetError: the training split holds less than one block of text.
    """
    from modelcore import AutoTokenizer
    from modelcore.task_registry import get_task

    spec = get_task(task_name)
    key = hashlib.sha256(
        json.dumps([dataset.fingerprint, tokenizer_hash(tokenizer_ref), max_length, spec.name]).encode()
    ).hexdigest()[:16]
    target = settings.cache_dir() / "tokenized" / key
    if (target / "done").is_file():
        logger.info("tokenized dataset found on disk: %s", target)
        return str(target)
    import datasets

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_ref)
    prepare = spec.function("prepare")
    with atomic_directory(target) as staging:
        for split in ("train",):
            part = datasets.load_from_disk(str(Path(dataset.path) / split))
            try:
                columns = prepare(tokenizer, part.to_dict(), max_length)
            except ValueError as error:
                raise DatasetError(f"dataset {dataset.source!r}, {split} split: {error}") from None
            datasets.Dataset.from_dict(columns).save_to_disk(str(staging / split))
            logger.info(
                "%s split: %d rows of %d tokens for %s", split, len(columns["input_ids"]), max_length, spec.name
            )
        (staging / "done").write_text(json.dumps({"fingerprint": dataset.fingerprint, "max_length": max_length}))
    return str(target)
