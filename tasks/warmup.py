"""Overlap a flow's fixed start-up costs with Prefect's temporary server start.

An embedded run (``python -m flows.retrain``) starts Prefect's temporary server in a subprocess
and polls it until it answers: seconds during which the flow's process sits idle. The first
tasks then pay for importing torch, modelcore and mlflow and for creating a fresh MLflow SQLite
store. ``start`` does that work in a background thread while the server starts; ``wait`` (the
first thing a flow does) joins it, so no task runs beside it. Nothing here changes results:
imports and an idempotent store creation only. A failure is logged and left for the task
that needs the same thing to raise in its own words.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time

logger = logging.getLogger(__name__)

MODULES = ("torch", "mlflow", "datasets", "modelcore.trainer", "modelcore.pipelines")
_thread: threading.Thread | None = None


def _work(tracking_uri: str | None) -> None:
    start = time.perf_counter()
    try:
        for name in MODULES:
            importlib.import_module(name)
        if tracking_uri is not None and tracking_uri.startswith("sqlite:"):
            from mlflow import MlflowClient

            MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)  # creates the tables
    except Exception as error:  # noqa: BLE001 (the task that needs it reports it)
        logger.debug("warm-up stopped early: %s", error)
    logger.debug("warm-up took %.2f s", time.perf_counter() - start)


def start(tracking_uri: str | None = None) -> None:
    """Begin importing and creating the local MLflow store in the background (once per process)."""
    global _thread
    if _thread is None:
        _thread = threading.Thread(target=_work, args=(tracking_uri,), name="flow-warm-up", daemon=True)
        _thread.start()


def wait() -> None:
    """Join the warm-up, if one was started (a no-op for flows run by a worker or a test)."""
    if _thread is not None:
        _thread.join()
