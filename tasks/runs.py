"""A flow run's working directory, keyed on what it computes, so that a crashed run is resumed.

``runs/<key>/`` under the pipeline home, where ``key`` hashes the run's parameters and its data
fingerprint: running the same command on the same data finds the directory again. The directory
holds ``run.json`` (the MLflow run id, the Prefect flow run id, a status) and ``.lock``, which the
run holds with ``flock`` for as long as its process lives, so the kernel releases it however the
process ends. When a run starts and finds

* ``status: running`` with the lock free: the process died (``kill -9``, OOM, power). The new run
  resumes from the newest training checkpoint and the dead run is marked failed (MLflow) and crashed
  (Prefect) by the flow;
* ``status: failed``: an error ended it; the new run resumes from its checkpoint the same way;
* ``status: finished``: a completed run; the directory is cleared and the new run starts afresh;
* the lock held: the same parameters are running right now in another process; this run takes a
  directory of its own (no sharing, no resume).

A finished run keeps its final model, evaluation and exports (returned in the flow's summary) and
drops its intermediate checkpoints (optimizer states: three times the weights), which only a
resume needs. Directories of runs that ended unfinished and were never resumed are removed after
``MODELCORE_RUN_RETENTION_DAYS`` (default 7) by :func:`prune`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from modelcore.serialization.atomic import atomic_write_text
from modelcore.trainer.checkpoint import latest_checkpoint, list_checkpoints
from tasks import settings

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
TRAIN_DIR = "train"
RETENTION_ENV = "MODELCORE_RUN_RETENTION_DAYS"
RUNNING, FAILED, FINISHED = "running", "failed", "finished"


def run_key(params: dict[str, Any], data_fingerprint: str) -> str:
    """16 hex digits over the parameters (as JSON, keys sorted) and the data fingerprint."""
    text = json.dumps(params, sort_keys=True, default=str) + "|" + data_fingerprint
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class PreviousAttempt:
    """What an unfinished earlier run with the same key left behind."""

    mlflow_run_id: str | None
    flow_run_id: str | None
    status: str  # RUNNING (its process died) or FAILED (an error ended it)
    checkpoint: str | None  # its newest complete training checkpoint, where the new run resumes

    @property
    def crashed(self) -> bool:
        return self.status == RUNNING


class RunWorkspace:
    """The claimed working directory of one flow run (see the module docstring). Call :meth:`release` at the end."""

    def __init__(self, directory: Path, key: str, lock: Any, previous: PreviousAttempt | None) -> None:
        self.directory = directory
        self.key = key
        self.previous = previous
        self._lock = lock

    @classmethod
    def claim(cls, key: str, root: Path | None = None) -> RunWorkspace:
        """Lock ``runs/<key>`` (or a fresh sibling when another live process holds it) and read what it holds."""
        root = root or settings.pipeline_home() / "runs"
        directory = root / key
        lock = _try_lock(directory)
        if lock is None:
            directory = root / f"{key}-{uuid.uuid4().hex[:8]}"
            logger.info("run %s is being run by another process right now; this run works in %s", key, directory)
            lock = _try_lock(directory)
            assert lock is not None  # a new directory nobody else knows
        record = _read_record(directory)
        previous = None
        status = record.get("status")
        if status in (RUNNING, FAILED):
            checkpoint = latest_checkpoint(directory / TRAIN_DIR)
            previous = PreviousAttempt(
                record.get("mlflow_run_id"), record.get("flow_run_id"), status, str(checkpoint) if checkpoint else None
            )
        elif status == FINISHED:
            logger.info("run %s finished before; starting afresh in %s", key, directory)
            _clear(directory)
        return cls(directory, key, lock, previous)

    def record(self, **fields: Any) -> None:
        """Merge ``fields`` into ``run.json`` (atomically)."""
        record = _read_record(self.directory) | fields | {"key": self.key, "updated": time.time()}
        atomic_write_text(self.directory / RUN_FILE, json.dumps(record, indent=2) + "\n")

    def finish(self) -> int:
        """Mark the run finished and drop its intermediate checkpoints; returns the bytes freed."""
        freed = 0
        for checkpoint in list_checkpoints(self.directory / TRAIN_DIR):
            freed += _size(checkpoint)
            shutil.rmtree(checkpoint, ignore_errors=True)
        self.record(status=FINISHED)
        if freed:
            logger.info("run finished: removed its training checkpoints (%.1f MB)", freed / 1e6)
        return freed

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None


def prune(root: Path | None = None, max_age_days: float | None = None) -> list[Path]:
    """Remove run directories that ended unfinished more than ``max_age_days`` ago and are not locked.

    Finished runs are kept (their checkpoints are already gone). Returns the directories removed.
    """
    root = root or settings.pipeline_home() / "runs"
    if max_age_days is None:
        max_age_days = float(os.environ.get(RETENTION_ENV, "7"))
    if not root.is_dir():
        return []
    cutoff = time.time() - max_age_days * 86400
    removed = []
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        record = _read_record(directory)
        if record.get("status") == FINISHED or record.get("updated", directory.stat().st_mtime) > cutoff:
            continue
        lock = _try_lock(directory)
        if lock is None:  # running right now
            continue
        with contextlib.closing(lock):
            logger.info("removing abandoned run directory %s (%.1f MB)", directory, _size(directory) / 1e6)
            shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed


def _try_lock(directory: Path) -> Any:
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the run's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _read_record(directory: Path) -> dict[str, Any]:
    path = directory / RUN_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        logger.warning("%s is unreadable (%s); treating the run directory as new", path, error)
        return {}
    return record if isinstance(record, dict) else {}


def _clear(directory: Path) -> None:
    for path in directory.iterdir():
        if path.name == LOCK_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def mark_flow_run_crashed(flow_run_id: str) -> bool:
    """Set the Prefect flow run of a killed process, still shown as Running, to Crashed; returns whether it was.

    Best effort: a flow run id that is not a Prefect id (a run outside Prefect) or an API error is logged and skipped.
    """
    from prefect import get_client
    from prefect.states import Crashed

    try:
        run_uuid = uuid.UUID(flow_run_id)
    except ValueError:
        return False
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_uuid).state
            if state is None or state.is_final():
                return False
            client.set_flow_run_state(run_uuid, Crashed(message="its process died; a later run resumed it"), force=True)
    except Exception as error:  # noqa: BLE001 - bookkeeping of a dead run must not stop the new one
        logger.warning("could not mark Prefect flow run %s crashed: %s", flow_run_id, error)
        return False
    logger.info("marked Prefect flow run %s Crashed: its process died while it was running", flow_run_id)
    return True
