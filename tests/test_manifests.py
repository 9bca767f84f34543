"""The Kubernetes manifests under infra/production/ are valid resources and describe what runs here.

Every document is checked against the Kubernetes API schema (``kubernetes-validate``, strict: an unknown
field is an error), and so is the Job that Prefect's Kubernetes worker renders from the base job template.
The versions, settings and commands they name are compared with what the local cluster mode runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # the test extra installs it
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ROOT / "infra" / "production"
KUBERNETES_VERSION = "1.33.0"  # the oldest minor version still supported upstream when this was written
MANIFESTS = sorted(p for p in PRODUCTION.glob("*.yaml") if p.name != "kustomization.yaml")
ALTERNATIVES = sorted((PRODUCTION / "alternatives").glob("*.yaml"))  # the other ways, not in the base


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@pytest.mark.parametrize("path", MANIFESTS + ALTERNATIVES, ids=lambda p: p.name)
def test_every_manifest_is_a_valid_kubernetes_resource(path):
    documents = _documents(path)
    assert documents, f"{path.name} holds no resource"
    for doc in documents:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {error.message} at {list(error.path)}")


def test_a_broken_manifest_is_refused():
    """The check can fail: a field in the wrong place (a Job's ``parallelism`` under the pod spec) is refused."""
    job = _documents(PRODUCTION / "train-multigpu-job.yaml")[1]
    job["spec"]["template"]["spec"]["parallelism"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_long_running_manifest():
    kustomization = yaml.safe_load((PRODUCTION / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    assert all((PRODUCTION / name).is_file() for name in listed), listed
    per_run_or_secret = {p.name for p in MANIFESTS if "job" in p.name or p.name.startswith("secrets")}
    assert listed == {p.name for p in MANIFESTS} - per_run_or_secret
    namespaces = {
        doc["metadata"].get("namespace") for p in MANIFESTS for doc in _documents(p) if doc["kind"] != "Namespace"
    }
    assert namespaces == {kustomization["namespace"]}


def _render(value: Any, variables: dict[str, Any]) -> Any:
    """Prefect's template rendering for the whole-value placeholders the base job template uses."""
    if isinstance(value, dict):
        return {k: _render(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, variables) for v in value]
    if isinstance(value, str) and (match := re.fullmatch(r"\{\{ (\w+) \}\}", value)):
        return variables[match.group(1)]
    return value


def test_the_kubernetes_work_pool_template_renders_a_valid_job():
    template = json.loads((PRODUCTION / "alternatives" / "k8s-base-job-template.json").read_text(encoding="utf-8"))
    properties = template["variables"]["properties"]
    variables = {name: spec.get("default") for name, spec in properties.items()}
    variables.update(
        name="retrain-abc",
        env={},
        labels={"prefect.io/flow-run-id": "abc"},
        command="prefect flow-run execute",
        job_watch_timeout_seconds=None,
        cluster_config=None,
    )
    job = _render(template["job_configuration"]["job_manifest"], variables)
    job["metadata"]["name"] = "retrain-abc-1"  # the API server's generateName
    job["spec"]["template"]["spec"]["containers"][0]["args"] = ["prefect", "flow-run", "execute"]  # split by Prefect
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def _resources(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in _documents(path)}


def _container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    spec = doc["spec"]["template"]["spec"]
    return next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_the_work_pool_is_the_one_cluster_mode_serves():
    """Pool name, type, limit, worker count and per-worker limit are cluster mode's defaults."""
    from infra.servers import Config

    config = Config(home=Path("/tmp/unused"), mode="cluster")
    manifest = _resources(PRODUCTION / "prefect-worker.yaml")
    pool = manifest["ConfigMap", "prefect-pool"]["data"]
    assert pool == {"POOL": config.work_pool, "POOL_LIMIT": str(config.pool_limit)}
    workers = manifest["Deployment", "prefect-worker"]
    assert workers["spec"]["replicas"] == config.workers
    command = " ".join(_container(workers, "worker")["args"])
    assert '--pool "$POOL" --type process' in command and f"--limit {config.worker_limit}" in command
    assert 'set-concurrency-limit "$POOL" "$POOL_LIMIT"' in " ".join(_container(workers, "pool")["args"])
    env = _env(_container(workers, "worker"))
    assert env["PREFECT_WORKER_QUERY_SECONDS"] == f"{config.worker_query_seconds:g}"
    assert env["MODELCORE_INFRA_MODE"] == "cluster"
    deployments = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text(encoding="utf-8"))
    pools = {d["work_pool"]["name"] for d in deployments["deployments"]}
    assert pools == {config.work_pool} or pools == {"{{ $MODELCORE_WORK_POOL }}"}, pools
    # the pool's limit is racy across workers; each deployment's own limit, the same number, is the hard bound
    assert {d["concurrency_limit"]["limit"] for d in deployments["deployments"]} == {int(pool["POOL_LIMIT"])}


def test_postgres_is_the_major_version_cluster_mode_runs():
    from infra import postgres

    try:
        major = postgres.bin_dir().parent.name  # /usr/lib/postgresql/<major>/bin
    except Exception as error:  # `make test` installs it (make postgres)
        pytest.fail(f"no local PostgreSQL to compare the manifest with (make postgres installs it): {error}")
    statefulset = _resources(PRODUCTION / "postgres.yaml")["StatefulSet", "postgres"]
    assert _container(statefulset, "postgres")["image"] == f"postgres:{major}"
    init = _resources(PRODUCTION / "postgres.yaml")["ConfigMap", "postgres-init"]["data"]["10-databases.sql"]
    assert sorted(re.findall(r"CREATE DATABASE (\w+);", init)) == sorted(postgres.DATABASES)
    secret = _resources(PRODUCTION / "secrets.example.yaml")["Secret", "modelcore-postgres"]["stringData"]
    assert secret["POSTGRES_USER"] == postgres.ROLE
    assert secret["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert secret["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")


def test_mlflow_and_prefect_servers_are_started_as_cluster_mode_starts_them(tmp_path, monkeypatch):
    from infra import servers

    monkeypatch.setattr(servers.postgres, "url", lambda *a, **k: "postgresql://u:p@h:1/db")
    config = servers.Config(home=tmp_path, mode="cluster")
    local, local_env, _ = servers._mlflow_command(config)
    mlflow = _resources(PRODUCTION / "mlflow.yaml")["Deployment", "mlflow"]
    args = " ".join(_container(mlflow, "mlflow")["args"])
    for flag in ("--serve-artifacts", "--artifacts-destination", "--default-artifact-root mlflow-artifacts:/"):
        assert flag in " ".join(local) and flag in args, flag
    assert "--backend-store-uri" not in " ".join(local)  # from the environment, as in the manifest
    env = _env(_container(mlflow, "mlflow"))
    assert set(local_env) <= set(env), set(local_env) - set(env)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == local_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]

    local, local_env, _ = servers._prefect_server_command(config)
    prefect = _resources(PRODUCTION / "prefect-server.yaml")["Deployment", "prefect-server"]
    container = _container(prefect, "prefect-server")
    assert container["command"][:3] == ["prefect", "server", "start"] == [Path(local[0]).name, *local[1:3]]
    assert (
        "PREFECT_API_DATABASE_CONNECTION_URL" in _env(container) and "PREFECT_API_DATABASE_CONNECTION_URL" in local_env
    )


def test_the_image_has_this_python_and_torch():
    import sys

    import torch

    dockerfile = (PRODUCTION / "Dockerfile").read_text(encoding="utf-8")
    assert f"FROM python:{sys.version_info.major}.{sys.version_info.minor}-" in dockerfile
    assert f"torch=={torch.__version__.split('+')[0]}" in dockerfile


def test_the_training_job_runs_the_command_tasks_distributed_runs_on_each_node():
    """Same torchrun flags (rendezvous, restarts, host, local address), script, spec path, environment."""
    import shlex

    from tasks import distributed

    manifest = _resources(PRODUCTION / "train-multigpu-job.yaml")
    job = manifest["Job", "modelcore-train-RUN_ID"]
    container = _container(job, "train")
    shell = " ".join(container["args"]).removeprefix("exec ")
    host_expr = '"is_host=$([ "$JOB_COMPLETION_INDEX" = 0 ] && echo 1 || echo 0)"'
    assert host_expr in shell
    words = shlex.split(shell.replace(host_expr, "is_host=1").replace('"$POD_IP"', "LOCAL"))
    nodes, per_node = job["spec"]["completions"], int(words[words.index("--nproc-per-node") + 1])
    endpoint = words[words.index("--rdzv-endpoint") + 1]
    expected = distributed.torchrun_command(
        nodes, per_node, endpoint, "RUN_ID", job["spec"]["backoffLimit"], "LOCAL", True
    )
    assert words[: len(expected)] == ["python", *expected[1:]]
    assert endpoint == f"modelcore-train-RUN_ID-0.modelcore-train-RUN_ID:{distributed.RDZV_PORT}"
    assert words[len(expected) :] == [
        str(distributed.SCRIPT.relative_to(ROOT)),
        "--spec",
        f"/pipeline/runs/RUN_ID/train/{distributed.SPEC_FILE}",
    ]
    assert job["spec"]["parallelism"] == nodes and job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"  # the platform stand-in's NodeJob
    assert _env(container)["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"
    service = manifest["Service", "modelcore-train-RUN_ID"]
    assert service["spec"]["ports"][0]["port"] == distributed.RDZV_PORT
