"""pipeline(task, model=None): the task's default (the registry's champion, else a catalog asset), logged; unknown
tasks and tasks without a default say what to do."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from modelcore.pipelines import TASKS, pipeline

NAME = "rotten-tomatoes-sentiment"


@pytest.fixture(scope="module")
def registry(tmp_path_factory, minilm_dir):
    """A fresh SQLite MLflow registry whose ``rotten-tomatoes-sentiment@champion`` is a seeded MiniLM classifier."""
    from mlflow import MlflowClient

    from modelcore import AutoModelForSequenceClassification, AutoTokenizer
    from modelcore.integrations.mlflow_models import log_pyfunc, register_version

    root = tmp_path_factory.mktemp("registry")
    checkpoint = root / "checkpoint"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_dir, num_labels=2, id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1}
    )
    model.save_pretrained(checkpoint)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(checkpoint)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.create_experiment("pipelines", artifact_location=(root / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    log_pyfunc(run_id, checkpoint, tracking_uri=tracking_uri, input_example=["a film"])
    client.set_terminated(run_id)
    version = register_version(NAME, run_id, tracking_uri=tracking_uri)
    client.set_registered_model_alias(NAME, "champion", version.version)
    return tracking_uri, checkpoint


def test_sentiment_analysis_without_a_model_uses_the_registry_champion(registry, monkeypatch, caplog):
    tracking_uri, checkpoint = registry
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    with caplog.at_level(logging.INFO, logger="modelcore.pipelines.base"):
        classify = pipeline("sentiment-analysis")
    assert f"using the registry's champion models:/{NAME}@champion" in caplog.text
    assert classify.source == f"models:/{NAME}@champion"
    texts = ["a warm, funny and moving film", "a tedious mess"]
    got = classify(texts)
    want = pipeline("text-classification", model=checkpoint)(texts)
    assert [g["label"] for g in got] == [w["label"] for w in want] and {g["label"] for g in got} <= {"rotten", "fresh"}
    assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-6)


def test_without_a_champion_or_a_registry_the_error_says_what_to_pass(registry, monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError, match=r"MLFLOW_TRACKING_URI is not set.*Pass model="):
        pipeline("text-classification")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ValueError, match=rf"models:/{NAME}@champion is not in the registry .*Pass model="):
        pipeline("sentiment-analysis")
    with pytest.raises(ValueError, match=r"pipeline\('question-answering'\) has no default model.*Pass model="):
        pipeline("question-answering")


def test_feature_extraction_without_a_model_uses_minilm_and_logs_it(minilm_dir, caplog):
    with caplog.at_level(logging.INFO, logger="modelcore.pipelines.base"):
        embed = pipeline("feature-extraction")
    assert "using the catalog asset 'minilm-l6'" in caplog.text
    explicit = pipeline("feature-extraction", model=minilm_dir)
    np.testing.assert_array_equal(embed.embed(["a sentence"]), explicit.embed(["a sentence"]))


def test_an_unknown_task_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown pipeline task 'summarise'; known tasks: ") as err:
        pipeline("summarise")
    for task in ("feature-extraction", "fill-mask", "ner", "question-answering", "zero-shot-classification"):
        assert task in str(err.value) and (task == "ner" or task in TASKS)


def test_batch_size_given_to_pipeline_sets_the_forward_batches_unless_a_call_overrides_it(minilm_dir):
    embed = pipeline("feature-extraction", model=minilm_dir, batch_size=3)
    seen: list[int] = []
    handle = embed.model.register_forward_hook(
        lambda module, args, kwargs, out: seen.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    try:
        texts = (f"sentence number {i}" for i in range(7))  # a generator is fine
        batched = embed(texts)
        assert seen == [3, 3, 1]
        seen.clear()
        assert np.allclose(embed([f"sentence number {i}" for i in range(7)], batch_size=7), batched, atol=1e-5)
        assert seen == [7]
    finally:
        handle.remove()
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        pipeline("feature-extraction", model=minilm_dir, batch_size=0)
