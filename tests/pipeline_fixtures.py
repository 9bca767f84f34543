"""Fixtures shared by the pipeline tests (tasks/ and flows/): a pipeline home, real data, a tiny checkpoint."""

from __future__ import annotations

import csv
import os

import pytest


@pytest.fixture
def pipeline_home(tmp_path, monkeypatch):
    """A fresh pipeline home with the embedded MLflow store; no tracking server from the environment."""
    home = tmp_path / "home"
    monkeypatch.setenv("MODELCORE_PIPELINE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture(scope="session")
def real_csv(tmp_path_factory, rotten_tomatoes):
    """400 real Rotten Tomatoes snippets as a CSV with string labels (columns ``review``, ``sentiment``)."""
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    names = ("rotten", "fresh")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        for row in rotten_tomatoes[:400]:
            writer.writerow([row["text"], names[row["label"]]])
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, minilm_dir):
    """A tiny BERT classifier (1 layer, hidden 16, 2 labels) with the real MiniLM tokenizer: trains in a second."""
    import torch

    from modelcore import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    directory = tmp_path_factory.mktemp("tiny-bert")
    BertForSequenceClassification(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(directory)
    return directory


def registered_versions(tracking_uri: str, name: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    return client.search_model_versions(f"name='{name}'")


__all__ = ["pipeline_home", "real_csv", "tiny_checkpoint", "registered_versions", "os"]
