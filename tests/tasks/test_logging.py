"""Our INFO lines reach the console and the Prefect flow run's logs, in a real embedded run.

Prefect's logging config sets the root logger to WARNING, and ``logging.basicConfig`` is a no-op once
Prefect's console handler is on the root, so before ``settings.configure_logging`` every ``tasks.*``
INFO line (the dataset counts among them) was dropped: on the console and in the Prefect UI alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FLOW = textwrap.dedent(
    """
    import asyncio, json, logging, sys

    from tasks import settings

    settings.configure_environment()  # as flows/retrain.py does, before Prefect is imported

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker
    from prefect.runtime import flow_run

    from tasks.data import load_dataset

    @flow(name="log-probe")
    def probe(path: str) -> str:
        logging.getLogger("flows.probe").info("probe flow says hello")
        load_dataset(path, "review", "sentiment")
        return str(flow_run.get_id())

    async def run_logs(flow_run_id):
        async with get_client() as client:
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        return [{"name": log.name, "level": log.level, "message": log.message} for log in logs]

    if __name__ == "__main__":
        # as flows/cli.py does after Prefect configured logging (a no-op then)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        flow_run_id = probe(sys.argv[1])
        APILogWorker.drain_all(timeout=60)  # the API handler sends in batches, from a thread
        print("LOGS " + json.dumps(asyncio.run(run_logs(flow_run_id))))
    """
)


@pytest.mark.slow
def test_dataset_counts_reach_the_console_and_the_prefect_run_logs(tmp_path, rotten_tomatoes):
    rows = ["review,sentiment"] + [f'"{r["text"]}",{("rotten", "fresh")[r["label"]]}' for r in rotten_tomatoes[:30]]
    data = tmp_path / "reviews.csv"
    data.write_text("\n".join(rows + [",fresh", '"a film",']) + "\n", encoding="utf-8")
    (tmp_path / "log_probe.py").write_text(FLOW, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= {"MODELCORE_PIPELINE_HOME": str(tmp_path / "home"), "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    done = subprocess.run(
        [sys.executable, "-m", "log_probe", str(data)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    console = done.stdout + done.stderr
    counts = f"dataset {data}: 32 rows read, 30 used"
    dropped = f"dataset {data}: dropped 2 of 32 rows: {{'empty text': 1, 'missing label': 1}}"
    for line in (counts, dropped, "probe flow says hello"):
        assert line in console, console[-3000:]
    logs = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("LOGS "))[5:])
    ours = {(log["name"], log["level"]) for log in logs if counts in log["message"] or dropped in log["message"]}
    assert ours == {("tasks.data", 20)}, logs  # INFO, from our logger, stored with the flow run
    assert any(log["name"] == "flows.probe" and log["message"] == "probe flow says hello" for log in logs), logs
    assert any("labels (train / test rows): fresh" in log["message"] for log in logs), logs
