"""Registration and promotion: a new model version, alias ``challenger``, and a gated ``champion``.

Tags on each version: ``metric.<name>`` for its evaluation metrics, ``baseline.<name>`` for the
majority-class baseline's, ``data_fingerprint``, ``git_sha``, and after a decision ``promotion``
(``promoted`` / ``not promoted``) with ``promotion_reason`` (the numbers it was decided on). A new
champion must clear a floor (above the baseline, at least ``min_metric``) and beat the champion.
A champion change records ``previous_champion`` on the registered model, which is what
``promote(rollback=True)`` goes back to.
"""

from __future__ import annotations

import dataclasses
import logging
import time
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
        if model_description is not None:
            client.update_registered_model(name, description=model_description)
        client.set_registered_model_tag(name, "task", task_name)
        client.set_registered_model_tag(name, "promotion_metric", promotion_metric)
        _wait_ready(client, name, version.version)
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
            if current_version is not None:
                client.set_registered_model_tag(name, "previous_champion", current_version)
            client.set_registered_model_alias(name, CHAMPION, version.version)
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
        model = client.get_registered_model(name)
    except MlflowException as error:
        raise ValueError(f"registered model {name!r} does not exist") from error
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
    if current is not None and str(current) != str(version):
        client.set_registered_model_tag(name, "previous_champion", str(current))
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promotion", "promoted manually" if not rollback else "rolled back to")
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    logger.info("%s: champion %s -> %s (%s)", name, current, version, reason)
    return str(version)
