"""The retraining flow end to end, embedded (Prefect's temporary server, MLflow on SQLite), on real data.

A tiny BERT with the real MiniLM tokenizer stands in for the base model so a run takes seconds;
the data are 400 real Rotten Tomatoes snippets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline_fixtures import registered_versions

pytestmark = pytest.mark.slow

NAME = "flow-test"


def _params(checkpoint, csv_path, **overrides):
    from flows.params import RetrainParams

    values = {
        "base_model": str(checkpoint),
        "dataset": str(csv_path),
        "text_column": "review",
        "label_column": "sentiment",
        "max_length": 32,
        "registered_model_name": NAME,
        "training": {
            "max_steps": 100,  # 6 steps give the majority-class model, which is never champion
            "per_device_train_batch_size": 16,
            "logging_steps": 50,
            "save_steps": 50,
            "learning_rate": 5e-3,
        },
    }
    return RetrainParams.model_validate(values | overrides)


def test_two_runs_cache_tokens_gate_the_champion_and_a_fresh_process_reproduces_predictions(
    prefect_server, pipeline_home, tiny_checkpoint, real_csv
):
    from flows.retrain import retrain
    from tasks import settings

    first = retrain(_params(tiny_checkpoint, real_csv))
    assert first["tokenization_cache"] == "miss"
    assert (str(first["version"]), first["aliases"]) == ("1", ["challenger", "champion"])
    assert first["metrics"]["accuracy"] > first["metrics"]["baseline_accuracy"]  # the floor a champion must clear
    evaluation = Path(first["evaluation_dir"])
    for name in ("evaluation.json", "predictions.jsonl", "confusion_matrix.png", "loss_curve.png"):
        assert (evaluation / name).stat().st_size > 0, name
    report = json.loads((evaluation / "evaluation.json").read_text())
    assert report["examples"] == 80 and sum(map(sum, report["confusion_matrix"])) == 80
    assert report["accuracy"] == first["metrics"]["accuracy"]

    second = retrain(_params(tiny_checkpoint, real_csv))
    assert second["tokenization_cache"] == "hit"
    assert second["metrics"] == first["metrics"]  # same seed, same data: the same model
    assert (str(second["version"]), second["aliases"], str(second["champion_version"])) == ("2", ["challenger"], "1")
    assert "not above the min gain" in second["promotion"]

    uri = settings.tracking_uri()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(first["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["data_fingerprint"] == first["data_fingerprint"]
    assert len(run.data.tags["git_sha"]) in (7, 40) or run.data.tags["git_sha"] == "unknown"
    assert "version.torch" in run.data.tags
    _assert_mlflow_pages(client, run, first)
    # logging_steps 50 shrinks to 10 for a 100-step run: a curve of ten points
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(10, 101, 10))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"evaluation", "export"} <= artifacts
    shards = {a.path for a in client.list_artifacts(run.info.run_id, "export/safetensors")}
    assert "export/safetensors/config.json" in shards
    # the ONNX export travels with its external weights (the dynamo exporter's .onnx.data)
    onnx_files = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, "export/onnx")}
    assert {"model.onnx", "model.onnx.data", "report.json", "config.json"} <= onnx_files
    assert first["export_checks"]["onnx"]["max_abs_logit_diff"] < 1e-4
    assert first["export_checks"]["onnx_int8"]["passed"] is not None

    # a fresh process pulls the champion and gives the flow's evaluation probabilities, bitwise
    rows = [json.loads(line) for line in (evaluation / "predictions.jsonl").read_text().splitlines()]
    script = (
        "import json, sys, modelcore\n"
        f"pipe = modelcore.pipeline('text-classification', model='models:/{NAME}@champion')\n"
        "texts = json.load(sys.stdin)\n"
        "print(json.dumps(pipe.predict_proba(texts, batch_size=64, max_length=32).tolist()))\n"
        "print('mlflow' in sys.modules)\n"  # the registry lookup needs no mlflow import (seconds saved)
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([r["text"] for r in rows]),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    probs_line, mlflow_imported = out.stdout.strip().splitlines()[-2:]
    assert json.loads(probs_line) == [r["probs"] for r in rows]
    assert mlflow_imported == "False"

    # re-score the champion on the same held-out split: the flow's own numbers, tagged on the version
    from flows.evaluate_champion import EvaluateChampionParams, evaluate_champion
    from flows.promote import PromoteParams, promote

    rescored = evaluate_champion(
        EvaluateChampionParams(
            registered_model_name=NAME,
            dataset=str(real_csv),
            text_column="review",
            label_column="sentiment",
            max_length=32,
        )
    )
    assert rescored["version"] == "1" and rescored["metrics"] == first["metrics"]
    assert client.get_model_version(NAME, "1").tags["rescored.accuracy"] == f"{first['metrics']['accuracy']:.6f}"
    # promote by hand, then roll back, each with its reason
    assert promote(PromoteParams(registered_model_name=NAME, version="2", reason="A/B win"))["champion"] == "2"
    assert promote(PromoteParams(registered_model_name=NAME, rollback=True, reason="regression"))["champion"] == "1"
    assert client.get_model_version(NAME, "1").tags["promotion_reason"] == "regression"
    with pytest.raises(ValueError, match="either version or rollback"):
        PromoteParams(registered_model_name=NAME, reason="none given")


def _assert_mlflow_pages(client, run, summary):
    """What the MLflow UI shows of a run: a model-training experiment, the dataset, the logged model, grouped
    metrics, params once, reports naming the run's artifacts, descriptions on the registered model and version."""
    from mlflow.entities import LoggedModelStatus

    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not GenAI mode
    (dataset,) = run.inputs.dataset_inputs
    assert (dataset.dataset.name, dataset.dataset.digest) == (run.data.tags["dataset"], summary["data_fingerprint"])
    assert json.loads(dataset.dataset.profile)["test_rows"] == 80
    (output,) = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert (model.name, model.source_run_id, model.status) == ("model", run.info.run_id, LoggedModelStatus.READY)
    assert {a.path for a in client.list_logged_model_artifacts(model.model_id)} >= {"MLmodel", "artifacts"}
    assert {key.split("/", 1)[0] for key in run.data.metrics} == {"train", "eval", "export"}
    assert {"train/loss", "train/learning_rate", "eval/accuracy", "export/onnx/max_abs_logit_diff"} <= set(
        run.data.metrics
    )
    params = run.data.params
    assert params["learning_rate"] == "0.005" and not any(k.startswith("training.") for k in params)
    assert len(params) < 120
    # reports name the run's artifacts (model: the run's logged model), never the worker's files
    for path in ("evaluation/evaluation.json", "export/onnx/report.json"):
        text = Path(client.download_artifacts(run.info.run_id, path)).read_text()
        assert str(Path(summary["checkpoint"]).parents[2]) not in text, path
    onnx_report = json.loads(Path(client.download_artifacts(run.info.run_id, "export/onnx/report.json")).read_text())
    assert (onnx_report["output"], onnx_report["source"]) == ("export/onnx", "model")
    registered = client.get_registered_model(NAME)
    assert "text-classification model" in registered.description and registered.tags["task"] == "text-classification"
    version = client.get_model_version(NAME, str(summary["version"]))
    assert version.source == model.artifact_location
    for part in (summary["data_fingerprint"], "Held-out metrics: accuracy", "onnx kept", summary["promotion"]):
        assert part in version.description, part


