"""Re-score the current champion on given data (new labelled data, or the training split's held-out part).

    python -m flows.evaluate_champion --dataset new_reviews.csv --test-size 0.99

The scores go to a new MLflow run (tagged with the version and data fingerprint) and to the
version's tags as ``rescored.<metric>``, so a drop shows in the registry without retraining.
"""

from __future__ import annotations

from tasks import settings

settings.configure_environment()

from prefect import flow, get_run_logger  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

from tasks.data import load_dataset  # noqa: E402
from tasks.evaluation import evaluate  # noqa: E402
from tasks.tracking import check_tracking_server, end_run, log_to_run, start_run  # noqa: E402


class EvaluateChampionParams(BaseModel):
    """The champion to score and the data to score it on (the held-out split of ``dataset``)."""

    model_config = ConfigDict(extra="forbid")

    registered_model_name: str = Field("rotten-tomatoes-sentiment", min_length=1)
    alias: str = Field("champion", min_length=1)
    dataset: str = Field("rotten-tomatoes", min_length=1)
    text_column: str = "text"
    label_column: str = "label"
    test_size: float = Field(0.2, gt=0, lt=1)
    split_seed: int = Field(0, ge=0)
    max_length: int = Field(64, ge=8, le=8192)
    experiment_name: str = "evaluate-champion"


@flow(name="evaluate_champion")
def evaluate_champion(params: EvaluateChampionParams = EvaluateChampionParams()) -> dict:  # noqa: B008
    """Score ``models:/NAME@ALIAS`` on the held-out split; returns the metrics and the version scored."""
    from modelcore.integrations import mlflow_models

    tracking_uri = settings.tracking_uri()
    check_tracking_server(tracking_uri)
    version = mlflow_models.alias_version(params.registered_model_name, params.alias, tracking_uri)
    if version is None:
        raise ValueError(f"registered model {params.registered_model_name!r} has no alias {params.alias!r}")
    checkpoint = str(
        mlflow_models.resolve_uri(f"models:/{params.registered_model_name}/{version.version}", tracking_uri)
    )
    data = load_dataset(params.dataset, params.text_column, params.label_column, params.test_size, params.split_seed)
    run_id = start_run(
        tracking_uri,
        params.experiment_name,
        f"rescore-{params.registered_model_name}-v{version.version}",
        params.model_dump(),
        {"data_fingerprint": data.fingerprint, "model_version": str(version.version)},
    )
    try:
        work = settings.run_dir(str(flow_run.get_id() or f"rescore-{version.version}"))
        result = evaluate(checkpoint, data.path, list(data.labels), params.max_length, str(work / "evaluation"))
        log_to_run(tracking_uri, run_id, metrics=result.metrics, artifacts={"evaluation": result.report_dir})
        client = mlflow_models.client(tracking_uri)
        for key, value in result.metrics.items():
            client.set_model_version_tag(
                params.registered_model_name, version.version, f"rescored.{key}", f"{value:.6f}"
            )
    except BaseException:
        end_run(tracking_uri, run_id, status="FAILED")
        raise
    end_run(tracking_uri, run_id)
    get_run_logger().info(
        "%s v%s on %s: %s", params.registered_model_name, version.version, params.dataset, result.metrics
    )
    return {"version": str(version.version), "metrics": result.metrics, "mlflow_run_id": run_id}


if __name__ == "__main__":
    import json
    import sys

    from flows.cli import parse_params

    parsed, _ = parse_params(EvaluateChampionParams, sys.argv[1:], prog="python -m flows.evaluate_champion")
    print(json.dumps(evaluate_champion(parsed), indent=2))
