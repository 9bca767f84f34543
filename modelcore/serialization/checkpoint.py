"""The Hugging Face checkpoint layout: single file or shards + index, read and written safely.

Layout written by ``save_state_dict``:

* ``model.safetensors`` when everything fits in ``max_shard_size``;
* else ``model-0000k-of-0000N.safetensors`` plus ``model.safetensors.index.json`` with
  ``metadata.total_size`` and ``weight_map`` (tensor name -> shard file).

A save is one transaction (``modelcore.serialization.atomic``): every new file (shards, index,
``extra_files`` such as config.json) goes to a temporary name first; a commit record then makes
the switch; the renames, and the removal of weight files the new layout does not use, follow. A
save killed at any point leaves the old checkpoint or the new one, never a mix; the next save or
load finishes a committed save and the next save removes temporary files of one that never
committed. Each weight file and the index carry the same save id (``__metadata__`` /
``metadata``: ``modelcore_save_id``); a load refuses shards whose id is not the index's.

Reading is strict: every shard header is checked before anything is loaded, and index entries
(and the weight files themselves) must resolve, symlinks included, inside the checkpoint
directory, or inside the Hugging Face cache repo folder (``blobs/``) of a cache snapshot.

A GGUF file (``modelcore.serialization.gguf``) is read as a checkpoint of one shard.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modelcore.errors import CheckpointError, DiskFullError, SafetensorsError, free_bytes, is_disk_full
from modelcore.serialization.atomic import (
    JOURNAL_NAME,
    apply_journal,
    directory_lock,
    finish_commit,
    fsync_file,
    is_temp_name,
    new_temp_file,
    recover_interrupted_commit,
    remove_leftover_temps,
    write_journal,
)
from modelcore.serialization.safetensors_io import SafetensorsFile, file_size, strict_json, write_safetensors
from modelcore.serialization.sources import is_gguf_file

logger = logging.getLogger(__name__)

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHTS_NAME = "pytorch_model.bin"
PICKLE_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
SAVE_ID_KEY = "modelcore_save_id"
_SHARD_PATTERN = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


def parse_size(size: int | str) -> int:
    """``"10GB"`` -> 10_000_000_000, ``"1MiB"`` -> 1_048_576 (decimal and binary units, like transformers)."""
    if isinstance(size, int):
        value = size
    else:
        match = _SIZE_PATTERN.match(size)
        if not match:
            raise ValueError(f"max_shard_size {size!r} is not a size like '10GB', '500MB' or an int of bytes")
        value = int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


# ------------------------------------------------------------------ reading
@dataclass
class CheckpointFiles:
    """Where each tensor of a checkpoint lives."""

    directory: Path  # or the .gguf file itself
    weight_map: dict[str, Path] = field(default_factory=dict)  # tensor name -> file
    pickle: bool = False
    gguf: bool = False
    index: Path | None = None  # the index file, for a sharded checkpoint
    save_id: str | None = None  # the index's save id (modelcore saves), which every shard must carry

    @property
    def files(self) -> list[Path]:
        return sorted(set(self.weight_map.values()))

    @classmethod
    def locate(cls, directory: Path, allow_pickle: bool = False) -> CheckpointFiles:
        """Find the weights in ``directory``: safetensors (single or sharded), else opted-in pickle files.

        A save interrupted after its commit point is finished first. Every weight file must
        resolve inside the checkpoint (see the module docstring); every shard's header is checked.

        ``directory`` may also be a ``.gguf`` file: its tensors, under Hugging Face names, dequantized on read.

        Raises:
            CheckpointError: a malformed index or shard, a file outside the checkpoint, shards of another save.
            FileNotFoundError: no weights, or a shard the index names is missing.
        """
        if is_gguf_file(directory):
            from modelcore.serialization.gguf import GGUFFile

            with GGUFFile(directory) as f:
                return cls(directory, dict.fromkeys(f.keys(), directory), gguf=True)
        recover_interrupted_commit(directory)
        roots = _allowed_roots(directory)
        index = directory / SAFE_WEIGHTS_INDEX_NAME
        single = directory / SAFE_WEIGHTS_NAME
        if index.is_file():
            _check_inside(index, roots, f"{index}: the index")
            weight_map, save_id = _read_index(index, roots)
            files = cls(directory, weight_map, index=index, save_id=save_id)
            files._check_shards()
            return files
        if single.is_file():
            _check_inside(single, roots, f"{single}: the weights file")
            with SafetensorsFile(single) as f:
                return cls(directory, dict.fromkeys(f.keys(), single))
        for name in (PICKLE_WEIGHTS_INDEX_NAME, PICKLE_WEIGHTS_NAME):
            path = directory / name
            if path.is_file():
                if not allow_pickle:
                    raise CheckpointError(
                        f"{path}: refusing to unpickle a pickle checkpoint (unpickling can run arbitrary code). "
                        "Convert it to safetensors, or pass allow_pickle=True if you trust its source "
                        "(it is then loaded with torch.load(weights_only=True))."
                    )
                _check_inside(path, roots, f"{path}: the weights file")
                if name == PICKLE_WEIGHTS_INDEX_NAME:
                    return cls(directory, _read_index(path, roots)[0], pickle=True, index=path)
                return cls(directory, dict.fromkeys(_load_pickle(path), path), pickle=True)
        raise FileNotFoundError(
            f"{directory}: no weights found (looked for {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME}"
            f"{', ' + PICKLE_WEIGHTS_NAME if allow_pickle else ''})"
        )

    def _check_shards(self) -> None:
        """Check every shard's header, and that all come from the save that wrote the index."""
        foreign = []
        for path in self.files:
            try:
                with SafetensorsFile(path) as reader:
                    stamp = reader.metadata.get(SAVE_ID_KEY)
            except SafetensorsError as err:
                raise SafetensorsError(f"{err} (a shard listed in {self.index})") from err
            if self.save_id is not None and stamp != self.save_id:
                foreign.append(f"{path} ({'save ' + stamp if stamp else 'no save id'})")
        if foreign:
            raise CheckpointError(_mixed_save_message(self.index, self.save_id, foreign))

    def iter_files(self) -> Iterator[tuple[Path, TensorReader]]:
        """Open each file in turn; yields (path, reader) and closes the file afterwards."""
        for path in self.files:
            reader = self._open(path)
            try:
                names = [n for n, p in self.weight_map.items() if p == path]
                missing = [n for n in names if n not in reader]
                if missing:
                    raise CheckpointError(
                        f"{path}: the index {self.index} maps {missing[:5]} to this file, but it lacks them"
                    )
                stamp = reader.metadata.get(SAVE_ID_KEY) if isinstance(reader, SafetensorsFile) else None
                if self.save_id is not None and stamp != self.save_id:  # replaced since locate(): a concurrent save
                    raise CheckpointError(_mixed_save_message(self.index, self.save_id, [f"{path} (save {stamp})"]))
                yield path, reader
            finally:
                reader.close()

    def _open(self, path: Path) -> TensorReader:
        if self.gguf:
            from modelcore.serialization.gguf import GGUFFile

            return GGUFFile(path)
        return _PickleReader(path) if self.pickle else SafetensorsFile(path)

    def first_float_dtype(self) -> torch.dtype | None:
        """The dtype of the first floating-point tensor (what ``dtype="auto"`` keeps)."""
        for _, reader in self.iter_files():
            for name in reader.keys():
                dtype = reader.dtype(name)
                if dtype.is_floating_point:
                    return dtype
        return None


