"""Atomic file writes, and atomic commits of several files at once.

One file: write to a temporary file in the same directory, fsync, then rename over the target.

Several files (a sharded checkpoint with its index and config.json): every new file is first
written to a temporary name and fsynced; then a small commit record (the journal,
:data:`JOURNAL_NAME`) listing the temp -> final renames and the files to remove is written
atomically: that write is the commit point. The renames and removals follow, the directory is
fsynced and the journal deleted. A process killed before the commit point leaves only temporary
files (ignored by readers, removed by the next commit); killed after it, it leaves the journal,
and whoever opens the directory next finishes the renames (:func:`recover_interrupted_commit`).
The directory thus holds the old set of files or the new one, never a mix.

A write that runs out of space (ENOSPC, EDQUOT) removes its temporary file and raises
:class:`modelcore.errors.DiskFullError` naming the path, the bytes it needed and the bytes free.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from modelcore.errors import CheckpointError, DiskFullError, free_bytes, is_disk_full

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, commits are still atomic
    fcntl = None

logger = logging.getLogger(__name__)

JOURNAL_NAME = ".modelcore-commit.json"
_JOURNAL_FORMAT = "modelcore-commit/1"
# tempfile.mkstemp names: ".<target>.<8 of [a-z0-9_]>.tmp"
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")
_READ_ONLY_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


# ------------------------------------------------------------------ one file
def disk_full(error: BaseException, path: str | os.PathLike, needed: int | None = None) -> DiskFullError | None:
    """The :class:`DiskFullError` to raise for ``error`` when it is (or comes from) ENOSPC/EDQUOT, else None.

    Args:
        error: the error a write raised.
        path: the file (or directory) that was being written.
        needed: bytes the write needed, if known.

    Returns:
        A DiskFullError naming ``path``, ``needed`` and the bytes free there; None for other errors.
    """
    if not is_disk_full(error):
        return None
    if isinstance(error, DiskFullError) and needed is None:
        needed = error.needed
    return DiskFullError(path, needed=needed, free=free_bytes(path))


def new_temp_file(path: Path) -> Path:
    """Create an empty temporary file next to ``path`` (``.<name>.XXXXXXXX.tmp``) and return its path."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        full = disk_full(err, path)
        if full is not None:
            raise full from err
        raise
    os.close(fd)
    return Path(name)


def is_temp_name(name: str, targets: Callable[[str], bool] | None = None) -> bool:
    """Whether ``name`` is a temporary file of an atomic write (whose target passes ``targets``, if given)."""
    match = _TEMP_NAME.fullmatch(name)
    return bool(match) and (targets is None or targets(match.group("target")))


def fsync_file(path: Path) -> None:
    """Flush ``path``'s data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries (renames, removals) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the renames are still atomic
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    On error the temporary file is removed and ``path`` is left as it was; running out of space
    raises :class:`DiskFullError` (from the original error) naming ``path``.

    Args:
        path: the file to write.
        size_hint: bytes about to be written, reported when the disk is full.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temp_file(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        full = disk_full(err, path, size_hint)
        if full is not None:
            raise full from err
        raise


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """A fresh sibling of ``target`` to fill; on success it replaces ``target`` by a rename, on error it is removed.

    The sibling's name is unique per call (``.<name>.<random>.tmp``), so two processes filling the same target at
    once never write into each other's files: the last to finish wins, and a reader sees a whole directory.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, moving an existing ``target`` aside first (retried if another writer
    moves it meanwhile). Between the two renames ``target`` is briefly absent, never partial."""
    while True:
        try:
            staging.rename(target)
            return
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        retired = target.with_name(f"{staging.name}.old")
        try:
            target.rename(retired)
        except FileNotFoundError:
            continue  # another writer moved it first: try again
        shutil.rmtree(retired, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, size_hint=len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


# ------------------------------------------------------------------ several files
@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on ``directory`` itself: one commit or recovery at a time.

    The lock is on the directory's own descriptor, so nothing is created in it. Not re-entrant:
    a process holding it must not take it again through another call.
    """
    if fcntl is None:
        yield
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:  # a filesystem without locks (some network mounts): commits stay atomic
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            logger.debug(
                "%s: no advisory lock on this filesystem (%s); concurrent saves are not serialized", directory, err
            )
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def write_journal(directory: Path, commit_id: str, renames: list[tuple[Path, str]], remove: Iterable[str]) -> Path:
    """Write the commit record for ``renames`` (temp file -> final name) and ``remove``; the commit point.

    The temporary files must be complete and fsynced. Once this returns, the commit happens even
    if the process dies: the next :func:`recover_interrupted_commit` (or :func:`apply_journal`) finishes it.

    Returns:
        The journal's path.
    """
    record = {
        "format": _JOURNAL_FORMAT,
        "id": commit_id,
        "renames": [[tmp.name, final] for tmp, final in renames],
        "remove": sorted(remove),
    }
    _validate_journal(directory / JOURNAL_NAME, record)
    journal = directory / JOURNAL_NAME
    atomic_write_text(journal, json.dumps(record, indent=1) + "\n")
    fsync_directory(directory)  # the record's rename is durable before any file is touched
    return journal


