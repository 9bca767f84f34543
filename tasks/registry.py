"""Registration and promotion: a new model version, alias ``challenger``, and a gated ``champion``.

Tags on each version: ``metric.<name>`` for its evaluation metrics, ``baseline.<name>`` for the
majority-class baseline's, ``data_fingerprint``, ``git_sha``, and after a decision ``promotion``
(``promoted`` / ``not promoted``) with ``promotion_reason`` (the numbers it was decided on). A new
champion must clear a floor (above the baseline, at least ``min_metric``) and beat the champion.
A champion change records ``previous_champion`` on the registered model, which is what
``promote(rollback=True)`` goes back to, and on the new champion's version (the chain of champions).

Concurrent runs (several workers retraining the same model) cannot both win: reading the champion,
deciding and moving the alias happen under :func:`promotion_lock`, one holder per registered model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelcore.integrations import mlflow_models
from tasks.outputs import retry_unless_disk_full

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
BASELINE_PREFIX = "baseline_"  # evaluation metrics of the majority-class baseline: baseline_accuracy, ...


@dataclasses.dataclass(frozen=True)
class Registration:
    name: str
    version: str
    promoted: bool
    reason: str
    champion_version: str | None
    aliases: tuple[str, ...]


def decide(
    new: float,
    current: float | None,
    min_gain: float,
    greater_is_better: bool = True,
    *,
    baseline: float | None = None,
    baseline_name: str = "the majority-class baseline",
    min_metric: float | None = None,
    metric: str = "metric",
) -> tuple[bool, str]:
    """Whether a version scoring ``new`` becomes champion, and why (with the numbers).

    It must clear the floor first: strictly better than ``baseline`` (the majority-class
    baseline on the same held-out data) and at least ``min_metric`` (each when given). Then it
    must beat the champion scoring ``current`` by more than ``min_gain`` (0 means strictly
    better); with no champion, clearing the floor is enough.

    Args:
        new: the new version's ``metric``.
        current: the champion's, None when there is no champion (or it has no such metric).
        min_gain: the gain over the champion that must be exceeded.
        greater_is_better: the metric's direction (False for a loss or perplexity).
        baseline: the baseline's ``metric`` on the same data; None skips that check.
        baseline_name: what the baseline is, for the reason (``"the base model"`` for a causal LM).
        min_metric: an absolute floor; None skips that check.
        metric: the metric's name, for the reason.

    Returns:
        ``(promoted, reason)``.
    """

    def better(a: float, b: float) -> float:
        return (a - b) if greater_is_better else (b - a)

    floor = []
    if baseline is not None:
        side = "above" if greater_is_better else "below"
        if better(new, baseline) <= 0:
            return False, f"below the floor: {metric} {new:.4f} is not {side} {baseline_name} {baseline:.4f}"
        floor.append(f"{side} {baseline_name} {baseline:.4f}")
    if min_metric is not None:
        if better(new, min_metric) < 0:
            return False, f"below the floor: {metric} {new:.4f} does not reach min_metric {min_metric:.4f}"
        floor.append(f"reaches min_metric {min_metric:.4f}")
    cleared = f"{metric} {new:.4f}" + (f" ({', '.join(floor)})" if floor else "")
    if current is None:
        return True, f"{cleared}; no champion yet"
    gain = better(new, current)
    if gain > min_gain:
        return True, f"{cleared} beats the champion by {gain:+.4f} ({current:.4f} before; > min gain {min_gain})"
    return False, f"{cleared}: gain {gain:+.4f} over the champion's {current:.4f} is not above the min gain {min_gain}"


def champion_metric(name: str, metric: str, tracking_uri: str) -> tuple[str | None, float | None]:
    """(version, its ``metric.<metric>`` tag) of the current champion, (None, None) when there is none."""
    version = mlflow_models.alias_version(name, CHAMPION, tracking_uri)
    if version is None:
        return None, None
    value = version.tags.get(f"metric.{metric}")
    return version.version, (float(value) if value is not None else None)


LOCK_TIMEOUT_S = 600.0  # a promotion holds the lock for a second or two; waiting longer means a stuck holder
# Prefect's lock: the holder renews its lease every 45 s; a killed holder's slot is freed once the lease expires and
# the server's repossessor (every 15 s) sees it. 60 s is the shortest lease the server takes.
PREFECT_LOCK_LEASE_S = 60.0
_THREAD_LOCKS: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def promotion_lock(name: str, tracking_uri: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[str]:
    """Hold the lock that serializes champion moves of registered model ``name``; yields which lock it is.

    A lock only excludes writers that take it, so it lives where every writer of the registry meets:

    * ``sqlite:///...`` (the embedded store): ``flock`` on ``<database>.promotion.lock``. Every writer of a
      SQLite file is on this host, and the kernel drops the lock with its process (a killed run leaves nothing
      held).
    * ``postgresql://...``: a session advisory lock (``pg_advisory_lock``) in that database, on one connection
      that is closed afterwards; PostgreSQL drops it with the session.
    * ``http(s)://`` (a tracking server, cluster mode): the store behind the server is out of sight, so the lock
      is Prefect's global concurrency limit ``modelcore-registry-<name>`` (limit 1, created when missing) on the
      Prefect server of ``PREFECT_API_URL`` (or the profile), which every worker of the pool shares. A holder renews its lease;
      a crashed holder's slot is freed when the lease expires (``PREFECT_LOCK_LEASE_S``, 60 s, then up to 15 s).
    * a tracking server and no Prefect server: nothing is shared between processes; a warning says so and
      only threads of this process are serialized.

    Prefect's limit is not used for the local stores: in the embedded mode each process has its own temporary
    Prefect server (a plain-Python call outside a flow would start one, seconds each) whose limit sits in a
    Prefect database rather than beside the tracking store, while the store's own lock covers every writer.

    Raises:
        TimeoutError: the lock was not free within ``timeout`` seconds.
    """
    if tracking_uri.startswith("sqlite:///"):
        database = tracking_uri.removeprefix("sqlite:///").split("?")[0]
        with _file_lock(f"{database}.promotion.lock", timeout):
            yield "file"
    elif tracking_uri.startswith(("postgresql:", "postgresql+")):
        with _postgres_lock(tracking_uri, name, timeout):
            yield "postgres"
    elif _prefect_api_url():
        with _prefect_lock(name, timeout):
            yield "prefect"
    else:
        logger.warning(
            "%s: no lock shared between processes for the champion of a tracking server without a Prefect server "
            "(PREFECT_API_URL unset); concurrent promotions from other processes are not serialized",
            name,
        )
        with _THREAD_LOCKS.setdefault(name, threading.Lock()):
            yield "thread"


def _prefect_api_url() -> str | None:
    """The Prefect server of this process (``PREFECT_API_URL``, a profile, a test harness), None when embedded."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


