"""MLflow run lifecycle for a flow run: one MLflow run per flow run, created and ended explicitly.

Every call names its tracking URI and run id; nothing sets MLflow's process-wide active run or URI.
Retries wrap only these calls (I/O against the tracking server).
"""

from __future__ import annotations

import logging
import subprocess
import urllib.error
import urllib.request
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelcore.integrations.mlflow import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, prepare_params, sanitize_key
from tasks import settings
from tasks.outputs import retry_unless_disk_full

logger = logging.getLogger(__name__)

PACKAGES = ("modelcore", "torch", "tokenizers", "transformers", "accelerate", "mlflow", "prefect")
REPORT_FILES = ("report.json", "evaluation.json", "export_check.json")  # the JSON reports whose paths are rewritten


class TrackingUnavailableError(RuntimeError):
    """The MLflow tracking server cannot be reached; raised before any training starts."""


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast when an HTTP tracking server is down (a local SQLite or file store is always there).

    Raises:
        TrackingUnavailableError: naming the URI and the error.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status != 200:
                raise TrackingUnavailableError(f"MLflow tracking server {uri}: /health answered {response.status}")
    except (urllib.error.URLError, OSError) as error:
        raise TrackingUnavailableError(f"MLflow tracking server {uri} is not reachable: {error}") from error


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