def test_a_missing_column_fails_before_anything_is_registered(prefect_server, pipeline_home, tiny_checkpoint, real_csv):
    from flows.retrain import retrain
    from tasks import settings
    from tasks.data import DatasetError

    with pytest.raises(DatasetError, match="no column 'text'"):
        retrain(_params(tiny_checkpoint, real_csv, text_column="text"))
    assert registered_versions(settings.tracking_uri(), NAME) == []


def test_a_base_model_that_does_not_exist_fails_and_registers_nothing(
    prefect_server, pipeline_home, tmp_path, real_csv
):
    from flows.retrain import retrain
    from tasks import settings

    with pytest.raises(FileNotFoundError, match="no-such-model"):
        retrain(_params(tmp_path / "no-such-model", real_csv))
    assert registered_versions(settings.tracking_uri(), NAME) == []
    from mlflow import MlflowClient

    runs = MlflowClient(tracking_uri=settings.tracking_uri()).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri=settings.tracking_uri()).search_experiments()]
    )
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_tracking_server_that_is_down_fails_before_training(
    prefect_server, pipeline_home, tiny_checkpoint, real_csv, monkeypatch
):
    from flows.retrain import retrain
    from tasks.tracking import TrackingUnavailableError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(TrackingUnavailableError, match="127.0.0.1:9 is not reachable"):
        retrain(_params(tiny_checkpoint, real_csv))
    assert not list((pipeline_home / "runs").glob("*/train")) if (pipeline_home / "runs").exists() else True


def test_a_majority_class_run_is_not_champion_and_registration_can_be_off(
    prefect_server, pipeline_home, tiny_checkpoint, real_csv
):
    from flows.retrain import retrain
    from tasks import settings

    short = {"max_steps": 6, "per_device_train_batch_size": 16, "learning_rate": 1e-3, "save_steps": 3}
    useless = retrain(_params(tiny_checkpoint, real_csv, training=short, export_formats=["safetensors"]))
    metrics = useless["metrics"]
    assert (metrics["accuracy"], metrics["f1_macro"]) == (metrics["baseline_accuracy"], metrics["baseline_f1_macro"])
    assert (str(useless["version"]), useless["aliases"], useless["champion_version"]) == ("1", ["challenger"], None)
    assert "below the floor" in useless["promotion"] and "majority-class baseline 0.5625" in useless["promotion"]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri())
    run = client.get_run(useless["mlflow_run_id"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]
    assert {key.split("/", 1)[0] for key in run.data.metrics} == {"train", "eval", "export"}
    assert (Path(useless["evaluation_dir"]) / "loss_curve.png").stat().st_size > 0
    unregistered = retrain(
        _params(tiny_checkpoint, real_csv, training=short, export_formats=["safetensors"], register_model=False)
    )
    assert unregistered["registration"] == "skipped (register_model=False)" and "version" not in unregistered
    assert len(registered_versions(settings.tracking_uri(), NAME)) == 1
