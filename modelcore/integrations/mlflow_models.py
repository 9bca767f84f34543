"""modelcore checkpoints in MLflow: log as a pyfunc model, register versions, resolve ``models:/`` URIs.

Nothing here touches MLflow's process-wide state (active run, tracking URI): every call goes
through an explicit ``MlflowClient`` and run id, so a Prefect flow can call it from any task.

The logged model is an MLflow 3 ``LoggedModel`` of the run (named ``artifact_path``, listed as the run's output
model), whose artifacts are a pyfunc model from code (:mod:`.mlflow_pyfunc`) with ``artifacts/checkpoint/``
holding the Hugging Face layout (config.json, safetensors shards, tokenizer files). modelcore loads that
checkpoint directly; plain MLflow loads it through the pyfunc (``models:/<model_id>``, ``runs:/<run_id>/model``,
or a registered version).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

logger = logging.getLogger(__name__)

PYFUNC_CODE = Path(__file__).with_name("mlflow_pyfunc.py")
CHECKPOINT_ARTIFACT = "checkpoint"  # name of the checkpoint inside the pyfunc model's artifacts/
URI_PATTERN = re.compile(r"^(models|runs):/")


class RegistryError(RuntimeError):
    """A ``models:/`` or ``runs:/`` URI names nothing, or the registry refused a change."""


def is_mlflow_uri(source: Any) -> bool:
    return isinstance(source, str) and bool(URI_PATTERN.match(source))


def client(tracking_uri: str | None = None) -> Any:
    """An ``MlflowClient`` for ``tracking_uri`` (None: ``MLFLOW_TRACKING_URI`` or MLflow's default)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


# ---------------------------------------------------------------------------------------------- log
def save_pyfunc(
    checkpoint: str | Path,
    path: str | Path,
    task: str = "text-classification",
    input_example: Sequence[str] | None = None,
    batch_size: int = 64,
    max_length: int | None = None,
    mlflow_model: Any = None,
) -> Path:
    """Write an MLflow pyfunc model directory at ``path`` wrapping ``checkpoint``.

    What the model takes and returns is the task's (``modelcore.task_registry``): its output columns form the
    signature's output schema, its generation parameters the params schema; see :mod:`.mlflow_pyfunc`.

    Args:
        checkpoint: a checkpoint directory (config.json, safetensors, tokenizer files).
        path: the model directory to create (must not exist).
        task: the registered task the model serves (a name or alias: ``text-classification``, ``causal-lm``).
        input_example: a few texts stored as the input example (and used to check the model loads).
        batch_size, max_length: how the pyfunc batches and truncates.
        mlflow_model: the ``mlflow.models.Model`` card to write (a logged model's, with its id); None: a new one.

    Returns:
        ``path``.
    """
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from modelcore.configuration_utils import read_config_dict
    from modelcore.task_registry import get_task

    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: not a checkpoint directory (no config.json)")
    spec = get_task(task)
    if spec.pyfunc_predict is None:
        raise ValueError(f"task {spec.name!r} declares no MLflow pyfunc; it cannot be saved as one")
    columns = spec.function("pyfunc_outputs")(read_config_dict(checkpoint / "config.json"))
    params = (
        ParamSchema([ParamSpec(p.name, p.type, p.default) for p in spec.pyfunc_params]) if spec.pyfunc_params else None
    )
    # No input schema: with one, MLflow's JSON parser casts `inputs`/`instances` values to the schema's type
    # before the model sees them ([1, 2, 3] -> "1", "2", "3"; null -> "None") and they would be scored as text.
    # The pyfunc checks the values itself and refuses what is not a string (HTTP 400 naming field and row).
    signature = ModelSignature(
        inputs=None, outputs=Schema([ColSpec(kind, name) for kind, name in columns]), params=params
    )
    example = pd.DataFrame({spec.input_column: list(input_example)}) if input_example else None
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=str(PYFUNC_CODE),
        artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
        model_config={"task": spec.name, "batch_size": batch_size, "max_length": max_length},
        signature=signature,
        input_example=example,
        pip_requirements=_requirements(),
        mlflow_model=mlflow_model,
    )
    return Path(path)