@contextlib.contextmanager
def _file_lock(path: str, timeout: float) -> Iterator[None]:
    import fcntl

    deadline = time.monotonic() + timeout
    with open(path, "a") as handle:  # one open file per holder: flock excludes threads of one process too
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"promotion lock {path} still held after {timeout:.0f} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(f"modelcore-registry:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _postgres_lock(uri: str, name: str, timeout: float) -> Iterator[None]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"SET lock_timeout = {int(timeout * 1000)}"))
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _lock_key(name)})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _lock_key(name)})
    finally:
        engine.dispose()


def prefect_limit_name(name: str) -> str:
    """The Prefect global concurrency limit that guards ``name`` (Prefect's names refuse some characters)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:60]
    return f"modelcore-registry-{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


@contextlib.contextmanager
def _prefect_lock(name: str, timeout: float) -> Iterator[None]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    limit = prefect_limit_name(name)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(limit)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run created it a moment ago
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=1))
    # strict: a limit deleted in between is an error, never a silent pass without the lock
    with concurrency(limit, occupy=1, timeout_seconds=timeout, strict=True, lease_duration=PREFECT_LOCK_LEASE_S):
        yield


def _move_champion(client: Any, name: str, version: str, previous: str | None, chain: bool) -> None:
    """Point ``champion`` at ``version`` (under :func:`promotion_lock`) and check it by reading it back.

    ``chain`` records ``previous_champion`` on the version too: the champion it beat, for the history.
    """
    if previous is not None and str(previous) != str(version):
        client.set_registered_model_tag(name, "previous_champion", str(previous))
        if chain:
            client.set_model_version_tag(name, version, "previous_champion", str(previous))
    client.set_registered_model_alias(name, CHAMPION, version)
    now = client.get_model_version_by_alias(name, CHAMPION).version
    if str(now) != str(version):
        raise RuntimeError(
            f"{name}: champion is version {now} right after it was moved to {version}: a writer that does not take "
            "the promotion lock (tasks.registry.promotion_lock) moved it"
        )


@task(
    name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_disk_full
)
def register(
    tracking_uri: str,
    run_id: str,
    checkpoint: str,
    name: str,
    metrics: dict[str, float],
    promotion_metric: str,
    min_gain: float,
    tags: dict[str, str],
    input_example: list[str],
    max_length: int,
    greater_is_better: bool = True,
    min_metric: float | None = None,
    task_name: str = "text-classification",
    description: str | None = None,
    model_description: str | None = None,
    step: int = 0,
) -> Registration:
    """Log ``checkpoint`` as a pyfunc model to ``run_id``, register it and set the aliases.

    Every version gets ``challenger``; ``champion`` moves to it only past :func:`decide`: above
    the baseline ``metrics[f"baseline_{promotion_metric}"]`` when the evaluation reported one, at
    least ``min_metric`` when given, and better than the champion by more than ``min_gain``. A
    version below the floor is registered all the same (its metrics and reason stay on record, and
    a person can still promote it by hand) but never made champion. ``greater_is_better`` is the promotion
    metric's direction (False for perplexity: lower wins, and the baseline is a ceiling). ``task_name`` is the
    registered task the served model answers for. Tags: ``metric.<name>`` per
    metric, ``baseline.<name>`` per baseline metric, ``promotion`` and ``promotion_reason``.

    The model is logged as the run's ``LoggedModel`` (``mlflow_models.log_pyfunc``, at training step ``step``) and
    the version registered from it. ``description`` (what was trained, on which data, its metrics and export checks)
    goes on the version, followed by the promotion decision; ``model_description`` on the registered model, with
    the tags ``task`` and ``promotion_metric``.

    Nothing is left half-registered: if anything fails after the version was created, the version
    is deleted again before the error propagates.
    """
    if promotion_metric not in metrics:
        raise KeyError(f"promotion metric {promotion_metric!r} is not among the evaluation metrics {sorted(metrics)}")
    version_tags = {**tags, **_metric_tags(metrics)}
    model_uri = mlflow_models.log_pyfunc(
        run_id,
        checkpoint,
        tracking_uri=tracking_uri,
        tags=version_tags,
        step=step,
        input_example=input_example,
        max_length=max_length,
        task=task_name,
    )
    version = mlflow_models.register_version(
        name, run_id, tags=version_tags, description=description, tracking_uri=tracking_uri, model_uri=model_uri
    )
    client = mlflow_models.client(tracking_uri)
    try:
        _wait_ready(client, name, version.version)
        with promotion_lock(name, tracking_uri):  # read, decide and move as one step: one winner per moment
            # the registered model's own fields too: MLflow's SQL store writes a tag as read-then-insert, so two
            # runs setting one at once can hit its unique key
            if model_description is not None:
                client.update_registered_model(name, description=model_description)
            client.set_registered_model_tag(name, "task", task_name)
            client.set_registered_model_tag(name, "promotion_metric", promotion_metric)
            current_version, current = champion_metric(name, promotion_metric, tracking_uri)
            promoted, reason = decide(
                metrics[promotion_metric],
                current,
                min_gain,
                greater_is_better,
                baseline=metrics.get(BASELINE_PREFIX + promotion_metric),
                baseline_name=_baseline_name(task_name),
                min_metric=min_metric,
                metric=promotion_metric,
            )
            if current_version is not None:
                reason += f" (champion: version {current_version})"
            client.set_registered_model_alias(name, CHALLENGER, version.version)
            if promoted:
                _move_champion(client, name, version.version, current_version, chain=True)
        client.set_model_version_tag(name, version.version, "promotion", "promoted" if promoted else "not promoted")
        client.set_model_version_tag(name, version.version, "promotion_reason", reason)
        decision = f"{'Champion' if promoted else 'Challenger, not champion'}: {reason}."
        client.update_model_version(name, version.version, description="\n".join(filter(None, [description, decision])))
    except BaseException:
        logger.error("registration of %s version %s failed; deleting the version", name, version.version)
        client.delete_model_version(name, version.version)
        raise
    champion = version.version if promoted else current_version
    aliases = tuple(a for a, v in ((CHALLENGER, version.version), (CHAMPION, champion)) if v == version.version)
    logger.info(
        "%s version %s: %s: %s", name, version.version, "champion" if promoted else "challenger, not champion", reason
    )
    return Registration(name, version.version, promoted, reason, champion, aliases)


def _baseline_name(task_name: str) -> str:
    """What the task's baseline is: the majority class for a labelled task, else the base model itself."""
    from modelcore.task_registry import get_task

    return "the majority-class baseline" if get_task(task_name).label_column is not None else "the base model"


