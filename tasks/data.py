"""Dataset tasks: load a raw source into a split Arrow dataset, tokenize it (cached)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import shutil
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelcore.errors import DataError
from tasks import settings

logger = logging.getLogger(__name__)

ASSET_DATASETS = {"rotten-tomatoes"}  # dataset refs served by modelcore.assets
FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "merges.txt")
TOKENIZE_FORMAT = 1  # bump when tokenize_dataset's output changes, so old cache entries are not reused


class DatasetError(DataError):
    """The dataset cannot be used: missing file or column, no rows, labels that do not fit."""


@dataclasses.dataclass(frozen=True)
class DatasetRef:
    """A split dataset on disk: ``path/train`` and ``path/test`` (``datasets.Dataset.save_to_disk``).

    Columns are ``text`` and ``label`` (an int in ``range(len(labels))``) whatever the source called them.
    """

    path: str
    fingerprint: str
    labels: tuple[str, ...]
    num_train: int
    num_test: int
    source: str


def _read_rows(ref: str, text_column: str, label_column: str) -> list[dict[str, Any]]:
    if ref in ASSET_DATASETS:
        from modelcore import assets

        rows = assets.load_rotten_tomatoes()
        available = ["text", "label"]
    else:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise DatasetError(
                f"dataset {ref!r}: no such file, and not a known dataset asset ({sorted(ASSET_DATASETS)})"
            )
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DatasetError(f"{path}: unsupported format {path.suffix!r}; use one of {sorted(FILE_BUILDERS)}")
        import datasets

        try:
            table = datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as error:  # datasets raises many types for unreadable files
            if "corresponds to no data" in str(error):  # a header and no rows
                raise DatasetError(f"dataset {ref!r}: no rows") from error
            raise DatasetError(f"{path}: cannot be read as {builder}: {error}") from error
        available = list(table.column_names)
        rows = table.to_list() if len(table) else []
    missing = [c for c in (text_column, label_column) if c not in available]
    if missing:
        raise DatasetError(f"dataset {ref!r}: no column {missing[0]!r}; columns are {available}")
    return [{"text": row[text_column], "label": row[label_column]} for row in rows]


def _label_names(ref: str, values: list[Any], label_column: str) -> tuple[tuple[str, ...], list[int]]:
    """Label names and each row's label id. Ints must be 0..K-1; strings are sorted into ids."""
    if ref in ASSET_DATASETS:
        from modelcore.assets import ROTTEN_TOMATOES_LABELS

        return tuple(ROTTEN_TOMATOES_LABELS), [int(v) for v in values]
    if any(v is None for v in values):
        raise DatasetError(f"dataset {ref!r}: column {label_column!r} has empty labels")
    if all(isinstance(v, str) for v in values):
        names = tuple(sorted(set(values)))
        index = {name: i for i, name in enumerate(names)}
        return names, [index[v] for v in values]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        distinct = sorted(set(values))
        if distinct != list(range(len(distinct))):
            raise DatasetError(
                f"dataset {ref!r}: integer labels in column {label_column!r} must be 0..K-1; found {distinct[:10]}"
            )
        return tuple(f"LABEL_{i}" for i in distinct), list(values)
    raise DatasetError(f"dataset {ref!r}: column {label_column!r} mixes label types; use all ints or all strings")