def apply_journal(directory: Path) -> bool:
    """Finish the commit recorded in ``directory``'s journal (idempotent); the caller holds :func:`directory_lock`.

    Returns:
        Whether there was a journal to apply.

    Raises:
        CheckpointError: the journal is malformed, or names a file that is neither renamed nor waiting.
        OSError: a rename or removal failed (the journal stays, the next attempt resumes).
    """
    journal = directory / JOURNAL_NAME
    if not os.path.lexists(journal):
        return False
    record = _read_journal(journal)
    for tmp_name, final in record["renames"]:
        tmp, target = directory / tmp_name, directory / final
        if os.path.lexists(tmp):
            os.replace(tmp, target)
        elif not os.path.lexists(target):
            raise CheckpointError(
                f"{journal}: the interrupted save it records lost both {tmp_name!r} and {final!r}; the checkpoint "
                f"in {directory} is incomplete. Save the model again (or restore the directory from a copy)."
            )
    for name in record["remove"]:
        (directory / name).unlink(missing_ok=True)
    fsync_directory(directory)
    journal.unlink()
    fsync_directory(directory)
    logger.debug("%s: commit %s applied", directory, record["id"])
    return True


def recover_interrupted_commit(directory: str | os.PathLike) -> bool:
    """Finish a commit that a killed process left in ``directory`` (see the module docstring).

    Cheap when there is nothing to do (one ``lstat``). Readers call it before reading; writers
    call :func:`finish_commit` under their own lock.

    Args:
        directory: a directory that may hold a :data:`JOURNAL_NAME` record.

    Returns:
        Whether an interrupted commit was finished.

    Raises:
        CheckpointError: naming the journal, when it cannot be applied here (read-only directory,
            malformed record); the message says what to do.
    """
    directory = Path(directory)
    if not os.path.lexists(directory / JOURNAL_NAME):
        return False
    with directory_lock(directory):
        return finish_commit(directory)


def finish_commit(directory: Path) -> bool:
    """:func:`apply_journal` for a caller that holds :func:`directory_lock`, with errors that say what to do.

    Returns:
        Whether an interrupted commit was finished.

    Raises:
        CheckpointError: naming the journal, when it cannot be applied (read-only directory, malformed record).
    """
    journal = directory / JOURNAL_NAME
    try:
        applied = apply_journal(directory)
    except OSError as err:
        reason = "the directory is not writable here" if err.errno in _READ_ONLY_ERRNOS else "finishing it failed"
        raise CheckpointError(
            f"{journal}: a save into {directory} was interrupted after its commit point; this record lists the "
            f"renames left to finish it, but {reason} ({err}). Until it is finished the directory mixes two "
            "saves: open the checkpoint once from an account that can write there (any from_pretrained or "
            "save_pretrained finishes the save), or call "
            f"modelcore.serialization.atomic.recover_interrupted_commit({str(directory)!r})."
        ) from err
    if applied:
        logger.warning("%s: finished a save that was interrupted after its commit point", directory)
    return applied


def remove_leftover_temps(directory: Path, targets: Callable[[str], bool]) -> list[str]:
    """Remove temporary files of atomic writes into ``directory`` whose target passes ``targets``.

    Call it only under :func:`directory_lock` and after :func:`apply_journal`: a temp file named
    by a journal is needed to finish that commit.

    Returns:
        The names removed.
    """
    removed = []
    for entry in os.scandir(directory):
        if is_temp_name(entry.name, targets) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(entry.name)
    if removed:
        logger.info(
            "%s: removed %d temporary file(s) left by an interrupted save: %s", directory, len(removed), removed
        )
    return removed


def _read_journal(journal: Path) -> dict:
    try:
        record = json.loads(journal.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{journal}: not a readable commit record ({err}); {_FOREIGN_JOURNAL}") from err
    _validate_journal(journal, record)
    return record


_FOREIGN_JOURNAL = (
    "modelcore writes this file only while committing a save. If no save was interrupted here, remove it; "
    "otherwise restore the directory from a copy"
)


def _validate_journal(journal: Path, record: object) -> None:
    """Refuse a record that is not ours or that would touch anything but plain names in its own directory."""

    def plain(name: object) -> bool:
        if not isinstance(name, str) or name in ("", ".", "..") or name == JOURNAL_NAME:
            return False
        if "/" in name or "\\" in name or "\0" in name:
            return False
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True

    ok = (
        isinstance(record, dict)
        and record.get("format") == _JOURNAL_FORMAT
        and isinstance(record.get("id"), str)
        and isinstance(record.get("renames"), list)
        and isinstance(record.get("remove"), list)
        and all(
            isinstance(pair, list)
            and len(pair) == 2
            and plain(pair[0])
            and is_temp_name(pair[0])
            and plain(pair[1])
            and not is_temp_name(pair[1])
            for pair in record["renames"]
        )
        and all(plain(name) and not is_temp_name(name) for name in record["remove"])
    )
    if not ok:
        raise CheckpointError(f"{journal}: not a valid commit record; {_FOREIGN_JOURNAL}")