def _metric_tags(metrics: dict[str, float]) -> dict[str, str]:
    """``metric.<name>`` for the model's metrics, ``baseline.<name>`` for the ``baseline_<name>`` ones."""
    tags = {}
    for key, value in metrics.items():
        if key.startswith(BASELINE_PREFIX):
            tags[f"baseline.{key.removeprefix(BASELINE_PREFIX)}"] = f"{value:.6f}"
        else:
            tags[f"metric.{key}"] = f"{value:.6f}"
    return tags


def _wait_ready(client: Any, name: str, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get_model_version(name, version).status != "READY":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} version {version} not READY after {timeout:.0f} s")
        time.sleep(0.5)


@task(
    name="set_champion",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_disk_full,
)
def set_champion(tracking_uri: str, name: str, version: str | None, reason: str, rollback: bool = False) -> str:
    """Move ``champion`` of ``name`` to ``version``, or back to the previous champion when ``rollback``.

    Returns:
        The version that is champion now.

    Raises:
        ValueError: naming the model when there is nothing to roll back to, or the version does not exist.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_models.client(tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        raise ValueError(f"registered model {name!r} does not exist") from error
    with promotion_lock(name, tracking_uri):
        model = client.get_registered_model(name)  # read again under the lock
        current = model.aliases.get(CHAMPION)
        if rollback:
            version = model.tags.get("previous_champion")
            if version is None:
                raise ValueError(f"registered model {name!r} has no previous champion to roll back to")
        if version is None:
            raise ValueError("set_champion needs a version, or rollback=True")
        try:
            client.get_model_version(name, version)
        except MlflowException as error:
            raise ValueError(f"registered model {name!r} has no version {version}") from error
        _move_champion(client, name, str(version), None if current is None else str(current), chain=False)
    client.set_model_version_tag(name, version, "promotion", "promoted manually" if not rollback else "rolled back to")
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    logger.info("%s: champion %s -> %s (%s)", name, current, version, reason)
    return str(version)
