"""Registration and promotion: a new model version, alias ``challenger``, and a gated ``champion``.

Tags on each version: ``metric.<name>`` for its evaluation metrics, ``data_fingerprint``,
``git_sha``, and after a decision ``promotion`` (``promoted`` / ``kept <version>``) with its
reason. A champion change records ``previous_champion`` on the registered model, which is what
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

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclasses.dataclass(frozen=True)
class Registration:
    name: str
    version: str
    promoted: bool
    reason: str
    champion_version: str | None
    aliases: tuple[str, ...]


def decide(new: float, current: float | None, min_gain: float, greater_is_better: bool = True) -> tuple[bool, str]:
    """Whether a version scoring ``new`` replaces a champion scoring ``current``, and why.

    It must beat the champion by more than ``min_gain`` (0 means strictly better); a model with no
    champion becomes champion.
    """
    if current is None:
        return True, "no champion yet"
    gain = (new - current) if greater_is_better else (current - new)
    if gain > min_gain:
        return True, f"beats the champion by {gain:+.4f} (> min gain {min_gain})"
    return False, f"gain {gain:+.4f} over the champion is not above the min gain {min_gain}"


def champion_metric(name: str, metric: str, tracking_uri: str) -> tuple[str | None, float | None]:
    """(version, its ``metric.<metric>`` tag) of the current champion, (None, None) when there is none."""
    version = mlflow_models.alias_version(name, CHAMPION, tracking_uri)
    if version is None:
        return None, None
    value = version.tags.get(f"metric.{metric}")
    return version.version, (float(value) if value is not None else None)


@task(name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
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
) -> Registration:
    """Log ``checkpoint`` as a pyfunc model to ``run_id``, register it and set the aliases.

    Nothing is left half-registered: if anything fails after the version was created, the version
    is deleted again before the error propagates.
    """
    if promotion_metric not in metrics:
        raise KeyError(f"promotion metric {promotion_metric!r} is not among the evaluation metrics {sorted(metrics)}")
    mlflow_models.log_pyfunc(
        run_id, checkpoint, tracking_uri=tracking_uri, input_example=input_example, max_length=max_length
    )
    version_tags = {**tags, **{f"metric.{k}": f"{v:.6f}" for k, v in metrics.items()}}
    version = mlflow_models.register_version(name, run_id, tags=version_tags, tracking_uri=tracking_uri)
    client = mlflow_models.client(tracking_uri)
    try:
        _wait_ready(client, name, version.version)
        current_version, current = champion_metric(name, promotion_metric, tracking_uri)
        promoted, reason = decide(metrics[promotion_metric], current, min_gain, greater_is_better)
        client.set_registered_model_alias(name, CHALLENGER, version.version)
        if promoted:
            if current_version is not None:
                client.set_registered_model_tag(name, "previous_champion", current_version)
            client.set_registered_model_alias(name, CHAMPION, version.version)
        client.set_model_version_tag(name, version.version, "promotion", "promoted" if promoted else "not promoted")
        client.set_model_version_tag(name, version.version, "promotion_reason", reason)
    except BaseException:
        logger.error("registration of %s version %s failed; deleting the version", name, version.version)
        client.delete_model_version(name, version.version)
        raise
    champion = version.version if promoted else current_version
    aliases = tuple(a for a, v in ((CHALLENGER, version.version), (CHAMPION, champion)) if v == version.version)
    logger.info("%s version %s: %s (%s)", name, version.version, "champion" if promoted else "challenger", reason)
    return Registration(name, version.version, promoted, reason, champion, aliases)


def _wait_ready(client: Any, name: str, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get_model_version(name, version).status != "READY":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} version {version} not READY after {timeout:.0f} s")
        time.sleep(0.5)


@task(name="set_champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
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
