"""Tiny BERTs saved with the real MiniLM tokenizer files: what the task-pipeline tests compare on."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def tiny_bert_config(labels: tuple[str, ...] | list[str] | None = None) -> Any:
    """A transformers ``BertConfig`` with MiniLM's vocabulary, 2 layers of width 32, and ``labels`` as id2label."""
    import transformers

    fields: dict[str, Any] = {}
    if labels is not None:
        fields = {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}
    return transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **fields
    )


def save_with_minilm_tokenizer(model: Any, minilm_dir: Path, out: Path) -> Path:
    """Save a transformers ``model`` into ``out`` beside a copy of the real MiniLM tokenizer files."""
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir / name, out / name)
    return out
