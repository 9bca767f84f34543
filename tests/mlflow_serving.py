"""``mlflow models serve`` of a registered model as a real process on a free loopback port, for the serving tests."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served(model_uri: str, tracking_uri: str, root: Path, threads: int | None = None) -> Iterator[tuple[int, int]]:
    """Serve ``model_uri`` from ``tracking_uri``'s registry; yields (port, pid); the process group dies after.

    Raises:
        RuntimeError: the server did not answer /ping within ``START_TIMEOUT_S`` (its log's tail in the message).
    """
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)  # the server execs uvicorn from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": venv_bin + os.pathsep + os.environ["PATH"]}
    env["MODELCORE_CACHE"] = str(root / "cache")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    log_path = root / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(Path(venv_bin) / "mlflow"), "models", "serve", "-m", model_uri]
            + ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            start_new_session=True,  # its own process group: uvicorn and workers die with it
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while status(port, "GET", "/ping") != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve did not come up:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield port, process.pid
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def status(port: int, method: str, path: str) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        connection.request(method, path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def invoke(port: int, payload: dict, timeout: float = 120) -> tuple[int, dict]:
    """POST ``payload`` to /invocations; (HTTP status, parsed JSON answer)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body = json.dumps(payload).encode()
        connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()
