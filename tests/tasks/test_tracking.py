"""The MLflow run's pages: experiment kind, dataset input, reports naming the run's artifacts (SQLite store)."""

from __future__ import annotations

import json

from tasks import settings
from tasks.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, log_dataset, relative_report_paths, start_run


def test_the_experiment_is_a_model_training_one_not_genai(pipeline_home):
    from mlflow import MlflowClient

    uri = settings.tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    run_id = start_run.fn(uri, "kind-test", "unit", {}, {})
    assert client.get_experiment_by_name("kind-test").tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    tags = client.get_run(run_id).data.tags  # the runs table's Source column
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"]) == ("flows/retrain.py", "JOB")
    # an experiment created before (no kind) gets it; one whose kind a person chose keeps it
    bare = client.create_experiment("older")
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "finetuning"})
    start_run.fn(uri, "older", "unit", {}, {})
    start_run.fn(uri, "chosen", "unit", {}, {})
    assert client.get_experiment(bare).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "finetuning"


def test_the_run_carries_its_dataset_with_the_data_fingerprint_as_digest(pipeline_home, real_csv):
    from mlflow import MlflowClient

    uri = settings.tracking_uri()
    run_id = start_run.fn(uri, "dataset-test", "unit", {}, {})
    log_dataset.fn(uri, run_id, "reviews", "cf1edfebdf8e141f", str(real_csv), profile={"train_rows": 320})
    log_dataset.fn(uri, run_id, "rotten-tomatoes", "0123456789abcdef", "rotten-tomatoes")
    inputs = MlflowClient(tracking_uri=uri).get_run(run_id).inputs.dataset_inputs
    by_name = {i.dataset.name: i for i in inputs}
    local, asset = by_name["reviews"], by_name["rotten-tomatoes"]
    assert local.dataset.digest == "cf1edfebdf8e141f"
    assert (local.dataset.source_type, json.loads(local.dataset.source)["uri"]) == ("local", str(real_csv.resolve()))
    assert json.loads(local.dataset.profile) == {"train_rows": 320}
    assert {t.key: t.value for t in local.tags} == {"mlflow.data.context": "training"}
    assert (asset.dataset.digest, asset.dataset.source_type) == ("0123456789abcdef", "code")


def test_reports_name_paths_in_the_run_artifacts_not_the_worker_files(tmp_path):
    work = tmp_path / "runs" / "k"
    onnx, int8, evaluation = work / "export" / "onnx", work / "export" / "onnx_int8", work / "evaluation"
    for directory in (onnx, int8, evaluation):
        directory.mkdir(parents=True)
    (int8 / "report.json").write_text(
        json.dumps(
            {
                "output": str(int8),
                "settings": {"eval_data": str(evaluation / "predictions.jsonl"), "quantized_from": str(onnx)},
                "source": str(work / "train" / "model"),
                "elsewhere": "/usr/share/dict",
                "size_ratio": 0.3,
            }
        )
    )
    (int8 / "tokenizer.json").write_text(json.dumps({"path": str(int8)}))  # not a report: left alone
    locations = {
        str(onnx): "export/onnx",
        str(int8): "export/onnx_int8",
        str(evaluation): "evaluation",
        str(work / "train" / "model"): "model",
    }
    assert relative_report_paths(int8, locations) == 4
    report = json.loads((int8 / "report.json").read_text())
    assert report == {
        "output": "export/onnx_int8",
        "settings": {"eval_data": "evaluation/predictions.jsonl", "quantized_from": "export/onnx"},
        "source": "model",
        "elsewhere": "/usr/share/dict",
        "size_ratio": 0.3,
    }
    assert json.loads((int8 / "tokenizer.json").read_text()) == {"path": str(int8)}