def _mixed_save_message(index: Path | None, save_id: str | None, foreign: list[str]) -> str:
    return (
        f"{index}: written by save {save_id}, but {', '.join(foreign)} come from another save: the directory "
        "mixes two checkpoints (files copied in by hand, or a save interrupted by an older version). Save the "
        "model again, or restore the directory from a copy."
    )


def _read_index(index: Path, roots: list[str]) -> tuple[dict[str, Path], str | None]:
    """The index's weight map (tensor name -> existing file inside the checkpoint) and its save id, if any."""
    data = strict_json(index.read_bytes(), index, "index", CheckpointError)
    if not isinstance(data, dict) or not isinstance(data.get("weight_map"), dict):
        raise CheckpointError(f"{index}: not a valid index (needs a JSON object with a 'weight_map' object)")
    weight_map, metadata = data["weight_map"], data.get("metadata", {})
    if not weight_map:
        raise CheckpointError(f"{index}: 'weight_map' is empty; an index must name the file of every tensor")
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{index}: 'metadata' must be an object, got {type(metadata).__name__}")
    total = metadata.get("total_size", 0)
    if type(total) is not int or total < 0:
        raise CheckpointError(f"{index}: metadata.total_size must be a non-negative integer, got {total!r}")
    save_id = metadata.get(SAVE_ID_KEY)
    if SAVE_ID_KEY in metadata and not isinstance(save_id, str):
        raise CheckpointError(f"{index}: metadata.{SAVE_ID_KEY} must be a string, got {save_id!r}")
    root = index.parent
    resolved: dict[str, Path] = {}
    for name, file_name in weight_map.items():
        if not isinstance(file_name, str) or not file_name:
            raise CheckpointError(f"{index}: entry {name!r} must name a file (a non-empty string), got {file_name!r}")
        relative = os.path.normpath(file_name)
        if os.path.isabs(relative) or relative == ".." or relative.startswith(".." + os.sep):
            raise CheckpointError(
                f"{index}: entry {name!r} points to {file_name!r}, outside the checkpoint directory; refusing it"
            )
        path = root / relative
        _check_inside(path, roots, f"{index}: entry {name!r} points to {file_name!r}, which")
        if not path.is_file():
            raise FileNotFoundError(f"{index}: shard {file_name!r} (holding {name!r}) is missing")
        resolved[name] = path
    return resolved, save_id


