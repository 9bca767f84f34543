"""Embedded runs (no Prefect server configured): Prefect's temporary server must not outlive the run.

:func:`guard_temporary_server` makes every temporary server that Prefect starts from this process run
under :mod:`tasks.server_guard`, which stops it when this process dies, however it dies. Prefect
starts that server in ``prefect.server.api.server.SubprocessASGIServer`` with ``subprocess.Popen``
of ``python -m uvicorn``; the guard swaps that module's ``subprocess`` for a view of the real one
whose ``Popen`` prefixes such a command with the guard. Nothing else in Prefect is touched, and a
Prefect version that starts its server another way is left as it is (with a warning).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

_UVICORN = ["-m", "uvicorn"]


def guarded_command(args: Sequence[str], parent_pid: int | None = None) -> list[str]:
    """``python -m uvicorn ...`` -> ``python -m tasks.server_guard PID uvicorn ...``; other commands unchanged."""
    args = list(args)
    if len(args) >= 3 and args[1:3] == _UVICORN:
        pid = os.getpid() if parent_pid is None else parent_pid
        return [args[0], "-m", "tasks.server_guard", str(pid), "uvicorn", *args[3:]]
    return args


class _GuardedPopen(subprocess.Popen):
    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        if isinstance(args, (list, tuple)):
            args = guarded_command(args)
        super().__init__(args, *rest, **kwargs)


class _GuardedSubprocess:
    """The ``subprocess`` module, except that ``Popen`` starts uvicorn under the guard."""

    Popen = _GuardedPopen

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


def guard_temporary_server() -> bool:
    """Make Prefect's temporary servers die with this process; returns whether the guard is in place."""
    try:
        from prefect.server.api import server as prefect_server
    except ImportError:  # a Prefect without the embedded server: nothing to guard
        return False
    if isinstance(getattr(prefect_server, "subprocess", None), _GuardedSubprocess):
        return True
    if (
        not hasattr(prefect_server, "SubprocessASGIServer")
        or getattr(prefect_server, "subprocess", None) is not subprocess
    ):
        logger.warning("this Prefect starts its temporary server differently; it may outlive a killed run")
        return False
    prefect_server.subprocess = _GuardedSubprocess()
    logger.debug("Prefect's temporary server will run under tasks.server_guard (parent %d)", os.getpid())
    return True


__all__ = ["guard_temporary_server", "guarded_command"]
