"""The Hugging Face checkpoint layout: single file or shards + index, read and written safely.

Layout written by ``save_state_dict``:

* ``model.safetensors`` when everything fits in ``max_shard_size``;
* else ``model-0000k-of-0000N.safetensors`` plus ``model.safetensors.index.json`` with
  ``metadata.total_size`` and ``weight_map`` (tensor name -> shard file).

Every file is written atomically; the index goes last, and weight files of an earlier save that
the new layout does not use are removed after it.

A GGUF file (``modelcore.serialization.gguf``) is read as a checkpoint of one shard.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modelcore.errors import CheckpointError
from modelcore.serialization.atomic import atomic_path, atomic_write_text
from modelcore.serialization.safetensors_io import SafetensorsFile, write_safetensors
from modelcore.serialization.sources import is_gguf_file

logger = logging.getLogger(__name__)

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHTS_NAME = "pytorch_model.bin"
PICKLE_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
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

    @property
    def files(self) -> list[Path]:
        return sorted(set(self.weight_map.values()))

    @classmethod
    def locate(cls, directory: Path, allow_pickle: bool = False) -> CheckpointFiles:
        """Find the weights in ``directory``: safetensors (single or sharded), else opted-in pickle files.

        ``directory`` may also be a ``.gguf`` file: its tensors, under Hugging Face names, dequantized on read.
        """
        if is_gguf_file(directory):
            from modelcore.serialization.gguf import GGUFFile

            with GGUFFile(directory) as f:
                return cls(directory, dict.fromkeys(f.keys(), directory), gguf=True)
        index = directory / SAFE_WEIGHTS_INDEX_NAME
        single = directory / SAFE_WEIGHTS_NAME
        if index.is_file():
            return cls(directory, _read_index(index))
        if single.is_file():
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
                if name == PICKLE_WEIGHTS_INDEX_NAME:
                    return cls(directory, _read_index(path), pickle=True)
                return cls(directory, dict.fromkeys(_load_pickle(path), path), pickle=True)
        raise FileNotFoundError(
            f"{directory}: no weights found (looked for {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME}"
            f"{', ' + PICKLE_WEIGHTS_NAME if allow_pickle else ''})"
        )

    def iter_files(self) -> Iterator[tuple[Path, TensorReader]]:
        """Open each file in turn; yields (path, reader) and closes the file afterwards."""
        for path in self.files:
            reader = self._open(path)
            try:
                names = [n for n, p in self.weight_map.items() if p == path]
                missing = [n for n in names if n not in reader]
                if missing:
                    raise CheckpointError(f"{path}: the index maps {missing[:5]} to this file, but it lacks them")
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


def _read_index(index: Path) -> dict[str, Path]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index}: not a valid index (needs a JSON object with 'weight_map'): {err}") from err
    root = index.parent
    resolved: dict[str, Path] = {}
    for name, file_name in weight_map.items():
        # A lexical check: symlinks inside the directory (as in a hub cache snapshot) stay allowed.
        relative = os.path.normpath(str(file_name))
        if os.path.isabs(relative) or relative == ".." or relative.startswith(".." + os.sep):
            raise CheckpointError(
                f"{index}: entry {name!r} points to {file_name!r}, outside the checkpoint directory; refusing it"
            )
        path = root / relative
        if not path.is_file():
            raise FileNotFoundError(f"{index}: shard {file_name!r} (holding {name!r}) is missing")
        resolved[name] = path
    return resolved


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


def save_state_dict(
    state_dict: dict[str, torch.Tensor], directory: Path, max_shard_size: int | str = "10GB"
) -> list[Path]:
    """Write ``state_dict`` in the Hugging Face layout; return the weight files written.

    All weight files are written to temporary names first and renamed into place only once every
    one is complete, then the index, then stale files go: a crash while writing leaves the previous
    checkpoint in the directory intact.

    Args:
        state_dict: names -> tensors, without tied duplicates.
        directory: created if needed.
        max_shard_size: bytes per shard (int) or a size string such as ``"5GB"``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    shards = shard_plan(state_dict, parse_size(max_shard_size))
    if len(shards) == 1:
        files = {directory / SAFE_WEIGHTS_NAME: shards[0]}
    else:
        files = {
            directory / f"model-{i:05d}-of-{len(shards):05d}.safetensors": names for i, names in enumerate(shards, 1)
        }
    with contextlib.ExitStack() as stack:  # on exit, every temp file is renamed into place
        for path, names in files.items():
            tmp = stack.enter_context(atomic_path(path))
            write_safetensors({n: state_dict[n] for n in names}, tmp, {"format": "pt"})
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in state_dict.values())
        weight_map = {name: path.name for path, names in files.items() for name in names}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        atomic_write_text(directory / SAFE_WEIGHTS_INDEX_NAME, json.dumps(index, indent=2) + "\n")
    _remove_stale(directory, keep={p.name for p in files}, sharded=len(shards) > 1)
    return list(files)


def _remove_stale(directory: Path, keep: set[str], sharded: bool) -> None:
    for path in directory.iterdir():
        stale_weights = path.name == SAFE_WEIGHTS_NAME or _SHARD_PATTERN.fullmatch(path.name)
        stale_index = path.name == SAFE_WEIGHTS_INDEX_NAME and not sharded
        if (stale_weights and path.name not in keep) or stale_index:
            logger.info("removing stale weight file %s", path)
            path.unlink()
