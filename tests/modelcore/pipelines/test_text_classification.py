"""TextClassificationPipeline: one pipeline shared by threads, and inputs that are not text."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import torch

from modelcore import AutoTokenizer, BertConfig, BertForSequenceClassification
from modelcore.pipelines import TextClassificationPipeline, pipeline


@pytest.fixture(scope="module")
def pipe(minilm_dir):
    """A tiny BERT classifier (seeded) behind the real MiniLM tokenizer: fast, with real tokenization."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model = BertForSequenceClassification(config)
    return TextClassificationPipeline(model, AutoTokenizer.from_pretrained(minilm_dir))


@pytest.fixture(scope="module")
def snippets(rotten_tomatoes):
    return [row["text"] for row in rotten_tomatoes[:400:5]]


def test_one_pipeline_serves_8_threads_with_single_threaded_results(pipe, snippets):
    """8 threads x 60 calls with different texts, batch sizes and max_length on one pipeline.

    Before the tokenizer stopped configuring its shared backend per call, threads got each other's padding and
    truncation: ragged batches ("cannot make a rectangular tensor") and scores of truncated texts.
    """
    calls = [(snippets[i % 70 : i % 70 + 1 + i % 9], 1 + i % 4, (None, 12, 24)[i % 3]) for i in range(40)]
    expected = [pipe.predict_proba(texts, batch_size=size, max_length=length) for texts, size, length in calls]
    wrong, errors = [], []

    def work(thread: int) -> None:
        try:
            for n in range(60):
                k = (n * 7 + thread) % len(calls)
                texts, size, length = calls[k]
                got = pipe.predict_proba(texts, batch_size=size, max_length=length)
                if got.shape != expected[k].shape or not np.allclose(got, expected[k], atol=1e-6, rtol=0):
                    wrong.append(k)
        except BaseException as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads inside each call
    try:
        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(previous)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == [] and wrong == []


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["fine", None], r"texts\[1\] must be a str, got NoneType"),
        ([1, 2, 3], r"texts\[0\] must be a str, got int"),
        (["fine", ["nested"]], r"texts\[1\] must be a str, got list"),
    ],
)
def test_inputs_that_are_not_text_are_refused_not_scored_as_their_str(pipe, texts, message):
    with pytest.raises(TypeError, match=message):
        pipe.predict_proba(texts)
    with pytest.raises(TypeError, match=message):
        pipe(texts)


def test_empty_text_and_a_single_string_are_scored(pipe):
    probs = pipe.predict_proba(["", "a film"])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1.0)
    assert np.array_equal(pipe.predict_proba("a film"), probs[1:])
    assert pipe("a film")[0]["label"] in ("LABEL_0", "LABEL_1")


def test_pipeline_factory_knows_the_task_and_its_alias(pipe, tmp_path):
    pipe.model.save_pretrained(tmp_path)
    pipe.tokenizer.save_pretrained(tmp_path)
    loaded = pipeline("sentiment-analysis", model=str(tmp_path))
    assert isinstance(loaded, TextClassificationPipeline)
    assert np.array_equal(loaded.predict_proba(["a film", "a dull one"]), pipe.predict_proba(["a film", "a dull one"]))
    with pytest.raises(KeyError, match="known tasks"):
        pipeline("text-to-nowhere", model=str(tmp_path))
