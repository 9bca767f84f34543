"""Where the pipeline keeps its state on this machine, and how it reaches MLflow.

Everything lives under one home directory (``MODELCORE_PIPELINE_HOME``, default ``./.pipeline``):

* ``mlflow.db``: the embedded MLflow tracking + registry store (``sqlite:///``), used when
  ``MLFLOW_TRACKING_URI`` is not set;
* ``mlartifacts/``: its artifact root (set explicitly on the experiment: MLflow would otherwise
  put artifacts in ``./mlruns`` relative to whatever directory the process started in);
* ``cache/``: tokenized datasets, keyed on what determines them;
* ``runs/<flow run id>/``: a flow run's working files (checkpoints, exports, reports);
* ``prefect/``: ``PREFECT_HOME`` for embedded runs (kept between runs: a fresh home costs
  seconds at every start of Prefect's temporary server).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

HOME_ENV = "MODELCORE_PIPELINE_HOME"
OWN_LOGGERS = ("modelcore", "tasks", "flows")  # INFO from these reaches the console and the Prefect UI


def pipeline_home() -> Path:
    return Path(os.environ.get(HOME_ENV, ".pipeline")).expanduser().resolve()


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded SQLite store under the pipeline home."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    home = pipeline_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def artifact_root() -> str | None:
    """Artifact root for new experiments: local for a local store, the server's choice for a server."""
    if tracking_uri().startswith(("http://", "https://", "databricks")):
        return None
    root = pipeline_home() / "mlartifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root.as_uri()


def cache_dir() -> Path:
    path = pipeline_home() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir(flow_run_id: str) -> Path:
    path = pipeline_home() / "runs" / flow_run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def configure_environment() -> None:
    """Defaults for embedded runs, set before Prefect is imported; explicit settings win.

    * ``PREFECT_HOME`` under the pipeline home (see the module docstring);
    * MLflow HTTP retries and timeouts short enough that a tracking server that is down is
      reported in seconds, not after MLflow's default backoff of minutes.
    """
    if "PREFECT_HOME" not in os.environ:
        home = pipeline_home() / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", ",".join(OWN_LOGGERS))
    # our loggers also log outside a flow run (tests, warm-up); the API handler would warn at each line
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from an offline box
    # Prefect's temporary server has 20 s to start by default: too little on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    configure_logging()


def configure_logging() -> None:
    """Let our own INFO lines through, to the console and to the Prefect run's logs.

    Prefect's logging config sets the root logger to WARNING, and ``logging.basicConfig`` does
    nothing once the root has a handler (Prefect's console handler), so ``tasks.*``, ``flows.*``
    and ``modelcore.*`` loggers, which inherit the root's level, dropped every INFO line. Their own
    level is set here (``PREFECT_LOGGING_LEVEL``, default INFO), unless something set one already.
    Prefect attaches its API handler to them (``PREFECT_LOGGING_EXTRA_LOGGERS``), and they
    propagate to its console handler on the root.
    """
    level = os.environ.get("PREFECT_LOGGING_LEVEL", "INFO").upper()
    for name in OWN_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)
    runs = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, ReturnedFailureFilter) for f in runs.filters):
        runs.addFilter(ReturnedFailureFilter())


class ReturnedFailureFilter(logging.Filter):
    """Drops the engine's traceback of a flow that returned a Failed state.

    A flow that returns ``Failed(message=...)`` (the retrain flow, on parameters it refuses) has logged its one line
    naming the field; the flow-run process then logs "Engine execution exited with unexpected exception" with the
    traceback of ``prefect.exceptions.FailedRun``, raised by the engine itself, which says nothing more and reads as
    a crash. A flow that raised keeps its traceback: only ``FailedRun`` is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[0] if record.exc_info else None
        return not (error is not None and error.__name__ == "FailedRun" and record.getMessage().startswith("Engine"))
