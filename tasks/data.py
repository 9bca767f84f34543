"""Dataset tasks: load a raw source into a split Arrow dataset, tokenize it (cached)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelcore.errors import ConfigError
from modelcore.serialization.atomic import atomic_directory
from tasks import settings
from tasks.labels import apply_label_map, check_similar_labels, from_csv_text, label_names
from tasks.readers import DatasetError, is_missing, read_rows

logger = logging.getLogger(__name__)

ASSET_DATASETS = {"rotten-tomatoes"}  # dataset refs served by modelcore.assets
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "merges.txt")
TOKENIZE_FORMAT = 1  # bump when tokenize_dataset's output changes, so old cache entries are not reused
# why a row is dropped, in the order checked (a row is counted once, under its first reason)
DROP_REASONS = ("missing text", "text not a string", "empty text", "missing label")


@dataclasses.dataclass(frozen=True)
class DatasetRef:
    """A split dataset on disk: ``path/train`` and ``path/test`` (``datasets.Dataset.save_to_disk``).

    Columns are ``text`` and ``label`` (an int in ``range(len(labels))``) whatever the source called them.
    ``rows_read`` counts the source's rows, ``dropped`` the rows left out per reason (only reasons that
    occurred), ``train_label_counts`` / ``test_label_counts`` the rows per label id. Everything is
    tuples of str and int: hashable, and JSON round-trips through :meth:`from_dict`.
    """

    path: str
    fingerprint: str
    labels: tuple[str, ...]
    num_train: int
    num_test: int
    source: str
    rows_read: int = 0
    dropped: tuple[tuple[str, int], ...] = ()
    train_label_counts: tuple[int, ...] = ()
    test_label_counts: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetRef:
        """The ref back from its JSON form (where tuples came back as lists)."""
        values = dict(data)
        for name in ("labels", "train_label_counts", "test_label_counts"):
            values[name] = tuple(values.get(name, ()))
        values["dropped"] = tuple((str(reason), int(count)) for reason, count in values.get("dropped", ()))
        return cls(**values)


def _read_rows(ref: str, text_column: str, label_column: str) -> list[dict[str, Any]]:
    """``{"text", "label"}`` per source row, values as read (missing ones None)."""
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
        rows, available = read_rows(path)
    missing = [c for c in (text_column, label_column) if c not in available]
    if missing:
        raise DatasetError(f"dataset {ref!r}: no column {missing[0]!r}; columns are {available}")
    return [{"text": row.get(text_column), "label": row.get(label_column)} for row in rows]


def _typed_labels(ref: str, rows: list[dict[str, Any]], label_map: dict[str, str] | None) -> list[dict[str, Any]]:
    """Rows with ``label_map`` applied to the raw labels, then a CSV's label text typed (ints stay ints)."""
    labels = apply_label_map([row["label"] for row in rows], label_map or {})
    if ref not in ASSET_DATASETS and Path(ref).suffix.lower() == ".csv":
        labels = from_csv_text([None if is_missing(v) else v for v in labels])
    return [{"text": row["text"], "label": label} for row, label in zip(rows, labels, strict=True)]


def _drop_reason(row: dict[str, Any]) -> str | None:
    text = row["text"]
    if text is None:
        return "missing text"
    if not isinstance(text, str):
        return "text not a string"
    if not text.strip():
        return "empty text"
    if is_missing(row["label"]):
        return "missing label"
    return None


def _keep_usable(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], tuple[tuple[str, int], ...]]:
    """The rows with text and a label, and how many were dropped per reason."""
    kept, dropped = [], Counter()
    for row in rows:
        reason = _drop_reason(row)
        if reason is None:
            kept.append(row)
        else:
            dropped[reason] += 1
    return kept, tuple((reason, dropped[reason]) for reason in DROP_REASONS if dropped[reason])