def log_pyfunc(
    run_id: str,
    checkpoint: str | Path,
    artifact_path: str = "model",
    tracking_uri: str | None = None,
    tags: Mapping[str, Any] | None = None,
    step: int = 0,
    **save_kwargs: Any,
) -> str:
    """Save the pyfunc model of ``checkpoint`` as a ``LoggedModel`` named ``artifact_path``, output of run ``run_id``.

    What ``mlflow.pyfunc.log_model`` does, through an explicit client (no active run, no process-wide URI):
    ``create_logged_model`` in the run's experiment, ``log_outputs`` (the run lists the model), the pyfunc
    saved with the model's id in its MLmodel, ``log_model_artifacts``, then ``finalize_logged_model``: READY,
    or FAILED with its partial artifacts deleted when the upload fails.

    Args:
        tags: tags of the logged model.
        step: the training step the model comes from (the run output's step).
        save_kwargs: passed to :func:`save_pyfunc`.

    Returns:
        The model's ``models:/<model_id>`` URI.
    """
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    mlflow_client = client(tracking_uri)
    run = mlflow_client.get_run(run_id)
    model = mlflow_client.create_logged_model(
        run.info.experiment_id,
        name=artifact_path,
        source_run_id=run_id,
        tags={k: str(v) for k, v in (tags or {}).items()},
        model_type=save_kwargs.get("task", "text-classification"),
    )
    try:
        mlflow_client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=step)])
        with tempfile.TemporaryDirectory(prefix="modelcore-pyfunc-") as tmp:
            card = Model(artifact_path=model.artifact_location, run_id=run_id, model_id=model.model_id)
            local = save_pyfunc(checkpoint, Path(tmp) / "model", mlflow_model=card, **save_kwargs)
            mlflow_client.log_model_artifacts(model.model_id, str(local))
    except BaseException:
        _discard_model(mlflow_client, model)
        raise
    mlflow_client.finalize_logged_model(model.model_id, "READY")
    logger.info("logged model %s (%s) of run %s", model.model_id, artifact_path, run_id)
    return f"models:/{model.model_id}"


def _discard_model(mlflow_client: Any, model: Any) -> None:
    """Mark a logged model whose upload failed FAILED and delete what was uploaded; best effort."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        get_artifact_repository(model.artifact_location).delete_artifacts()
        mlflow_client.finalize_logged_model(model.model_id, "FAILED")
    except Exception as error:  # noqa: BLE001 - cleanup after a failure must not hide that failure
        logger.warning("could not clean up the failed logged model %s: %s", model.model_id, error)


def register_version(
    name: str,
    run_id: str,
    artifact_path: str = "model",
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    tracking_uri: str | None = None,
    model_uri: str | None = None,
) -> Any:
    """Register a model of run ``run_id`` as a new version of ``name``.

    Args:
        artifact_path: the name of the run's logged model (:func:`log_pyfunc`), or, for a model uploaded as plain
            run artifacts, its path there.
        model_uri: the ``models:/<model_id>`` of a logged model; None looks ``artifact_path`` up among the run's.

    Returns:
        The ``ModelVersion`` (its ``version`` is the new number).
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client(tracking_uri)
    try:
        mlflow_client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:  # created only when missing: an attempt per call would leave a unique-key ERROR in a PostgreSQL log
            mlflow_client.create_registered_model(name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":  # another process registering the same new model
                raise
    run = mlflow_client.get_run(run_id)
    if model_uri is not None:
        logged = mlflow_client.get_logged_model(model_uri.removeprefix("models:/"))
    else:
        logged = _logged_model_of_run(mlflow_client, run, artifact_path)
    # the logged model's artifact location itself as source: a models:/<id> source would be looked up with
    # MLflow's process-wide tracking URI, not this client's
    if logged is not None:
        source, model_id = logged.artifact_location, logged.model_id
    else:
        source, model_id = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}", None
    version = mlflow_client.create_model_version(
        name,
        source,
        run_id=run_id,
        tags={k: str(v) for k, v in (tags or {}).items()},
        description=description,
        model_id=model_id,
    )
    logger.info("registered %s version %s from run %s", name, version.version, run_id)
    return version