@task(name="load_dataset", cache_policy=NO_CACHE, retries=0)
def load_dataset(
    ref: str, text_column: str = "text", label_column: str = "label", test_size: float = 0.2, seed: int = 0
) -> DatasetRef:
    """Read ``ref`` (a dataset asset name or a csv/json/jsonl/parquet file), shuffle with ``seed`` and split.

    The split is stored under the pipeline cache keyed on its fingerprint (the rows, the label names
    and the split settings), so the same data and settings give the same directory and fingerprint.

    Raises:
        DatasetError: naming the file or column: missing file, missing column, no rows, a split
            that leaves one side empty, bad labels.
    """
    rows = _read_rows(ref, text_column, label_column)
    rows = [r for r in rows if isinstance(r["text"], str) and r["text"].strip()]
    if not rows:
        raise DatasetError(f"dataset {ref!r}: no rows with text in column {text_column!r}")
    labels, ids = _label_names(ref, [r["label"] for r in rows], label_column)
    if len(labels) < 2:
        raise DatasetError(f"dataset {ref!r}: column {label_column!r} has a single label {labels}; need at least 2")
    examples = [{"text": r["text"], "label": i} for r, i in zip(rows, ids, strict=True)]
    random.Random(seed).shuffle(examples)
    # the test split rounds up, as in scikit-learn and datasets (12,752 rows at 0.2: 10,201 / 2,551)
    cut = len(examples) - math.ceil(test_size * len(examples))
    if cut <= 0 or cut >= len(examples):
        raise DatasetError(f"dataset {ref!r}: {len(examples)} rows leave an empty split at test_size={test_size}")
    digest = hashlib.sha256()
    digest.update(json.dumps({"labels": labels, "test_size": test_size, "seed": seed, "train_rows": cut}).encode())
    for example in examples:
        digest.update(json.dumps(example, ensure_ascii=False).encode())
    fingerprint = digest.hexdigest()[:16]
    target = settings.cache_dir() / "datasets" / fingerprint
    if not (target / "done").is_file():
        import datasets

        staging = target.with_name(f".{fingerprint}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        for split, part in (("train", examples[:cut]), ("test", examples[cut:])):
            datasets.Dataset.from_list(part).save_to_disk(str(staging / split))
        (staging / "done").write_text(json.dumps({"source": ref, "labels": labels}))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    logger.info(
        "dataset %s: %d train / %d test rows, labels %s, fingerprint %s",
        ref,
        cut,
        len(examples) - cut,
        labels,
        fingerprint,
    )
    return DatasetRef(str(target), fingerprint, labels, cut, len(examples) - cut, ref)


def tokenizer_hash(tokenizer_ref: str) -> str:
    """sha256 over the tokenizer files of ``tokenizer_ref`` (directory, asset name or MLflow URI)."""
    from modelcore.serialization.sources import resolve_source

    directory = resolve_source(tokenizer_ref)
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = directory / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def tokenization_key(dataset: DatasetRef, tokenizer_ref: str, max_length: int) -> str:
    """The tokenization cache key: data fingerprint, tokenizer hash, max_length (and the format version)."""
    text = f"{dataset.fingerprint}|{tokenizer_hash(tokenizer_ref)}|{max_length}|{TOKENIZE_FORMAT}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tokenize_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    dataset = parameters["dataset"]
    if isinstance(dataset, dict):
        dataset = DatasetRef(**dataset)
    key = tokenization_key(dataset, parameters["tokenizer_ref"], parameters["max_length"])
    # the output's place is part of the key: two pipeline homes never share a cached path
    place = hashlib.sha256(str(settings.cache_dir()).encode()).hexdigest()[:8]
    return f"tokenize-{key}-{place}"


@task(name="tokenize_dataset", cache_key_fn=_tokenize_cache_key, persist_result=True, result_serializer="json")
def tokenize_dataset(dataset: DatasetRef, tokenizer_ref: str, max_length: int) -> str:
    """Tokenize both splits (truncation at ``max_length``, no padding) and return their directory.

    Cached twice over on the same key (data fingerprint, tokenizer hash, max_length): Prefect
    skips the task on a hit ("Cached" state), and the output directory under the pipeline cache
    is reused even when Prefect's result store was wiped. Use :func:`tokenize_cached` from a flow:
    it also recovers from a Prefect hit whose directory was deleted since.
    """
    from modelcore import AutoTokenizer

    key = tokenization_key(dataset, tokenizer_ref, max_length)
    target = settings.cache_dir() / "tokenized" / key
    if (target / "done").is_file():
        logger.info("tokenized dataset found on disk: %s", target)
        return str(target)
    import datasets

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_ref)
    staging = target.with_name(f".{key}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for split in ("train", "test"):
        part = datasets.load_from_disk(str(Path(dataset.path) / split))
        enc = tokenizer(list(part["text"]), truncation=True, max_length=max_length)
        columns = {name: [list(v) for v in enc[name]] for name in enc.keys()}
        columns["label"] = list(part["label"])
        datasets.Dataset.from_dict(columns).save_to_disk(str(staging / split))
    (staging / "done").write_text(json.dumps({"fingerprint": dataset.fingerprint, "max_length": max_length}))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    logger.info("tokenized %d + %d rows into %s", dataset.num_train, dataset.num_test, target)
    return str(target)


def tokenize_cached(dataset: DatasetRef, tokenizer_ref: str, max_length: int) -> tuple[str, bool]:
    """Run :func:`tokenize_dataset` in a flow; returns (directory, whether Prefect's cache was hit).

    A hit whose directory no longer exists (the pipeline cache was cleaned, Prefect's results were
    not) is recomputed with ``refresh_cache``, so a stale cache entry never reaches training.
    """
    state = tokenize_dataset(dataset, tokenizer_ref, max_length, return_state=True)
    path = state.result()
    if state.name == "Cached" and not (Path(path) / "done").is_file():
        logger.warning("cached tokenization %s is gone from disk; tokenizing again", path)
        path = tokenize_dataset.with_options(refresh_cache=True)(dataset, tokenizer_ref, max_length)
        return path, False
    return path, state.name == "Cached"