def _allowed_roots(directory: Path) -> list[str]:
    """Real paths a checkpoint's files may resolve into: the directory, and a cache snapshot's repo folder."""
    roots = [os.path.realpath(directory)]
    for candidate in (os.path.abspath(directory), roots[0]):
        repo = _hf_cache_repo(Path(candidate))
        if repo is not None:
            roots.append(os.path.realpath(repo))
    return roots


def _hf_cache_repo(directory: Path) -> Path | None:
    """The Hugging Face cache repo folder (holding ``blobs/`` and ``snapshots/``) of ``<repo>/snapshots/<rev>/...``."""
    parts = directory.parts
    for i in range(len(parts) - 2, 0, -1):  # the nearest "snapshots" with a revision below it
        if parts[i] == "snapshots":
            repo = Path(*parts[:i])
            return repo if (repo / "blobs").is_dir() else None
    return None


def _check_inside(path: Path, roots: list[str], what: str) -> None:
    """Refuse ``path`` when it resolves (symlinks included) outside every allowed root."""
    real = os.path.realpath(path)
    if any(os.path.commonpath([real, root]) == root for root in roots):
        return
    raise CheckpointError(
        f"{what} resolves to {real}, outside the checkpoint directory {roots[0]}; refusing it "
        "(only a Hugging Face cache snapshot may link into its own repo's blobs/)"
    )


class _PickleReader:
    """Reader over an opted-in ``pytorch_model*.bin`` file, loaded with ``weights_only=True``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tensors = _load_pickle(path)

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def dtype(self, name: str) -> torch.dtype:
        return self._tensors[name].dtype

    def shape(self, name: str) -> torch.Size:
        return self._tensors[name].shape

    def read(
        self, name: str, dtype: torch.dtype | None = None, device: torch.device | str = "cpu", mmap: bool = True
    ) -> torch.Tensor:
        tensor = self._tensors[name]  # memory-mapped when the file was opened
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        return tensor.to(device)

    def close(self) -> None:
        self._tensors = {}


TensorReader = SafetensorsFile | _PickleReader


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises several types for bad or unsafe pickles
        raise CheckpointError(f"{path}: cannot load as a weights-only pickle checkpoint: {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


# ------------------------------------------------------------------ writing
def shard_plan(state_dict: dict[str, torch.Tensor], max_shard_size: int) -> list[list[str]]:
    """Split tensor names, in order, into shards of at most ``max_shard_size`` bytes.

    A tensor larger than the limit gets a shard of its own.
    """
    shards: list[list[str]] = [[]]
    current = 0
    for name, tensor in state_dict.items():
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and current + size > max_shard_size:
            shards.append([])
            current = 0
        shards[-1].append(name)
        current += size
    return shards


@dataclass
class _PendingFile:
    """A file of the save: its final name, its size, and how to write it to a temporary path."""

    name: str
    size: int
    write: Callable[[Path], None]


def save_state_dict(
    state_dict: dict[str, torch.Tensor],
    directory: Path,
    max_shard_size: int | str = "10GB",
    extra_files: dict[str, str | bytes] | None = None,
) -> list[Path]:
    """Write ``state_dict`` in the Hugging Face layout, in one transaction; return the weight files written.

    The new files (weights, index, ``extra_files``) are written to temporary names and fsynced;
    a commit record then switches the directory to them; weight files of the previous layout
    that the new one does not use are removed. Killed at any point, the directory holds the old
    checkpoint or the new one: a committed save is finished by the next save or load, temporary
    files of an uncommitted one are removed by the next save. A save that cannot fit raises
    :class:`DiskFullError` before writing anything; a write that fails removes every temporary
    file, leaving the previous checkpoint as it was.

    Args:
        state_dict: names -> tensors, without tied duplicates.
        directory: created if needed.
        max_shard_size: bytes per shard (int) or a size string such as ``"5GB"``.
        extra_files: small files switched with the weights, name -> text or bytes
            (``{"config.json": config.to_json_string()}``), so that they always match them.

    Returns:
        The weight files of the new checkpoint.

    Raises:
        DiskFullError: the directory lacks the space (naming it and the bytes needed), or ran out of it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extras = _encode_extra_files(extra_files or {}, directory)
    save_id = uuid.uuid4().hex
    pending = _plan_files(state_dict, parse_size(max_shard_size), save_id)
    sharded = any(p.name == SAFE_WEIGHTS_INDEX_NAME for p in pending)
    weight_names = [p.name for p in pending if p.name != SAFE_WEIGHTS_INDEX_NAME]
    pending += [
        _PendingFile(name, len(data), lambda tmp, data=data: tmp.write_bytes(data)) for name, data in extras.items()
    ]
    with directory_lock(directory):  # one save (or recovery) at a time in this directory
        finish_commit(directory)  # a save killed after its commit point is finished before anything else
        remove_leftover_temps(directory, lambda target: _is_checkpoint_file(target) or target in extras)
        _check_free_space(directory, [p.size for p in pending])
        renames = _write_temporaries(directory, pending)
        stale = _stale_files(directory, keep=set(weight_names), sharded=sharded)
        try:
            write_journal(directory, save_id, renames, stale)  # the commit point
        except BaseException:
            if not os.path.lexists(directory / JOURNAL_NAME):  # not committed (else the record needs the temps)
                for tmp, _ in renames:
                    tmp.unlink(missing_ok=True)
            raise
        for name in stale:
            logger.info("removing stale weight file %s", directory / name)
        apply_journal(directory)
    return [directory / name for name in weight_names]