def alias_version(name: str, alias: str, tracking_uri: str | None = None) -> Any | None:
    """The ``ModelVersion`` that ``name@alias`` points at, or None when the alias (or model) is unset."""
    from mlflow.exceptions import MlflowException

    try:
        return client(tracking_uri).get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


# ---------------------------------------------------------------------------------------------- resolve
def resolve_uri(uri: str, tracking_uri: str | None = None) -> Path:
    """A local checkpoint directory for ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/ID/PATH``.

    A registered version is immutable, so its checkpoint is fetched once into
    ``$MODELCORE_CACHE/mlflow/`` (or used in place when the artifact store is a local directory);
    an alias is looked up on every call, since it moves.

    Raises:
        RegistryError: naming the URI when the model, version, alias or run does not exist.
    """
    fast = _fast_resolve(uri, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    if fast is not None:
        return fast
    from mlflow.exceptions import MlflowException

    mlflow_client = client(tracking_uri)
    parsed = urlparse(uri)
    parts = (
        [p for p in parsed.path.split("/") if p]
        if parsed.netloc == ""
        else [parsed.netloc] + [p for p in parsed.path.split("/") if p]
    )
    try:
        if parsed.scheme == "models":
            artifact_uri, key = _model_version_source(mlflow_client, uri, parts)
        else:
            if len(parts) < 1:
                raise RegistryError(f"{uri}: expected runs:/<run_id>/<path>")
            run = mlflow_client.get_run(parts[0])
            logged = _logged_model_of_run(mlflow_client, run, parts[1]) if len(parts) > 1 else None
            root = logged.artifact_location if logged is not None else run.info.artifact_uri
            artifact_uri = "/".join([root.rstrip("/"), *parts[1 + (logged is not None) :]])
            key = f"run-{parts[0]}-{'-'.join(parts[1:])}"
    except MlflowException as error:
        raise RegistryError(f"{uri}: {error.message}") from error
    return _local_checkpoint(artifact_uri, key, mlflow_client)


# ---------------------------------------------------------------------------------------------- fast path
# Importing mlflow costs seconds, as much as torch. A consumer that pulls ``models:/NAME@ALIAS`` from a
# SQLite store or a tracking server, whose version is local or already cached, needs two lookups: done
# here with sqlite3 (read-only) or MLflow's REST API, without importing mlflow. Anything unexpected
# (another schema, an error, a version that must be downloaded) returns None: the mlflow client path.
def _fast_resolve(uri: str, tracking_uri: str | None) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme != "models" or not tracking_uri:
        return None
    parts = [p for p in (parsed.netloc + parsed.path).split("/") if p]
    if len(parts) == 1 and "@" in parts[0]:
        name, alias = parts[0].split("@", 1)
        number = None
    elif len(parts) == 2 and parts[1].isdigit():
        (name, number), alias = parts, None
    else:
        return None
    try:
        if tracking_uri.startswith("sqlite:///"):
            found = _sqlite_version(tracking_uri.removeprefix("sqlite:///"), name, alias, number)
        elif tracking_uri.startswith(("http://", "https://")):
            found = _rest_version(tracking_uri, name, alias, number)
        else:
            return None
    except Exception as error:  # the fast path never decides an error: the full path reports it
        logger.debug("fast models:/ lookup failed (%s); using the mlflow client", error)
        return None
    if found is None:
        return None
    version, artifact_uri = found
    local = _local_path(artifact_uri)
    if local is not None and local.is_dir():
        return _checkpoint_in(local)
    from modelcore.assets import cache_dir

    store = hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]
    cached = cache_dir() / "mlflow" / store / _version_key(name, version, artifact_uri)
    return _checkpoint_in(cached) if cached.is_dir() else None


