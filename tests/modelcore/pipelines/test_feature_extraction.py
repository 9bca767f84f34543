"""feature-extraction on the real all-MiniLM-L6-v2: embeddings equal transformers' (pooled the same way by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelcore.pipelines import FeatureExtractionPipeline, pipeline

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A woman is carrying her child.",
    "A man is riding a horse.",
    "A man rides a white horse on an enclosed ground.",
    "The stock market fell sharply on Monday.",
    "Two men pushed carts through the woods.",
]


@pytest.fixture(scope="module")
def extractor(minilm_dir) -> FeatureExtractionPipeline:
    return pipeline("feature-extraction", model=minilm_dir)


@pytest.fixture(scope="module")
def reference(minilm_dir) -> np.ndarray:
    """transformers' BertModel on the same folder, mean-pooled over the mask and L2-normalized by hand."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    model = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    enc = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()


def test_embeddings_equal_transformers_mean_pooled_and_normalized(extractor, reference):
    got = np.array(extractor(SENTENCES, batch_size=3))
    assert got.shape == (8, 384)
    np.testing.assert_allclose(got, reference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_cosine_similarities_keep_the_paraphrase_ordering(extractor):
    emb = extractor.embed(SENTENCES)
    sim = emb @ emb.T
    paraphrases = [(0, 1), (2, 3), (4, 5)]
    unrelated = [(0, 6), (2, 6), (4, 7), (1, 3), (3, 6), (0, 2)]
    weakest_paraphrase = min(sim[i, j] for i, j in paraphrases)
    strongest_unrelated = max(sim[i, j] for i, j in unrelated)
    assert weakest_paraphrase > strongest_unrelated + 0.1, (weakest_paraphrase, strongest_unrelated)
    # each sentence's nearest neighbour is its paraphrase
    for i, j in paraphrases:
        row = sim[i].copy()
        row[i] = -1
        assert int(row.argmax()) == j


def test_a_lone_string_a_generator_and_batch_sizes_give_the_same_vectors(extractor, reference):
    np.testing.assert_allclose(extractor(SENTENCES[0]), reference[0], atol=1e-5, rtol=0)
    from_generator = extractor((s for s in SENTENCES), batch_size=5)
    np.testing.assert_allclose(np.array(from_generator), reference, atol=1e-5, rtol=0)


def test_token_features_are_shaped_as_hugging_face(extractor, minilm_dir):
    import transformers

    hf = transformers.pipeline("feature-extraction", model=str(minilm_dir), device="cpu")
    texts = SENTENCES[:3]
    got = extractor(texts, pooling=None, batch_size=2)
    want = hf(texts)
    for g, w in zip(got, want, strict=True):
        assert np.array(g).shape == np.array(w).shape  # (1, tokens, 384)
        np.testing.assert_allclose(np.array(g), np.array(w), atol=1e-5, rtol=0)


def test_bad_pooling_and_non_text_inputs_are_refused(extractor):
    with pytest.raises(ValueError, match="pooling must be one of"):
        extractor("hello", pooling="sum")
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str, got NoneType"):
        extractor(["hello", None])


def test_long_texts_are_cut_at_the_folders_max_seq_length_as_sentence_transformers(extractor, minilm_dir):
    """all-MiniLM-L6-v2's sentence_bert_config.json says 256 tokens (the tokenizer allows 512)."""
    import transformers

    long_text = " ".join(SENTENCES * 12)  # ~400 tokens
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    model = transformers.AutoModel.from_pretrained(minilm_dir).eval()

    def by_hand(max_length: int) -> np.ndarray:
        enc = tokenizer([long_text], truncation=True, max_length=max_length, return_tensors="pt")
        assert enc["input_ids"].shape[1] == max_length
        with torch.no_grad():
            pooled = model(**enc).last_hidden_state.mean(dim=1)  # one row, no padding
        return torch.nn.functional.normalize(pooled, dim=1)[0].numpy()

    assert (extractor.max_seq_length, extractor.pooling, extractor.normalize) == (256, "mean", True)
    got = np.array(extractor(long_text))
    np.testing.assert_allclose(got, by_hand(256), atol=1e-5, rtol=0)
    assert np.abs(got - by_hand(512)).max() > 1e-3
    np.testing.assert_allclose(extractor(long_text, max_length=512), by_hand(512), atol=1e-5, rtol=0)
