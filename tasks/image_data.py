"""Datasets for image tasks: a folder of class sub-folders, a table with an image column, or the MNIST asset.

Every image is decoded once when the dataset is loaded, so a damaged file stops the run here, named, before any
training; the split keeps each image as its file's bytes (PNG, JPEG...), decoded again per batch by the task's
collator. Labels follow the text datasets' rules (``tasks.labels``): names are sorted into ids, a label map is
applied first, look-alike names are refused unless allowed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data import DatasetRef, split_labelled
from tasks.labels import apply_label_map, check_similar_labels, from_csv_text, label_names
from tasks.readers import DatasetError, is_missing, read_rows

logger = logging.getLogger(__name__)

IMAGE_ASSETS = ("mnist-5k",)  # dataset refs served by modelcore.assets
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_NAMED_FAILURES = 5  # unreadable images named in one error; the rest are counted
DROP_REASONS = ("missing image", "missing label")


@task(name="load_image_dataset", cache_policy=NO_CACHE, retries=0)
def load_image_dataset(
    ref: str,
    image_column: str = "image",
    label_column: str = "label",
    test_size: float = 0.2,
    seed: int = 0,
    label_map: dict[str, str] | None = None,
    allow_similar_labels: bool = False,
    max_examples: int | None = None,
) -> DatasetRef:
    """Read the labelled images of ``ref``, check each decodes, shuffle with ``seed`` and split.

    Args:
        ref: ``mnist-5k`` (the asset); a folder whose sub-folders are the classes (``pets/cat/1.jpg``; files
            anywhere under a class folder are its images; hidden entries and files that are not images are
            skipped and counted); or a csv/json/jsonl/parquet table whose ``image_column`` holds, per row, an
            image file's path (relative to the table's folder, or absolute), its base64 text (a ``data:`` URL
            too), its bytes, or a ``{"bytes", "path"}`` record (a Hugging Face ``Image`` column saved to parquet).
        image_column, label_column: a table's column names.
        test_size: held-out share (rounded up to whole images).
        seed: the shuffle's seed.
        label_map: raw label (its text) -> class name, applied first.
        allow_similar_labels: keep look-alike class names (``cat``, ``Cat``) as distinct classes.
        max_examples: keep this many images after the shuffle (a quick run); None keeps all.

    Raises:
        DatasetError: naming the dataset and the folder, file, column or row: no such source, a class folder
            without images, images outside any class folder, an image that cannot be read (up to five named, all
            counted), a missing column, fewer than two classes, a split that leaves one side empty.
    """
    if ref in IMAGE_ASSETS:
        items, labels, rows_read, dropped = _mnist(), None, 5000, ()
    else:
        path = Path(ref).expanduser()
        if path.is_dir():
            items, rows_read = _folder(ref, path)
            dropped = ()
        elif path.is_file():
            items, rows_read, dropped = _table(ref, path, image_column, label_column)
        else:
            raise DatasetError(
                f"dataset {ref!r}: no such folder or file, and not a known image dataset asset ({list(IMAGE_ASSETS)})"
            )
        labels = None
    if dropped:
        logger.info("dataset %s: dropped %d of %d rows: %s", ref, sum(n for _, n in dropped), rows_read, dict(dropped))
    if not items:
        raise DatasetError(f"dataset {ref!r}: no labelled images")
    _check_images(ref, items)
    raw = apply_label_map([item["label"] for item in items], label_map or {})
    if labels is None:
        where = f"dataset {ref!r}, {'class folders' if Path(ref).expanduser().is_dir() else repr(label_column)}"
        labels, ids = label_names(raw, where)
        if not allow_similar_labels and all(isinstance(v, str) for v in raw):
            check_similar_labels(list(labels), Counter(raw), where)
    else:
        ids = [int(v) for v in raw]
    if len(labels) < 2:
        raise DatasetError(f"dataset {ref!r}: a single class {list(labels)}; an image classifier needs at least 2")
    examples = [
        {"image": item["image"], "label": label, "source": item["source"]}
        for item, label in zip(items, ids, strict=True)
    ]
    return split_labelled(
        ref, examples, tuple(labels), test_size, seed, max_examples, rows_read, dropped, "images", _fingerprint
    )


def _mnist() -> list[dict[str, Any]]:
    """The 5,000 MNIST-5k digits as PNG files' bytes, labelled by their digit (class names ``"0"``..``"9"``)."""
    import numpy as np

    from modelcore import assets

    pixels, labels = assets.load_mnist()
    images = np.frombuffer(pixels, np.uint8).reshape(-1, 28, 28)
    return [
        {"image": _png(image), "label": str(label), "source": f"mnist-5k row {row + 1}"}
        for row, (image, label) in enumerate(zip(images, labels, strict=True))
    ]


