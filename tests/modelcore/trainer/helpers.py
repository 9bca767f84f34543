"""Helpers shared by the Trainer tests."""

from __future__ import annotations

from typing import Any


def snippet_dataset(tokenizer: Any, rows: list[dict], max_length: int) -> Any:
    """Real review snippets as a tokenized ``datasets.Dataset``: text, input_ids, attention_mask, label."""
    import datasets

    encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
    return datasets.Dataset.from_dict(
        {
            "text": [r["text"] for r in rows],
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "label": [r["label"] for r in rows],
        }
    )
