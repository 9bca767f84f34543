"""End to end on the real MiniLM-L6 checkpoint: our tokenizer + our model against transformers' pair."""

from __future__ import annotations

import random

import pytest
import torch

from modelcore import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

transformers = pytest.importorskip("transformers")


@pytest.mark.slow
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_minilm_end_to_end_matches_transformers(minilm_dir, rotten_tomatoes, attn):
    texts = [row["text"] for row in random.Random(7).sample(rotten_tomatoes, 48)]
    texts.append(max((r["text"] for r in rotten_tomatoes), key=len))  # forces truncation
    ours_tok = AutoTokenizer.from_pretrained(minilm_dir)
    hf_tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    ours_in = ours_tok(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    hf_in = hf_tok(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(ours_in[key], hf_in[key]), key

    ours = AutoModel.from_pretrained(minilm_dir, attn_implementation=attn)
    hf = transformers.AutoModel.from_pretrained(minilm_dir, attn_implementation=attn).eval()
    with torch.inference_mode():
        a = ours(**ours_in).last_hidden_state
        b = hf(**hf_in).last_hidden_state
    keep = ours_in["attention_mask"].bool()
    assert (a[keep] - b[keep]).abs().max().item() <= 1e-4

    # Mean pooling (how sentence-transformers uses this checkpoint) over real tokens only.
    pooled = (a * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
    assert pooled.shape == (len(texts), 384) and torch.isfinite(pooled).all()


def test_minilm_classifier_head_round_trips_through_transformers(minilm_dir, tmp_path):
    torch.manual_seed(0)
    ours = AutoModelForSequenceClassification.from_pretrained(
        minilm_dir, id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1}
    )
    ours.save_pretrained(tmp_path, max_shard_size="20MB")
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(tmp_path)
    assert len(list(tmp_path.glob("model-*.safetensors"))) >= 4
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert hf.config.id2label == {0: "rotten", 1: "fresh"}
    batch = transformers.AutoTokenizer.from_pretrained(tmp_path)(
        ["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés"],
        padding=True,
        return_tensors="pt",
    )
    with torch.inference_mode():
        torch.testing.assert_close(ours(**batch).logits, hf(**batch).logits, rtol=0, atol=1e-5)
