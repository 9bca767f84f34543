"""Cluster mode on this machine: PostgreSQL under both servers, N workers on one pool, concurrent retraining.

``infra/servers.py --mode cluster`` starts in a temporary home on free ports; the deployments are
registered from ``deployments/prefect.yaml`` unchanged by ``infra.servers deploy`` (``prefect deploy``, then
each deployment's concurrency limit set to the pool's, the bound Prefect takes atomically); six small runs (tiny BERT,
real Rotten Tomatoes reviews, a different seed each) are queued at once. Workers and the pool limit come
from ``MODELCORE_WORKERS`` (3) and ``MODELCORE_POOL_LIMIT`` (2), the runs from ``MODELCORE_E2E_RUNS`` (6):

    MODELCORE_WORKERS=4 MODELCORE_POOL_LIMIT=3 .venv/bin/python -m pytest -s -m cluster tests/e2e/test_cluster.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from infra import servers
from tasks.registry import CHAMPION, prefect_limit_name
from tests.e2e.test_servers import REPO, TERMINAL, _free_port, _small_params, leftover_processes

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

NAME = "cluster-sentiment"
RUNS = int(os.environ.get("MODELCORE_E2E_RUNS", "6"))
# what a service or worker log must never say: SQLite's busy error, PostgreSQL's deadlock and lock timeouts
LOCK_ERRORS = re.compile(
    r"database is locked|deadlock detected|lock timeout|could not obtain lock|LockNotAvailable", re.I
)
FIGURES: dict[str, Any] = {}  # printed at the end (run with -s), for infra/README.md's table


def _log(line: str) -> None:
    print(f"[cluster] {line}", flush=True)


def _time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at the same instant)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.fixture(scope="module")
def cluster():
    """The cluster-mode stack in a fresh home under the system temp directory.

    Not under pytest's tmp_path: as root the server runs as the ``postgres`` user, which cannot enter
    pytest's 0700 base directory.
    """
    import httpx

    home = Path(tempfile.mkdtemp(prefix="modelcore-cluster-"))
    config = servers.Config(
        home=home,
        mode="cluster",
        prefect_port=_free_port(),
        mlflow_port=_free_port(),
        pg_port=_free_port(),
        workers=int(os.environ.get("MODELCORE_WORKERS", "3")),
        pool_limit=int(os.environ.get("MODELCORE_POOL_LIMIT", "2")),
        worker_query_seconds=2.0,
        stop_timeout_s=30,
    )
    begin = time.monotonic()
    try:
        servers.start(config, log=_log)
        FIGURES["start (s)"] = round(time.monotonic() - begin, 1)
        with httpx.Client(base_url=config.prefect_api_url + "/", timeout=30) as api:
            yield config, api
    finally:
        servers.stop(config, log=_log)  # a no-op when the last test stopped everything already
        _log(f"figures: {json.dumps(FIGURES)}")
        shutil.rmtree(home, ignore_errors=True)


def test_the_servers_run_on_postgres_and_the_pool_has_its_limit(cluster):
    config, api = cluster
    pool = api.get(f"work_pools/{config.work_pool}").json()
    assert (pool["type"], pool["concurrency_limit"]) == ("process", config.pool_limit)
    workers = {
        w["name"]: w["status"] for w in api.post(f"work_pools/{config.work_pool}/workers/filter", json={}).json()
    }
    assert workers == {f"{config.worker_name}-{i}": "ONLINE" for i in range(1, config.workers + 1)}
    # both servers keep their state in PostgreSQL, not in a SQLite file
    pgpass = config.postgres_root / "pgpass"
    assert oct(pgpass.stat().st_mode & 0o777) == "0o600" and oct((config.postgres_root / "password").stat().st_mode & 0o777) == "0o600"  # fmt: skip
    psql = [str(servers.postgres.bin_dir() / "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(config.pg_port)]
    for database, table in (("prefect", "work_pool"), ("mlflow", "registered_models")):
        out = subprocess.run(
            [*psql, "-U", "modelcore", "-d", database, "-c", f"SELECT count(*) FROM {table}"],
            env={**os.environ, "PGPASSFILE": str(pgpass)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
    assert not list(config.home.rglob("*.db")), "a SQLite database in cluster mode"
    status = servers.status(config)
    assert list(status) == ["postgres", "mlflow", "prefect-server"] + [f"prefect-worker-{i}" for i in range(1, config.workers + 1)]  # fmt: skip
    assert all(entry["healthy"] for entry in status.values()), status


def test_concurrent_retraining_runs_all_complete_with_one_champion(cluster, tiny_checkpoint, real_csv):
    from mlflow import MlflowClient

    config, api = cluster
    # `prefect deploy --all` of deployments/prefect.yaml, then each deployment bounded by the pool's limit
    assert servers.deploy(config, log=_log) == {"nightly": config.pool_limit, "manual": config.pool_limit}
    manual = api.get("deployments/name/retrain/manual").json()
    # the bound the server takes atomically when a run moves to Pending (the pool's limit alone is racy)
    assert manual["global_concurrency_limit"]["limit"] == config.pool_limit, manual["global_concurrency_limit"]
    assert manual["concurrency_options"]["collision_strategy"] == "ENQUEUE"

    # queued at once: the pool, not the caller, decides how many run
    begin = time.time()
    ids = []
    for seed in range(RUNS):
        params = _small_params(tiny_checkpoint, real_csv, registered_model_name=NAME, experiment_name=NAME)
        params |= {"export_formats": ["safetensors"], "quantization": []}
        params["training"] |= {"max_steps": 100, "seed": seed, "save_steps": 1000}
        response = api.post(f"deployments/{manual['id']}/create_flow_run", json={"parameters": {"params": params}})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    deadline = time.monotonic() + 240 * RUNS / max(1, config.pool_limit)
    while True:
        runs = api.post("flow_runs/filter", json={"flow_runs": {"id": {"any_": ids}}}).json()
        if all(run["state_type"] in TERMINAL for run in runs):
            break
        assert time.monotonic() < deadline, [(r["name"], r["state_type"]) for r in runs]
        time.sleep(2.0)
    states = sorted(run["state_type"] for run in runs)
    FIGURES.update({"runs": RUNS, "workers": config.workers, "pool limit": config.pool_limit, "states": states})
    assert states == ["COMPLETED"] * RUNS, _failure_logs(api, runs)
    FIGURES["wall (s)"] = round(max(_time(run["end_time"]) for run in runs) - begin, 1)

    # the pool limit held: never more runs RUNNING at once than it allows (and more than one did run at once)
    intervals = [(_time(run["start_time"]), _time(run["end_time"])) for run in runs]
    FIGURES["most at once"] = peak = _max_overlap(intervals)
    FIGURES["run (s)"] = sorted(round(end - start, 1) for start, end in intervals)
    # runs the server sent back to wait at Pending (the deployment's slot was taken): each one a run the
    # pool's polling check alone would have let through
    history = {run_id: api.get("flow_run_states/", params={"flow_run_id": run_id}).json() for run_id in ids}
    FIGURES["slot waits"] = sum(e["name"] == "AwaitingConcurrencySlot" for run in history.values() for e in run)
    assert peak <= config.pool_limit
    assert peak >= min(2, config.pool_limit, config.workers), "the runs never overlapped"

    # every run recorded: one MLflow run per flow run, one version each
    client = MlflowClient(tracking_uri=config.mlflow_url)
    experiment = client.get_experiment_by_name(NAME)
    recorded = {r.data.tags.get("prefect_flow_run_id"): r for r in client.search_runs([experiment.experiment_id])}
    assert set(recorded) == set(ids) and all(r.info.status == "FINISHED" for r in recorded.values())
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in recorded.values())  # proxied
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{NAME}'")}
    assert len(versions) == RUNS and {v.run_id for v in versions.values()} == {r.info.run_id for r in recorded.values()}

    # exactly one champion, the best of the versions that cleared the floors, reached by a rising chain
    accuracy = {number: float(v.tags["metric.accuracy"]) for number, v in versions.items()}
    cleared = {n for n, v in versions.items() if not v.tags["promotion_reason"].startswith("below the floor")}
    champion = str(client.get_model_version_by_alias(NAME, CHAMPION).version)
    FIGURES["accuracy by version"] = dict(sorted(accuracy.items(), key=lambda item: int(item[0])))
    FIGURES["champion"] = f"version {champion}, accuracy {accuracy[champion]:.4f}"
    assert champion in cleared and accuracy[champion] == max(accuracy[n] for n in cleared)
    chain = [champion]
    while (previous := versions[chain[-1]].tags.get("previous_champion")) is not None:
        chain.append(previous)
    scores = [accuracy[n] for n in reversed(chain)]
    FIGURES["champion chain"] = list(reversed(chain))
    assert scores == sorted(scores) and len(set(scores)) == len(scores), list(zip(chain, scores, strict=True))
    assert {n for n, v in versions.items() if v.tags["promotion"] == "promoted"} == set(chain)
    # the promotions took Prefect's global concurrency limit of this model (the tracking store is a server)
    limit = api.get(f"v2/concurrency_limits/{prefect_limit_name(NAME)}").json()
    assert (limit["limit"], limit["active_slots"]) == (1, 0), limit
    # and every run gave its deployment slot back
    slots = api.get(f"v2/concurrency_limits/{manual['global_concurrency_limit']['id']}").json()
    assert (slots["limit"], slots["active_slots"]) == (config.pool_limit, 0), slots

    # no lock errors anywhere, and the database password in no log
    secret = (config.postgres_root / "password").read_text().strip()
    logs = {path.name: path.read_text(errors="replace") for path in config.state_dir.glob("*.log")}
    logs["flow runs"] = "\n".join(_flow_run_logs(api, ids))
    found = {name: LOCK_ERRORS.findall(text) for name, text in logs.items() if LOCK_ERRORS.search(text)}
    FIGURES["lock errors"] = found
    assert found == {}
    assert not [name for name, text in logs.items() if secret in text]
    # PostgreSQL's own ERROR lines (a unique-key race the client retries is not a failure): for the record
    FIGURES["postgres ERROR lines"] = re.findall(r"ERROR:  (.*)", logs.get("postgres.log", ""))[:10]
    # (a worker may try a run another worker or the pool limit took first: these are tries, not runs)
    FIGURES["submissions per worker"] = {
        name: len(re.findall(r"submitting flow run", text, re.I)) for name, text in logs.items() if "worker" in name
    }


def test_a_killed_holder_of_the_champion_lock_holds_it_no_longer_than_its_lease(cluster):
    """A run killed while it moves the alias (SIGKILL: no release) blocks the next promotion only until its lease
    expires, not for the 600 s a waiter would give up after."""
    from tasks.registry import PREFECT_LOCK_LEASE_S

    config, api = cluster
    env = {**os.environ, **servers.client_env(config)}
    take = "import sys, time\nfrom tasks import registry\nbegin = time.monotonic()\n"
    take += "with registry.promotion_lock(sys.argv[1], sys.argv[2], timeout=float(sys.argv[3])) as kind:\n"
    take += "    print(kind, round(time.monotonic() - begin, 1), flush=True)\n    time.sleep(float(sys.argv[4]))\n"
    holder = subprocess.Popen([sys.executable, "-c", take, "lease-test", config.mlflow_url, "60", "3600"], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().split()[0] == "prefect"  # it holds the lock
    finally:
        holder.kill()  # mid-promotion, as a node lost or an OOM kill would end it
        holder.wait(timeout=30)
    waiter = subprocess.run([sys.executable, "-c", take, "lease-test", config.mlflow_url, "600", "0"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert waiter.returncode == 0, waiter.stderr[-2000:]
    kind, waited = waiter.stdout.split()
    FIGURES["lock freed after a killed holder (s)"] = float(waited)
    # freed by the lease, not before it could expire, and well before a waiter gives up
    assert kind == "prefect" and 0.5 * PREFECT_LOCK_LEASE_S < float(waited) <= PREFECT_LOCK_LEASE_S + 60, waited
    limit = api.get(f"v2/concurrency_limits/{prefect_limit_name('lease-test')}").json()
    assert (limit["limit"], limit["active_slots"]) == (1, 0), limit


def _flow_run_logs(api: Any, ids: list[str]) -> list[str]:
    messages: list[str] = []
    while True:  # the API hands out 200 at a time
        body = {"logs": {"flow_run_id": {"any_": ids}}, "limit": 200, "offset": len(messages)}
        page = [record["message"] for record in api.post("logs/filter", json=body).json()]
        messages += page
        if len(page) < 200:
            return messages


def _failure_logs(api: Any, runs: list[dict[str, Any]]) -> str:
    lines = []
    for run in runs:
        if run["state_type"] == "COMPLETED":
            continue
        body = {"logs": {"flow_run_id": {"any_": [run["id"]]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
        lines += [f"--- {run['name']} {run['state_type']}"]
        lines += [r["message"] for r in api.post("logs/filter", json=body).json()][-40:]
    return "\n".join(lines)


def test_everything_stops_and_no_process_is_left(cluster):
    config, _ = cluster
    deadline = time.monotonic() + 120  # a flow-run process may still be exiting after its run COMPLETED
    workers = [servers._process(config, name) for name in servers.worker_services(config)]
    while any(w is not None and w.children(recursive=True) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    report = servers.stop(config, log=_log)
    FIGURES["stop (s)"] = {name: entry["seconds"] for name, entry in report.items()}
    assert set(report) == set(servers.services(config)) and all(e["state"] == "stopped" for e in report.values())
    assert not any(entry["healthy"] for entry in servers.status(config).values())
    ports = (config.prefect_port, config.mlflow_port, config.pg_port)
    assert not any(servers._port_taken("127.0.0.1", port) for port in ports)
    assert leftover_processes(config.home, {os.getpid()}) == []
    assert not list(config.state_dir.glob("*.pid"))
