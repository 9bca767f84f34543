"""token-classification / ner: a tiny BertForTokenClassification (B-/I- labels) behind the real MiniLM tokenizer,
compared with transformers' pipeline on the same saved weights for every aggregation strategy."""

from __future__ import annotations

import pytest
import torch

from modelcore.pipelines import pipeline
from tests.modelcore.pipelines.helpers import save_with_minilm_tokenizer, tiny_bert_config

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
TEXTS = [
    "Hugging Face is a company based in New York City, founded by Clément Delangue.",
    "My name is Wolfgang and I live in Berlin.",
    "Sarah works at the Massachusetts Institute of Technology 🤗 in Cambridge!",
    "unbelievably tokenization-heavy Schwarzenegger Kalamazoo",
]


@pytest.fixture(scope="module")
def ner_dir(minilm_dir, tmp_path_factory):
    """A seeded tiny BERT tagger saved with the real MiniLM tokenizer files; a sharp classifier so labels vary."""
    import transformers

    torch.manual_seed(0)
    config = tiny_bert_config(LABELS)
    model = transformers.BertForTokenClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.6)
        model.classifier.bias.copy_(torch.tensor([1.5, 0, 0, 0, 0, 0, 0]))
    out = tmp_path_factory.mktemp("tiny-ner")
    return save_with_minilm_tokenizer(model, minilm_dir, out)


@pytest.fixture(scope="module")
def hf_ner(ner_dir):
    import transformers

    return transformers.pipeline("token-classification", model=str(ner_dir), device="cpu")


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "max", "average"])
def test_entities_equal_transformers(ner_dir, hf_ner, strategy):
    ours = pipeline("ner", model=ner_dir)
    got = ours(TEXTS, aggregation_strategy=strategy, batch_size=3)
    want = hf_ner(TEXTS, aggregation_strategy=strategy)
    assert sum(len(entities) for entities in got) >= 8  # the tiny model does find entities
    for got_entities, want_entities in zip(got, want, strict=True):
        assert len(got_entities) == len(want_entities)
        for g, w in zip(got_entities, want_entities, strict=True):
            assert set(g) == set(w)
            assert {k: v for k, v in g.items() if k != "score"} == {k: v for k, v in w.items() if k != "score"}
            assert abs(g["score"] - float(w["score"])) < 1e-5


def test_word_strategies_merge_sub_words_that_simple_keeps(ner_dir):
    ours = pipeline("token-classification", model=ner_dir)
    none = ours(TEXTS[3], aggregation_strategy="none", ignore_labels=())
    first = ours(TEXTS[3], aggregation_strategy="first", ignore_labels=())
    assert any(entity["word"].startswith("##") for entity in none)
    assert not any("##" in entity["word"] for entity in first)
    # no span starts inside a word (between two letters)
    text = TEXTS[3]
    assert all(e["start"] == 0 or not (text[e["start"] - 1].isalnum() and text[e["start"]].isalnum()) for e in first)


def test_a_lone_string_gives_its_own_list_and_a_bad_strategy_is_refused(ner_dir):
    ours = pipeline("ner", model=ner_dir)
    assert ours(TEXTS[1]) == ours([TEXTS[1]])[0]
    with pytest.raises(ValueError, match="aggregation_strategy must be one of"):
        ours(TEXTS[1], aggregation_strategy="longest")