def _label_names(
    ref: str, values: list[Any], label_column: str, allow_similar_labels: bool
) -> tuple[tuple[str, ...], list[int]]:
    """Label names and each row's label id (see ``tasks.labels``); the asset's ids are named by the catalog."""
    if ref in ASSET_DATASETS:
        from modelcore.assets import ROTTEN_TOMATOES_LABELS

        return tuple(ROTTEN_TOMATOES_LABELS), [int(v) for v in values]
    where = f"dataset {ref!r}, column {label_column!r}"
    names, ids = label_names(values, where)
    if not allow_similar_labels and all(isinstance(v, str) for v in values):
        check_similar_labels(list(names), Counter(values), where)
    return names, ids


@task(name="load_dataset", cache_policy=NO_CACHE, retries=0)
def load_dataset(
    ref: str,
    text_column: str = "text",
    label_column: str = "label",
    test_size: float = 0.2,
    seed: int = 0,
    label_map: dict[str, str] | None = None,
    allow_similar_labels: bool = False,
    max_examples: int | None = None,
) -> DatasetRef:
    """Read ``ref`` (a dataset asset name or a csv/json/jsonl/parquet file), check it, shuffle with ``seed`` and split.

    Rows without text (missing, not a string, or whitespace only) or without a label are dropped and
    counted per reason. The counts, and the rows per label in each split, are logged at INFO and
    returned. The split is stored under the pipeline cache keyed on its fingerprint (the rows, the
    label names and the split settings), so the same data and settings give the same directory.

    Args:
        ref: a dataset asset name or a file path.
        text_column, label_column: the source's column names.
        test_size: held-out share (rounded up to whole rows).
        seed: the shuffle's seed.
        label_map: raw label (its text: ``"Fresh"``, ``"1.0"``, ``"True"``) -> class name, applied
            before anything else; folds look-alike names or names float and bool labels.
        allow_similar_labels: keep label names that look like typos of each other as distinct classes.
        max_examples: keep this many rows after the shuffle (a quick run); None keeps all.

    Raises:
        DatasetError: naming the file (and line) or column: missing file or column, unreadable row,
            no rows, a split that leaves one side empty, float or bool labels, look-alike label names.
    """
    rows = _typed_labels(ref, _read_rows(ref, text_column, label_column), label_map)
    rows_read = len(rows)
    rows, dropped = _keep_usable(rows)
    if dropped:
        logger.info("dataset %s: dropped %d of %d rows: %s", ref, rows_read - len(rows), rows_read, dict(dropped))
    if not rows:
        raise DatasetError(
            f"dataset {ref!r}: no rows with text in column {text_column!r} and a label in {label_column!r}"
        )
    labels, ids = _label_names(ref, [r["label"] for r in rows], label_column, allow_similar_labels)
    if len(labels) < 2:
        raise DatasetError(f"dataset {ref!r}: column {label_column!r} has a single label {labels}; need at least 2")
    examples = [{"text": r["text"], "label": i} for r, i in zip(rows, ids, strict=True)]
    return split_labelled(ref, examples, labels, test_size, seed, max_examples, rows_read, dropped)


def split_labelled(
    ref: str,
    examples: list[dict[str, Any]],
    labels: tuple[str, ...],
    test_size: float,
    seed: int,
    max_examples: int | None,
    rows_read: int,
    dropped: tuple[tuple[str, int], ...],
    unit: str = "rows",
    fingerprint: Callable[..., str] | None = None,
) -> DatasetRef:
    """Labelled examples shuffled with ``seed``, cut to ``max_examples``, split (the test side rounds up), stored
    under their fingerprint and logged with the rows per label in each split.

    Args:
        examples: ``{"label": id, ...}`` per example, in source order (texts, or an image task's encoded images).
        unit: what an example is, for messages ("rows", "images").
        fingerprint: (examples, labels, test_size, seed, cut) -> the split's id; default: over the examples' JSON.

    Raises:
        DatasetError: a split that leaves one side empty.
    """
    random.Random(seed).shuffle(examples)
    if max_examples is not None:
        examples = examples[:max_examples]
    # the test split rounds up, as in scikit-learn and datasets (12,752 rows at 0.2: 10,201 / 2,551)
    cut = len(examples) - math.ceil(test_size * len(examples))
    if cut <= 0 or cut >= len(examples):
        raise DatasetError(f"dataset {ref!r}: {len(examples)} {unit} leave an empty split at test_size={test_size}")
    digest = (fingerprint or _fingerprint)(examples, labels, test_size, seed, cut)
    target = _store_split(ref, digest, labels, examples, cut)
    train_counts = _label_counts(examples[:cut], len(labels))
    test_counts = _label_counts(examples[cut:], len(labels))
    logger.info(
        "dataset %s: %d %s read, %d used (%d train / %d test), fingerprint %s",
        ref, rows_read, unit, len(examples), cut, len(examples) - cut, digest,
    )  # fmt: skip
    logger.info(
        "dataset %s: labels (train / test %s): %s",
        ref,
        unit,
        ", ".join(f"{name} {a} / {b}" for name, a, b in zip(labels, train_counts, test_counts, strict=True)),
    )
    return DatasetRef(
        str(target), digest, tuple(labels), cut, len(examples) - cut, ref, rows_read, dropped, train_counts, test_counts
    )