def _sqlite_version(db: str, name: str, alias: str | None, number: str | None) -> tuple[str, str] | None:
    import sqlite3

    path = Path(unquote(db))
    if not path.is_file():
        return None
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        if alias is not None:
            rows = connection.execute(
                "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?", (name, alias)
            ).fetchall()
            if len(rows) != 1:
                return None
            number = str(rows[0][0])
        rows = connection.execute(
            "SELECT COALESCE(storage_location, source), status FROM model_versions WHERE name = ? AND version = ?",
            (name, int(number)),
        ).fetchall()
    finally:
        connection.close()
    if len(rows) != 1 or rows[0][1] != "READY" or not rows[0][0]:
        return None
    return number, rows[0][0]


def _rest_version(tracking_uri: str, name: str, alias: str | None, number: str | None) -> tuple[str, str] | None:
    import json
    import urllib.parse
    import urllib.request

    def get(endpoint: str, **query: str) -> dict:
        url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    if alias is not None:
        number = str(get("registered-models/alias", name=name, alias=alias)["model_version"]["version"])
    artifact_uri = get("model-versions/get-download-uri", name=name, version=number)["artifact_uri"]
    return number, artifact_uri


def _logged_model_of_run(mlflow_client: Any, run: Any, name: str) -> Any | None:
    """The newest READY logged model named ``name`` among the run's outputs (MLflow 3), or None."""
    outputs = getattr(run, "outputs", None)
    models = [mlflow_client.get_logged_model(o.model_id) for o in getattr(outputs, "model_outputs", None) or []]
    ready = [m for m in models if m.name == name and str(m.status) == "READY"]
    return max(ready, key=lambda m: m.creation_timestamp, default=None)


def _model_version_source(mlflow_client: Any, uri: str, parts: list[str]) -> tuple[str, str]:
    if len(parts) == 1 and "@" in parts[0]:
        name, alias = parts[0].split("@", 1)
        version = alias_version(name, alias, mlflow_client.tracking_uri)
        if version is None:
            raise RegistryError(f"{uri}: model {name!r} has no alias {alias!r} (or no such registered model)")
    elif len(parts) == 2:
        name, number = parts
        version = mlflow_client.get_model_version(name, number)
    else:
        raise RegistryError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    artifact_uri = mlflow_client.get_model_version_download_uri(version.name, version.version)
    return artifact_uri, _version_key(version.name, version.version, artifact_uri)


def _version_key(name: str, version: Any, artifact_uri: str) -> str:
    """Cache key of a registered version: its artifact URI (which names the run) is part of it, so a
    wiped and re-created server that reuses a name and version number never gets the old files."""
    return f"{name}-v{version}-{hashlib.sha256(artifact_uri.encode()).hexdigest()[:10]}"


def _local_checkpoint(artifact_uri: str, key: str, mlflow_client: Any) -> Path:
    local = _local_path(artifact_uri)
    if local is not None:
        if not local.exists():
            raise RegistryError(f"{artifact_uri}: the model's artifacts are missing from the artifact store")
        return _checkpoint_in(local)
    from modelcore.assets import cache_dir

    store = hashlib.sha256(mlflow_client.tracking_uri.encode()).hexdigest()[:12]
    target = cache_dir() / "mlflow" / store / key
    if not target.exists():
        import mlflow

        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
        try:
            # a directory lands under its own name: staging/<basename of artifact_uri>/
            downloaded = mlflow.artifacts.download_artifacts(
                artifact_uri=artifact_uri, dst_path=str(staging), tracking_uri=mlflow_client.tracking_uri
            )
            os.replace(downloaded, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _checkpoint_in(target)


def _checkpoint_in(path: Path) -> Path:
    """The checkpoint inside a pyfunc model directory, or ``path`` itself when it is one."""
    if (path / "config.json").is_file():
        return path
    # MLflow copies an artifact under its own directory name: artifacts/<name>/config.json
    found = sorted(p.parent for p in path.glob("artifacts/*/config.json"))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise RegistryError(f"{path}: several checkpoints in the logged model: {[str(p) for p in found]}")
    raise RegistryError(f"{path}: no modelcore checkpoint (config.json) in the logged model")


def _local_path(artifact_uri: str) -> Path | None:
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(artifact_uri)
    return None


def _requirements() -> list[str]:
    """The serving environment: modelcore's own runtime dependencies at the installed versions."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "safetensors", "tokenizers", "numpy", "pandas", "mlflow", "modelcore"]
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins
