"""The run page's summary: markdown and table artifacts of a finished run, and its readable last log line."""

from __future__ import annotations

import json

import pytest

from tasks.reporting import evaluation_tables, mlflow_links, publish, summary_line, summary_markdown


@pytest.fixture
def summary(tmp_path) -> dict:
    report = {"labels": ["rotten", "fresh"], "confusion_matrix": [[40, 10], [5, 45]]}
    (tmp_path / "evaluation.json").write_text(json.dumps(report))
    return {
        "task": "text-classification",
        "mlflow_run_id": "abc123",
        "tracking_uri": "sqlite:////x/mlflow.db",
        "data_fingerprint": "f00d",
        "metrics": {"accuracy": 0.85, "f1_macro": 0.8498, "baseline_accuracy": 0.5, "baseline_f1_macro": 0.3333},
        "evaluation_dir": str(tmp_path),
        "export_checks": {
            "safetensors": {"passed": True, "max_abs_logit_diff": 0.0, "shards": ("model.safetensors",)},
            "onnx_int8": {"passed": False, "metric_before": 0.85, "metric_after": 0.83, "speedup": 3.1},
        },
        "data": {"rows_read": 500, "dropped": {"empty text": 2}, "labels": ["rotten", "fresh"]},
        "registered_model": "sentiment",
        "version": 3,
        "aliases": ["challenger", "champion"],
        "champion_version": 3,
        "promotion": "accuracy 0.8500 beats the champion by +0.0100",
        "timings_s": {"load_dataset": 1.2, "fine_tune": 40.5},
    }


def test_the_markdown_summary_names_version_decision_metrics_exports_and_data(summary):
    text = summary_markdown(summary)
    assert "**sentiment** version 3, aliases `challenger`, `champion`: **promoted to champion**." in text
    assert "Reason: accuracy 0.8500 beats the champion by +0.0100. Champion now: version 3." in text
    assert "| accuracy | 0.8500 | 0.5000 |" in text and "| f1_macro | 0.8498 | 0.3333 |" in text
    assert "baseline_accuracy |" not in text  # a baseline is a column, not a row of its own
    assert "| onnx_int8 | no | metric_before 0.8500, metric_after 0.8300, speedup 3.1000 |" in text
    assert "500 rows read, dropped: 2 empty text" in text and "| fine_tune | 40.5 |" in text
    assert "mlflow ui --backend-store-uri sqlite:////x/mlflow.db" in text  # no server: the command that opens it
    linked = summary_markdown(summary, {"run": "http://h/#/r", "version": "http://h/#/v"})
    assert "[version 3](http://h/#/v)" in linked and "MLflow run: [`abc123`](http://h/#/r)" in linked


def test_the_last_line_reads_as_a_sentence(summary):
    assert summary_line(summary) == (
        "retrain finished: sentiment version 3: champion (accuracy 0.8500 beats the champion by +0.0100); "
        "accuracy 0.8500, f1_macro 0.8498; MLflow run abc123; 42 s"
    )
    summary["aliases"] = ["challenger"]
    assert ": not champion (" in summary_line(summary)


def test_a_classifier_gets_per_class_tables_from_its_confusion_matrix(summary):
    tables = evaluation_tables(summary)
    assert tables["metrics"][0] == {"metric": "accuracy", "model": 0.85, "baseline": 0.5}
    rotten, fresh = tables["per-class"]
    assert rotten == {
        "class": "rotten", "precision": round(40 / 45, 4), "recall": 0.8, "f1": round(2 * (40 / 45) * 0.8 / (40 / 45 + 0.8), 4),
        "support": 50, "predicted rotten": 40, "predicted fresh": 10,
    }  # fmt: skip
    assert fresh["recall"] == 0.9 and fresh["support"] == 50


def test_links_only_for_an_mlflow_server():
    assert mlflow_links("sqlite:////x/mlflow.db", "abc", "m", 1) == {}


def test_publish_puts_the_artifacts_on_the_flow_run(summary, caplog):
    import logging

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.testing.utilities import prefect_test_harness

    caplog.set_level("INFO", logger="tasks.reporting")
    logging.getLogger("tasks.reporting").addHandler(caplog.handler)  # Prefect's logging setup stops propagation

    @flow
    def finished():
        publish(summary)

    with prefect_test_harness(server_startup_timeout=120):
        try:
            finished()
        finally:
            logging.getLogger("tasks.reporting").removeHandler(caplog.handler)
        with get_client(sync_client=True) as client:
            keys = ArtifactFilterKey(any_=["retrain-summary", "evaluation-metrics", "evaluation-per-class"])
            artifacts = {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(key=keys))}
    assert set(artifacts) == {"retrain-summary", "evaluation-metrics", "evaluation-per-class"}
    assert (
        artifacts["retrain-summary"].type == "markdown" and "promoted to champion" in artifacts["retrain-summary"].data
    )
    assert artifacts["evaluation-per-class"].type == "table"
    assert summary_line(summary) in caplog.text


def test_training_across_nodes_and_its_restarts_are_in_the_summary(summary):
    assert "node(s)" not in summary_markdown(summary)  # one node, no restart: nothing to say
    summary["training"] = {"nodes": 2, "restarts": 1, "resumed_from_step": 4, "time_lost_s": 27.94}
    text = summary_markdown(summary)
    assert "Trained on 2 node(s); 1 restart(s), the last resuming at step 4; 27.9 s lost to restarts." in text
    summary["training"] = {"nodes": 1, "restarts": 1, "resumed_from_step": 8, "time_lost_s": 3.0}
    assert "Trained on 1 node(s); 1 restart(s)" in summary_markdown(summary)  # a restart on one node is news too