def _png(pixels: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _folder(ref: str, root: Path) -> tuple[list[dict[str, Any]], int]:
    """The images of each class sub-folder (its name is the label), in sorted order; and the files seen."""
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    stray = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not classes:
        raise DatasetError(
            f"dataset {ref!r}: no class folders; put each class's images in a sub-folder named after the class "
            f"({root}/<class>/<image>)"
        )
    if stray:
        raise DatasetError(
            f"dataset {ref!r}: {len(stray)} image(s) outside any class folder ({', '.join(stray[:MAX_NAMED_FAILURES])}); "
            f"move each into {root}/<class>/"
        )
    items, skipped, seen = [], Counter(), 0
    for folder in classes:
        files = sorted(
            p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts)
        )
        seen += len(files)
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        for path in files:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped[path.suffix.lower() or "(no suffix)"] += 1
        if not images:
            raise DatasetError(
                f"dataset {ref!r}: class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                "add its images or remove the folder"
            )
        items += [{"image": p.read_bytes(), "label": folder.name, "source": str(p.relative_to(root))} for p in images]
    if skipped:
        logger.info("dataset %s: skipped %d files that are not images: %s", ref, sum(skipped.values()), dict(skipped))
    return items, seen


def _table(
    ref: str, path: Path, image_column: str, label_column: str
) -> tuple[list[dict[str, Any]], int, tuple[tuple[str, int], ...]]:
    """The rows of a table with an image and a label; rows missing either are dropped and counted."""
    rows, available = read_rows(path)
    missing = [c for c in (image_column, label_column) if c not in available]
    if missing:
        raise DatasetError(f"dataset {ref!r}: no column {missing[0]!r}; columns are {available}")
    labels = [row.get(label_column) for row in rows]
    if path.suffix.lower() == ".csv":
        labels = from_csv_text([None if is_missing(v) else v for v in labels])
    items, dropped = [], Counter()
    for number, (row, label) in enumerate(zip(rows, labels, strict=True), start=1):
        value = row.get(image_column)
        if value is None or is_missing(value) or value in ("", b""):
            dropped["missing image"] += 1
        elif is_missing(label):
            dropped["missing label"] += 1
        else:
            where = f"dataset {ref!r}, row {number}, column {image_column!r}"
            image, source = _image_bytes(value, path.parent, where)
            items.append({"image": image, "label": label, "source": source or f"row {number}"})
    return items, len(rows), tuple((reason, dropped[reason]) for reason in DROP_REASONS if dropped[reason])


def _image_bytes(value: Any, folder: Path, where: str) -> tuple[bytes, str | None]:
    """An image cell as the file's bytes, and the file it came from (None for inline data)."""
    if isinstance(value, dict):  # a Hugging Face Image feature: {"bytes": ..., "path": ...}
        if value.get("bytes"):
            return bytes(value["bytes"]), value.get("path")
        value = value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), None
    if not isinstance(value, str):
        raise DatasetError(f"{where}: an image must be a file path, base64 text or bytes; got {type(value).__name__}")
    if value.startswith("data:"):
        return _base64(value.split(",", 1)[-1], where), None
    candidate = Path(value).expanduser()
    candidate = candidate if candidate.is_absolute() else folder / candidate
    if candidate.is_file():
        return candidate.read_bytes(), value
    if len(value) > 64 and "/" not in value[:8]:  # long text that is no file: base64 of an image file
        return _base64(value, where), None
    raise DatasetError(f"{where}: no such image file {value!r} (relative paths are read from {folder})")


def _base64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DatasetError(f"{where}: neither an image file that exists nor base64 text ({text[:40]!r})") from None


def _check_images(ref: str, items: list[dict[str, Any]]) -> None:
    """Decode every image once: the unreadable ones are named (up to five) and counted in one error."""
    from modelcore.errors import DataError
    from modelcore.image_processing import decode_image

    failures = []
    for item in items:
        try:
            decode_image(io.BytesIO(item["image"]), item["source"])
        except DataError as error:
            cause = error.__cause__ or error
            failures.append(f"{item['source']} ({type(cause).__name__}: {cause})")
    if failures:
        named = "; ".join(failures[:MAX_NAMED_FAILURES])
        more = f" and {len(failures) - MAX_NAMED_FAILURES} more" if len(failures) > MAX_NAMED_FAILURES else ""
        raise DatasetError(
            f"dataset {ref!r}: {len(failures)} of {len(items)} images cannot be read (damaged, truncated or not "
            f"images): {named}{more}; remove or replace them"
        )


def _fingerprint(examples: list[dict[str, Any]], labels: tuple[str, ...], test_size: float, seed: int, cut: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"labels": labels, "test_size": test_size, "seed": seed, "train_rows": cut}).encode())
    for example in examples:
        digest.update(hashlib.sha256(example["image"]).digest())
        digest.update(json.dumps([example["label"], example["source"]]).encode())
    return digest.hexdigest()[:16]