@task(
    name="start_run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_disk_full
)
def start_run(
    tracking_uri: str,
    experiment_name: str,
    run_name: str,
    params: dict[str, Any],
    tags: dict[str, str],
    source: str = "flows/retrain.py",
) -> str:
    """Create the flow run's MLflow run (and its experiment, with an explicit artifact root) and log params.

    The experiment is marked a model-training one (``mlflow.experimentKind``: ``custom_model_development``) when it
    is created, and when an existing one carries no kind yet; a kind someone chose in the UI is left as it is.
    The run's Source column is ``source`` (a job) at the git commit, as MLflow's own ``start_run`` would tag it.

    Returns:
        The MLflow run id.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Param

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        experiment_id = client.create_experiment(
            experiment_name,
            artifact_location=settings.artifact_root(),
            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND},
        )
    else:
        experiment_id = experiment.experiment_id
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    import getpass

    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER

    sha = git_sha()
    source_tags = {MLFLOW_SOURCE_NAME: source, MLFLOW_SOURCE_TYPE: "JOB", MLFLOW_USER: getpass.getuser()}
    if sha != "unknown":
        source_tags[MLFLOW_GIT_COMMIT] = sha
    all_tags = {**source_tags, "git_sha": sha, **{f"version.{k}": v for k, v in package_versions().items()}, **tags}
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    entries = [Param(key, value) for key, value in prepare_params(params).items()]
    for start in range(0, len(entries), 100):
        client.log_batch(run.info.run_id, params=entries[start : start + 100])
    logger.info("MLflow run %s in experiment %s (%s)", run.info.run_id, experiment_name, tracking_uri)
    return run.info.run_id


@task(
    name="log_dataset",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_disk_full,
)
def log_dataset(
    tracking_uri: str,
    run_id: str,
    name: str,
    digest: str,
    source: str,
    profile: dict[str, Any] | None = None,
    context: str = "training",
) -> None:
    """Log the run's dataset as an MLflow dataset input (the run page's Dataset column and its details).

    Args:
        name: the dataset as the run names it (an asset name or a path).
        digest: the data fingerprint (what identifies these rows and this split).
        source: where the rows were read: a local path (source type ``local``) or an asset name (type ``code``).
        profile: figures shown with the dataset (rows per split, labels).
        context: the ``mlflow.data.context`` input tag.
    """
    import json

    from mlflow import MlflowClient
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    local = Path(source).expanduser()
    source_type, source_json = (
        ("local", {"uri": str(local.resolve())}) if local.exists() else ("code", {"tags": {"asset": source}})
    )
    dataset = Dataset(
        name=name,
        digest=digest,
        source_type=source_type,
        source=json.dumps(source_json),
        profile=json.dumps(profile) if profile else None,
    )
    MlflowClient(tracking_uri=tracking_uri).log_inputs(
        run_id, datasets=[DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])]
    )


def relative_report_paths(directory: str | Path, locations: dict[str, str]) -> int:
    """Rewrite the local paths in the JSON reports under ``directory`` as paths in the run's artifacts.

    Args:
        directory: a directory about to be uploaded (its ``report.json``, ``evaluation.json``, ``export_check.json``).
        locations: ``{local directory or file: its path in the run's artifacts}``; a string value inside one of them
            becomes the artifact path (``/work/runs/k/export/onnx`` -> ``export/onnx``), other values are kept.

    Returns:
        How many values were rewritten.
    """
    import json

    roots = sorted(((Path(local).resolve(), artifact) for local, artifact in locations.items()), reverse=True)
    rewritten = 0

    def relative(value: Any) -> Any:
        nonlocal rewritten
        if isinstance(value, dict):
            return {k: relative(v) for k, v in value.items()}
        if isinstance(value, list):
            return [relative(v) for v in value]
        if not isinstance(value, str) or not value.startswith("/"):
            return value
        path = Path(value).resolve()
        for root, artifact in roots:  # deepest first: export/onnx_int8 before export/
            if path == root or root in path.parents:
                rewritten += 1
                return "/".join(p for p in (artifact, *path.relative_to(root).parts) if p)
        return value

    base = Path(directory)
    files = [base] if base.is_file() else [p for p in base.rglob("*.json") if p.name in REPORT_FILES]
    for path in files:
        if path.name not in REPORT_FILES:
            continue
        report = json.loads(path.read_text(encoding="utf-8"))
        before = rewritten
        report = relative(report)
        if rewritten != before:
            from modelcore.serialization.atomic import atomic_write_text

            atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return rewritten


@task(
    name="log_to_run",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_disk_full,
)
def log_to_run(
    tracking_uri: str,
    run_id: str,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    artifacts: dict[str, str] | None = None,
    step: int = 0,
    artifact_names: dict[str, str] | None = None,
) -> None:
    """Log metrics, tags and artifacts (``{artifact dir: local file or dir}``) to ``run_id``.

    The JSON reports among the artifacts name the run's artifacts, not the worker's files: a path to any of
    ``artifacts`` (or to a key of ``artifact_names``, e.g. the checkpoint the logged model holds) is rewritten
    relative to the run's artifact root before the upload (:func:`relative_report_paths`).
    """
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    client = MlflowClient(tracking_uri=tracking_uri)
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(sanitize_key(k), float(v), now, step) for k, v in (metrics or {}).items()],
        tags=[RunTag(sanitize_key(k), str(v)) for k, v in (tags or {}).items()],
    )
    locations = {local: artifact_dir for artifact_dir, local in (artifacts or {}).items()} | (artifact_names or {})
    for artifact_dir, local in (artifacts or {}).items():
        relative_report_paths(local, locations)
        path = Path(local)
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_dir)
        else:
            client.log_artifact(run_id, str(path), artifact_dir or None)


@task(
    name="end_run", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=5, retry_condition_fn=retry_unless_disk_full
)
def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).set_terminated(run_id, status=status)


@task(
    name="replay_metrics",
    cache_policy=NO_CACHE,
    retries=5,
    retry_delay_seconds=10,
    retry_condition_fn=retry_unless_disk_full,
)
def replay_metrics(tracking_uri: str, pending_file: str) -> int:
    """Send the metrics the tracking server missed during training (it was down); retried while it restarts.

    Returns:
        How many metric records were sent.
    """
    from modelcore.integrations.mlflow import replay_pending

    sent = replay_pending(pending_file, tracking_uri)
    logger.info("sent %d metric records the tracking server missed during training", sent)
    return sent


@task(
    name="close_crashed_run",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_disk_full,
)
def close_crashed_run(tracking_uri: str, run_id: str, resumed_by: str) -> bool:
    """Mark MLflow run ``run_id``, whose process died while it was RUNNING, FAILED; returns whether it was.

    A run that an error ended was marked FAILED by its own flow already, and is left as it is.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        logger.warning("the crashed run's MLflow run %s cannot be read (%s); leaving it", run_id, error)
        return False
    if run.info.status != "RUNNING":
        return False
    client.set_tag(run_id, "crashed", "its process died during the run")
    client.set_tag(run_id, "resumed_by", resumed_by)
    client.set_terminated(run_id, status="FAILED")
    logger.info("marked MLflow run %s FAILED: its process died while it was running", run_id)
    return True


def discard_artifacts(tracking_uri: str, run_id: str, artifact_path: str) -> None:
    """Delete ``artifact_path`` of ``run_id`` from its artifact store (what a failed upload left); best effort."""
    from mlflow import MlflowClient
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        artifact_uri = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.artifact_uri
        get_artifact_repository(artifact_uri).delete_artifacts(artifact_path)
    except Exception as error:  # noqa: BLE001 - cleanup after a failure must not hide that failure
        logger.warning("could not delete the partial artifacts %r of run %s: %s", artifact_path, run_id, error)
        return
    logger.info("deleted the partial artifacts %r of MLflow run %s", artifact_path, run_id)