def _fingerprint(examples: list[dict[str, Any]], labels: tuple[str, ...], test_size: float, seed: int, cut: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"labels": labels, "test_size": test_size, "seed": seed, "train_rows": cut}).encode())
    for example in examples:
        digest.update(json.dumps(example, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def _store_split(ref: str, fingerprint: str, labels: tuple[str, ...], examples: list[dict[str, Any]], cut: int) -> Path:
    target = settings.cache_dir() / "datasets" / fingerprint
    if not (target / "done").is_file():
        import datasets

        with atomic_directory(target) as staging:
            for split, part in (("train", examples[:cut]), ("test", examples[cut:])):
                datasets.Dataset.from_list(part).save_to_disk(str(staging / split))
            (staging / "done").write_text(json.dumps({"source": ref, "labels": labels}))
    return target


def _label_counts(examples: list[dict[str, Any]], num_labels: int) -> tuple[int, ...]:
    counts = Counter(example["label"] for example in examples)
    return tuple(counts[i] for i in range(num_labels))


def resolve_base_model(reference: str) -> str:
    """The local checkpoint behind ``reference`` (a directory, asset name, GGUF file or ``models:/``/``runs:/`` URI),
    resolved once so every later stage of a run reads the same files; logged when it differs from the reference."""
    from modelcore.serialization.sources import resolve_source

    resolved = str(resolve_source(reference))
    if resolved != reference:
        logger.info("base model %s resolved to %s", reference, resolved)
    return resolved


def check_max_length(base_model: str, max_length: int) -> None:
    """Refuse a ``max_length`` longer than the base model's position table, before any training.

    A BERT-like model has ``max_position_embeddings`` learned positions: a longer sequence indexes
    past the table (a crash at the first batch that long, which a short run may never draw). A
    Llama-like model was trained for ``max_position_embeddings`` positions; longer goes untested.

    Args:
        base_model: a checkpoint source (directory, asset name, GGUF file, ``models:/`` or ``runs:/`` URI).
        max_length: tokens per example (special tokens included).

    Raises:
        ConfigError: naming the model, ``max_length`` and ``max_position_embeddings``, and the fix.
    """
    from modelcore import AutoConfig

    config = AutoConfig.from_pretrained(base_model)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        logger.info(
            "base model %s: no max_position_embeddings in its config; max_length %d not checked", base_model, max_length
        )
        return
    if max_length > limit:
        raise ConfigError(
            f"max_length {max_length} is more than the max_position_embeddings {limit} of base model "
            f"{base_model!r} ({config.model_type}); use max_length <= {limit}"
        )


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
        dataset = DatasetRef.from_dict(dataset)
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
    with atomic_directory(target) as staging:
        for split in ("train", "test"):
            part = datasets.load_from_disk(str(Path(dataset.path) / split))
            enc = tokenizer(list(part["text"]), truncation=True, max_length=max_length)
            columns = {name: [list(v) for v in enc[name]] for name in enc.keys()}
            columns["label"] = list(part["label"])
            datasets.Dataset.from_dict(columns).save_to_disk(str(staging / split))
        (staging / "done").write_text(json.dumps({"fingerprint": dataset.fingerprint, "max_length": max_length}))
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
