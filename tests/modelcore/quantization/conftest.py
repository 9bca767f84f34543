"""Tiny checkpoints for the quantization tests, saved once per session.

Widths are multiples of 32 and 64 so that bitsandbytes' fused CPU kernel (blocks of 32 output
rows, absmax per 64 inputs) runs, as it does on real models.
"""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers import models, pre_tokenizers

from modelcore.models.bert import BertConfig, BertForSequenceClassification
from modelcore.models.llama import LlamaConfig, LlamaForCausalLM
from modelcore.tokenization import Tokenizer

WORDS = [
    "the",
    "a",
    "movie",
    "film",
    "was",
    "is",
    "good",
    "bad",
    "great",
    "awful",
    "fun",
    "dull",
    "plot",
    "actors",
    "story",
    "boring",
    "lovely",
]
BERT = dict(
    vocab_size=32,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=64,
)
LLAMA = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    tie_word_embeddings=True,  # as SmolLM2
)


def tiny_tokenizer() -> Tokenizer:
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    backend = Backend(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return Tokenizer(backend, special_tokens={"pad_token": "[PAD]", "unk_token": "[UNK]"})


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(**BERT)).eval()


def tiny_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**LLAMA, **overrides})).eval()


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    """A full-precision BERT classifier with a tokenizer and a labelled validation file."""
    path = tmp_path_factory.mktemp("bert-fp32")
    tiny_bert().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    rows = [
        {"text": f"the {w} movie was {v}", "label": i % 2}
        for i, (w, v) in enumerate(zip(WORDS, reversed(WORDS), strict=True))
    ]
    (path.parent / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama-fp32")
    tiny_llama().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bert_ids():
    return torch.randint(4, BERT["vocab_size"], (4, 12), generator=torch.Generator().manual_seed(0))
