"""The retraining flow killed during fine-tuning (SIGKILL, SIGTERM), then the same command again.

Real processes: ``python -m flows.retrain`` on 400 real Rotten Tomatoes snippets with a tiny BERT
(the real MiniLM tokenizer), embedded Prefect and MLflow on SQLite in a fresh pipeline home. The
first process is killed once a training checkpoint exists; the second, the same command, must
resume from that checkpoint and finish: one MLflow run FAILED and one FINISHED, one registered
version, and no process of the killed run left (Prefect's temporary server included).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.pipeline_fixtures import registered_versions

NAME = "kill-test"
MAX_STEPS = 400
SAVE_STEPS = 10
START_TIMEOUT = 240  # a busy 2-core machine: imports + Prefect's temporary server
RUN_TIMEOUT = 420


def _command(checkpoint: Path, csv_path: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "flows.retrain",
        "--json",
        *("--base-model", str(checkpoint), "--dataset", str(csv_path)),
        *("--text-column", "review", "--label-column", "sentiment", "--max-length", "32"),
        *("--max-steps", str(MAX_STEPS), "--save-steps", str(SAVE_STEPS), "--logging-steps", "10"),
        *("--per-device-train-batch-size", "8", "--learning-rate", "1e-3"),
        *("--export-formats", "safetensors", "--registered-model-name", NAME),
    ]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    return env | {"MODELCORE_PIPELINE_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def _checkpoints(home: Path) -> list[Path]:
    return sorted((home / "runs").glob("*/train/checkpoint-*"))


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return alive


def _processes_of(home: Path) -> list[psutil.Process]:
    """Live processes started for pipeline home ``home`` (they inherit its MODELCORE_PIPELINE_HOME)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("MODELCORE_PIPELINE_HOME") == str(home) and process.status() != "zombie":
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.mark.parametrize("kill_signal", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_killed_flow_resumes_from_its_checkpoint_and_leaves_nothing_behind(
    kill_signal, pipeline_home, tiny_checkpoint, real_csv, tmp_path
):
    command, env = _command(tiny_checkpoint, real_csv), _env(pipeline_home)
    log_path = tmp_path / "first.log"
    with open(log_path, "wb") as log:
        first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _checkpoints(pipeline_home):
            assert first.poll() is None, f"the first run ended before a checkpoint: {log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no checkpoint in {START_TIMEOUT} s: {log_path.read_text()[-3000:]}"
            time.sleep(0.05)
        family = [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]
        assert len(family) >= 2, "Prefect's temporary server should be a child of the run"
        first.send_signal(kill_signal)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    left = _wait_gone(family + _processes_of(pipeline_home), timeout=20)
    assert not left, f"processes of the killed run are still alive: {[p.cmdline() for p in left]}"
    killed_at = _checkpoints(pipeline_home)
    assert killed_at, "the killed run's checkpoint must survive"
    record = json.loads((killed_at[-1].parent.parent / "run.json").read_text())
    assert record["status"] == ("running" if kill_signal == signal.SIGKILL else "failed")

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    summary = json.loads(second.stdout[second.stdout.index("{") :])
    resumed = summary["resumed_from"]
    assert resumed["mlflow_run_id"] == record["mlflow_run_id"]
    resumed_step = int(Path(resumed["checkpoint"]).name.rsplit("-", 1)[1])
    assert resumed_step >= SAVE_STEPS and resumed_step % SAVE_STEPS == 0

    from mlflow import MlflowClient

    uri = f"sqlite:///{pipeline_home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("retrain")
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(r.info.status for r in runs.values()) == ["FAILED", "FINISHED"]
    assert runs[record["mlflow_run_id"]].info.status == "FAILED"
    assert runs[summary["mlflow_run_id"]].info.status == "FINISHED"
    assert runs[summary["mlflow_run_id"]].data.tags["resumed_from_run"] == record["mlflow_run_id"]
    # the resumed run trained the remaining steps only
    steps = [m.step for m in client.get_metric_history(summary["mlflow_run_id"], "train/loss")]
    assert steps and min(steps) > resumed_step and max(steps) == MAX_STEPS
    assert [str(v.version) for v in registered_versions(uri, NAME)] == [str(summary["version"])]

    workspace = Path(summary["checkpoint"]).parent.parent
    assert json.loads((workspace / "run.json").read_text())["status"] == "finished"
    assert not list((workspace / "train").glob("checkpoint-*")), "a finished run keeps no training checkpoints"
    left = _wait_gone(_processes_of(pipeline_home), timeout=20)
    assert not left, f"processes of the finished run are still alive: {[p.cmdline() for p in left]}"
    # our INFO lines reach the console: the run says where it resumed
    assert f"resuming training from {resumed['checkpoint']}" in second.stderr + second.stdout
