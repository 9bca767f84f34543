"""The library's error types: one base, then one kind per thing that can be wrong.

Catch :class:`ModelcoreError` to catch every error modelcore raises on bad input or a bad file.
Each kind also derives from the built-in type callers already caught before it existed
(``ValueError`` for bad values and files, ``OSError`` for a full disk), so older ``except`` clauses
keep working. Messages name the file, key or field, and say the fix where there is one.

    ModelcoreError
    ├── ConfigError          a configuration value or config.json       (ValueError)
    ├── CheckpointError      a weights file or index                    (ValueError)
    │   └── SafetensorsError a malformed safetensors file               (ValueError)
    ├── TokenizerError       tokenizer files or tokenizer settings      (ValueError)
    ├── DataError            a dataset: file, row, column or labels     (ValueError)
    └── DiskFullError        a write that ran out of space              (OSError)
"""

from __future__ import annotations

import errno
import os


class ModelcoreError(Exception):
    """Base of every error modelcore raises for bad input, bad files or a full disk."""


class ConfigError(ModelcoreError, ValueError):
    """A configuration value is invalid; the message names the field (and the file it came from)."""


class CheckpointError(ModelcoreError, ValueError):
    """A checkpoint directory or weights file is malformed; the message names the file or key."""


class SafetensorsError(CheckpointError):
    """A safetensors file is malformed; the message names the file (and tensor)."""


class TokenizerError(ModelcoreError, ValueError):
    """Tokenizer files cannot be used, or a tokenizer setting is invalid; the message names the file or field."""


class DataError(ModelcoreError, ValueError):
    """A dataset cannot be used: missing file or column, unreadable row, labels that do not fit."""


class DiskFullError(ModelcoreError, OSError):
    """A write ran out of space (ENOSPC); the message names the path and the bytes it needed.

    Not worth retrying as it is: space must be freed first. Partial files are removed before it is raised.
    """

    def __init__(self, path: str | os.PathLike, needed: int | None = None, free: int | None = None) -> None:
        self.path = str(path)
        self.needed = needed
        self.free = free
        parts = [f"{self.path}: no space left on device"]
        if needed is not None:
            parts.append(f"needed {needed:,} bytes")
        if free is not None:
            parts.append(f"{free:,} bytes free")
        if needed is not None and free is not None and free >= needed:
            parts.append("enough bytes are free, so the filesystem is likely out of inodes (see df -i)")
        super().__init__(errno.ENOSPC, "; ".join(parts) + "; free some space and run again")

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is a full disk or an exceeded quota."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFullError) or (
            isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to this user on the filesystem holding ``path`` (its nearest existing parent); None if unknown."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent
    try:
        stats = os.statvfs(probe)
    except (OSError, AttributeError):
        return None
    return stats.f_bavail * stats.f_frsize
