"""zero-shot-classification: a tiny NLI BertForSequenceClassification behind the real MiniLM tokenizer, compared with
transformers' pipeline on the same saved weights."""

from __future__ import annotations

import pytest
import torch

from modelcore.pipelines import pipeline
from tests.modelcore.pipelines.helpers import save_with_minilm_tokenizer, tiny_bert_config

NLI_LABELS = ["contradiction", "entailment", "neutral"]
TEXTS = [
    "The new phone has a faster processor and a better camera than last year's model.",
    "The team scored twice in the last ten minutes to win the championship.",
    "Preheat the oven, then bake the bread for forty minutes until golden.",
]
CANDIDATES = ["technology", "sports", "cooking", "politics"]


@pytest.fixture(scope="module")
def nli_dir(minilm_dir, tmp_path_factory):
    """A seeded tiny BERT NLI classifier saved with the real MiniLM tokenizer files."""
    import transformers

    torch.manual_seed(0)
    config = tiny_bert_config(NLI_LABELS)
    model = transformers.BertForSequenceClassification(config).eval()
    with torch.no_grad():  # scores far from uniform, so rankings mean something
        model.classifier.weight.normal_(0, 1.0)
    out = tmp_path_factory.mktemp("tiny-nli")
    return save_with_minilm_tokenizer(model, minilm_dir, out)


@pytest.fixture(scope="module")
def hf_zero_shot(nli_dir):
    import transformers

    return transformers.pipeline("zero-shot-classification", model=str(nli_dir), device="cpu")


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("template", ["This example is {}.", "The topic of this text is {}."])
def test_rankings_equal_transformers(nli_dir, hf_zero_shot, multi_label, template):
    ours = pipeline("zero-shot-classification", model=nli_dir)
    got = ours(TEXTS, CANDIDATES, hypothesis_template=template, multi_label=multi_label, batch_size=5)
    want = hf_zero_shot(TEXTS, CANDIDATES, hypothesis_template=template, multi_label=multi_label)
    for g, w in zip(got, want, strict=True):
        assert g["sequence"] == w["sequence"] and g["labels"] == w["labels"]
        assert max(abs(a - b) for a, b in zip(g["scores"], w["scores"], strict=True)) < 1e-5
    if not multi_label:
        assert all(abs(sum(g["scores"]) - 1) < 1e-5 for g in got)


def test_one_label_and_a_comma_separated_string(nli_dir, hf_zero_shot):
    ours = pipeline("zero-shot-classification", model=nli_dir)
    got = ours(TEXTS[0], "technology, sports")
    want = hf_zero_shot(TEXTS[0], "technology, sports")
    assert got["labels"] == want["labels"] and set(got["labels"]) == {"technology", "sports"}
    assert max(abs(a - b) for a, b in zip(got["scores"], want["scores"], strict=True)) < 1e-5
    one = ours(TEXTS[0], ["sports"])  # one label: entailment against contradiction, as transformers
    assert abs(one["scores"][0] - hf_zero_shot(TEXTS[0], ["sports"])["scores"][0]) < 1e-5


def test_bad_calls_are_refused(nli_dir, minilm_dir):
    ours = pipeline("zero-shot-classification", model=nli_dir)
    with pytest.raises(ValueError, match="at least one candidate label"):
        ours(TEXTS[0], [])
    with pytest.raises(ValueError, match="has no {} for the label"):
        ours(TEXTS[0], CANDIDATES, hypothesis_template="This example is about it.")
    from modelcore import AutoTokenizer, BertConfig, BertForSequenceClassification
    from modelcore.pipelines import ZeroShotClassificationPipeline

    not_nli = BertForSequenceClassification(
        BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    with pytest.raises(ValueError, match="needs an NLI model with an 'entailment' label"):
        ZeroShotClassificationPipeline(not_nli, AutoTokenizer.from_pretrained(minilm_dir))(TEXTS[0], CANDIDATES)
