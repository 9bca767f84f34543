"""fill-mask: a tiny BertForMaskedLM behind the real MiniLM tokenizer, compared with transformers' pipeline."""

from __future__ import annotations

import pytest
import torch

from modelcore.pipelines import pipeline
from tests.modelcore.pipelines.helpers import save_with_minilm_tokenizer, tiny_bert_config

TEXTS = [
    "The capital of France is [MASK].",
    "I went to the [MASK] to buy some bread.",
    "She [MASK] the ball across the field, and the dog [MASK] after it.",
]


@pytest.fixture(scope="module")
def mlm_dir(minilm_dir, tmp_path_factory):
    """A seeded tiny BERT MLM saved with the real MiniLM tokenizer files."""
    import transformers

    torch.manual_seed(0)
    config = tiny_bert_config()
    model = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():  # sharper than the init's near-uniform scores, so top-k orders are well separated
        model.cls.predictions.bias.normal_(0, 2.0)
    out = tmp_path_factory.mktemp("tiny-mlm")
    return save_with_minilm_tokenizer(model, minilm_dir, out)


@pytest.fixture(scope="module")
def hf_fill(mlm_dir):
    import transformers

    return transformers.pipeline("fill-mask", model=str(mlm_dir), device="cpu")


@pytest.mark.parametrize("top_k", [1, 3, 7])
def test_candidates_equal_transformers(mlm_dir, hf_fill, top_k):
    ours = pipeline("fill-mask", model=mlm_dir)
    got = ours(TEXTS, top_k=top_k, batch_size=2)
    want = hf_fill(TEXTS, top_k=top_k)
    assert len(got) == len(want) == 3
    assert isinstance(got[2][0], list) and len(got[2]) == 2  # two masks: one list per mask
    _assert_same(got, want)


def test_a_lone_string_gives_its_own_list(mlm_dir, hf_fill):
    ours = pipeline("fill-mask", model=mlm_dir)
    got = ours(TEXTS[0])
    assert [c["token"] for c in got] == [c["token"] for c in hf_fill(TEXTS[0])]
    assert len(got) == 5 and set(got[0]) == {"score", "token", "token_str", "sequence"}


def test_a_text_without_mask_is_refused_by_index(mlm_dir):
    ours = pipeline("fill-mask", model=mlm_dir)
    with pytest.raises(ValueError, match=r"texts\[1\] has no \[MASK\] token"):
        ours([TEXTS[0], "no mask here"])
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        ours(TEXTS[0], top_k=0)


def _assert_same(got, want):
    if isinstance(got, dict):
        assert {k: got[k] for k in ("token", "token_str", "sequence")} == {
            k: want[k] for k in ("token", "token_str", "sequence")
        }
        assert abs(got["score"] - want["score"]) < 1e-5
        return
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        _assert_same(g, w)
