"""The warm-up that overlaps imports and MLflow store creation with Prefect's server start."""

from __future__ import annotations

import sqlite3
import sys

from tasks import warmup


def test_warm_up_creates_the_mlflow_store_and_wait_joins_it(tmp_path, monkeypatch):
    monkeypatch.setattr(warmup, "_thread", None)
    warmup.wait()  # nothing started: returns at once
    database = tmp_path / "mlflow.db"
    warmup.start(f"sqlite:///{database}")
    first = warmup._thread
    warmup.start(f"sqlite:///{database}")  # once per process
    assert warmup._thread is first
    warmup.wait()
    assert not first.is_alive()
    assert all(name in sys.modules for name in warmup.MODULES)
    tables = {row[0] for row in sqlite3.connect(database).execute("select name from sqlite_master where type='table'")}
    assert {"experiments", "runs", "registered_models", "model_versions"} <= tables


def test_a_failing_warm_up_is_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(warmup, "_thread", None)
    monkeypatch.setattr(warmup, "MODULES", ("no_such_module_here",))
    warmup.start(f"sqlite:///{tmp_path}/mlflow.db")
    warmup.wait()  # the ImportError stays in the thread; the task that needs the module reports it
    assert not (tmp_path / "mlflow.db").exists()
