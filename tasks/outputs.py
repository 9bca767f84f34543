"""What a task that writes files does on a full disk: name the path and the bytes, keep nothing partial, no retry.

A full disk is not a passing fault: retrying the same write fails the same way (and each retry
re-does minutes of work first). :func:`retry_unless_disk_full` is the ``retry_condition_fn`` of
every task with retries; :func:`task_output` wraps a task's output directory so that a write that
runs out of space removes what it wrote and raises :class:`~modelcore.errors.DiskFullError`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelcore.errors import DiskFullError, free_bytes, is_disk_full

logger = logging.getLogger(__name__)


def retry_unless_disk_full(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry any failure except a full disk."""
    error = getattr(state, "data", None)  # Prefect hands the exception over as the Failed state's data
    if not isinstance(error, BaseException):
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:  # noqa: BLE001 - the failure being judged
            error = raised
    if error is not None and is_disk_full(error):
        logger.error("%s failed on a full disk; not retrying: %s", getattr(task, "name", task), error)
        return False
    return True


def directory_bytes(path: str | Path) -> int:
    """Total size of the files under ``path`` (a file's own size for a file)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextlib.contextmanager
def task_output(directory: str | Path, needed: int | None = None) -> Iterator[Path]:
    """A task's output directory: checked for ``needed`` bytes first, removed again if a write runs out of space.

    Raises:
        DiskFullError: naming ``directory``, the bytes needed (when known) and the bytes free.
    """
    directory = Path(directory)
    free = free_bytes(directory)
    if needed is not None and free is not None and needed > free:
        raise DiskFullError(directory, needed=needed, free=free)
    try:
        yield directory
    except BaseException as error:
        if not is_disk_full(error):
            raise
        shutil.rmtree(directory, ignore_errors=True)
        logger.error("%s: out of space; removed the partial output", directory)
        if isinstance(error, DiskFullError):
            raise
        raise DiskFullError(directory, needed=needed, free=free_bytes(directory)) from error
