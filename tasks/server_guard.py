"""Run a Python module as a child that dies with its parent: ``python -m tasks.server_guard PID MODULE ARGS...``.

Prefect's temporary API server (embedded runs) is a ``python -m uvicorn`` child of the flow's
process. When that process is killed (``kill -9``, the OOM killer), nothing stops the server: it is
re-parented to init and lives on, holding ~230 MB and a port. Under this guard a watcher thread
notices the re-parenting within half a second, asks the server to stop (SIGTERM: uvicorn shuts down
cleanly) and exits hard after a grace period if it has not.

Polling ``getppid`` is used rather than ``PR_SET_PDEATHSIG``: that signal fires when the *thread*
that spawned the child ends, and Prefect may start its server from a short-lived thread.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time

POLL_SECONDS = 0.5
GRACE_SECONDS = 10.0


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_SECONDS)
    os._exit(1)


def main(argv: list[str]) -> None:
    """``argv``: the parent's pid, the module to run, then that module's arguments."""
    if len(argv) < 2:
        raise SystemExit("usage: python -m tasks.server_guard PARENT_PID MODULE [ARGS...]")
    parent, module, *rest = argv
    threading.Thread(target=_watch, args=(int(parent),), name="parent-watch", daemon=True).start()
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