def _plan_files(state_dict: dict[str, torch.Tensor], max_shard_size: int, save_id: str) -> list[_PendingFile]:
    """The weight files (and the index, when sharded) of ``state_dict``, each stamped with ``save_id``."""
    shards = shard_plan(state_dict, max_shard_size)
    metadata = {"format": "pt", SAVE_ID_KEY: save_id}
    if len(shards) == 1:
        layout = {SAFE_WEIGHTS_NAME: shards[0]}
    else:
        layout = {f"model-{i:05d}-of-{len(shards):05d}.safetensors": names for i, names in enumerate(shards, 1)}
    pending = []
    for name, names in layout.items():
        tensors = {n: state_dict[n] for n in names}
        # write_safetensors is looked up when called, so tests can interpose on it
        pending.append(
            _PendingFile(name, file_size(tensors, metadata), lambda tmp, t=tensors: write_safetensors(t, tmp, metadata))
        )
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in state_dict.values())
        weight_map = {tensor: name for name, names in layout.items() for tensor in names}
        index = {"metadata": {"total_size": total, SAVE_ID_KEY: save_id}, "weight_map": weight_map}
        data = (json.dumps(index, indent=2) + "\n").encode()
        pending.append(_PendingFile(SAFE_WEIGHTS_INDEX_NAME, len(data), lambda tmp: tmp.write_bytes(data)))
    return pending


def _encode_extra_files(extra_files: dict[str, str | bytes], directory: Path) -> dict[str, bytes]:
    encoded = {}
    for name, content in extra_files.items():
        plain = isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
        if not plain or _is_checkpoint_file(name) or name == JOURNAL_NAME or is_temp_name(name):
            raise ValueError(f"extra_files: {name!r} is not a plain file name that a save may write into {directory}")
        encoded[name] = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    return encoded


def _is_checkpoint_file(name: str) -> bool:
    return name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, JOURNAL_NAME) or bool(_SHARD_PATTERN.fullmatch(name))


def _check_free_space(directory: Path, sizes: list[int]) -> None:
    """Raise DiskFullError up front when the new files (old ones stay until the commit) cannot fit."""
    free = free_bytes(directory)
    if free is None:
        return
    try:
        block = os.statvfs(directory).f_frsize or 4096
    except (OSError, AttributeError):
        block = 4096
    needed = sum(-(-size // block) * block for size in sizes) + block  # whole blocks; one more for the journal
    if needed > free:
        raise DiskFullError(directory, needed=needed, free=free)


def _write_temporaries(directory: Path, pending: list[_PendingFile]) -> list[tuple[Path, str]]:
    """Write each file to a fsynced temporary; on any failure remove them all (a full disk: DiskFullError)."""
    written: list[tuple[Path, str]] = []
    try:
        for item in pending:
            tmp = new_temp_file(directory / item.name)
            written.append((tmp, item.name))
            item.write(tmp)
            fsync_file(tmp)
    except BaseException as err:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and is_disk_full(err):
            needed = sum(p.size for p in pending)
            raise DiskFullError(directory / item.name, needed=needed, free=free_bytes(directory)) from err
        raise
    return written


def _stale_files(directory: Path, keep: set[str], sharded: bool) -> list[str]:
    """Weight files of an earlier save that the new layout does not use (and its index, when no longer sharded)."""
    stale = []
    for entry in os.scandir(directory):
        weights = entry.name == SAFE_WEIGHTS_NAME or _SHARD_PATTERN.fullmatch(entry.name)
        index = entry.name == SAFE_WEIGHTS_INDEX_NAME and not sharded
        if (weights and entry.name not in keep) or index:
            stale.append(entry.name)
    return stale
