"""Chat data for a causal LM: conversations rendered with the model's chat template, loss on the assistant only.

A row is a conversation (``messages``: ``[{"role", "content"}, ...]``, or one ``prompt``/``response`` pair). It
must alternate user and assistant turns (after an optional system message) and end with the assistant. Each
assistant turn's tokens are found by rendering the conversation up to that turn twice, with the generation cue
and with the reply: the tokens between the two renderings are the reply, and only they carry labels.
"""

from __future__ import annotations

from typing import Any

import torch

from modelcore.data.collators import IGNORE_INDEX, pad_rows
from modelcore.errors import DataError

Chat = list[dict[str, str]]


def has_chat_columns(rows: dict[str, list]) -> bool:
    """Whether the rows hold conversations (a ``messages`` column, or ``prompt`` and ``response`` columns)."""
    return "messages" in rows or {"prompt", "response"} <= set(rows)


def conversations(rows: dict[str, list]) -> list[Chat]:
    """The rows' conversations: ``messages`` as they are, or ``prompt``/``response`` as a user and an assistant turn."""
    if "messages" in rows:
        return [list(messages or []) for messages in rows["messages"]]
    return [
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        for prompt, response in zip(rows["prompt"], rows["response"], strict=True)
    ]


def check_conversation(messages: Chat, row: int) -> None:
    """Raise DataError naming ``row`` unless it alternates user/assistant (optional system first), ending with one."""
    turns = messages[1:] if messages and messages[0].get("role") == "system" else messages
    if not turns:
        raise DataError(f"chat row {row}: no user or assistant message")
    for position, message in enumerate(turns):
        expected = "user" if position % 2 == 0 else "assistant"
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(message, dict) or message.get("role") != expected or not isinstance(content, str):
            got = message.get("role") if isinstance(message, dict) else type(message).__name__
            raise DataError(
                f"chat row {row}: message {position + len(messages) - len(turns)} should be the {expected}'s "
                f"(turns alternate user, assistant, ...), got {got!r}"
            )
    if turns[-1]["role"] != "assistant":
        raise DataError(
            f"chat row {row}: the conversation ends with the user; the last message must be the assistant's"
        )


def encode_conversation(tokenizer: Any, messages: Chat, row: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one conversation: labels are the ids on the assistant's tokens and -100 elsewhere.

    Raises:
        DataError: the tokenizer has no chat template, or the template renders a shorter conversation as something
            that is not a prefix of the longer one (its turns cannot be told apart).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "the data is chat (a messages or prompt/response column) but the base model's tokenizer has no chat "
            "template; use a chat model, set tokenizer.chat_template, or give raw text"
        )
    ids = _render(tokenizer, messages, add_generation_prompt=False)
    labels = [IGNORE_INDEX] * len(ids)
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:turn], add_generation_prompt=True))
        upto = _render(tokenizer, messages[: turn + 1], add_generation_prompt=False)
        if ids[: len(upto)] != upto or start > len(upto):
            raise DataError(
                f"chat row {row}: the chat template does not render earlier turns as a prefix of later ones"
            )
        labels[start : len(upto)] = ids[start : len(upto)]
    return ids, labels


def prepare_chat(tokenizer: Any, rows: dict[str, list], max_length: int) -> dict[str, list]:
    """Each conversation's ids and assistant-only labels, truncated to ``max_length`` (rows left with no label
    after truncation are dropped)."""
    columns: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
    for row, messages in enumerate(conversations(rows)):
        check_conversation(messages, row)
        ids, labels = encode_conversation(tokenizer, messages, row)
        ids, labels = ids[:max_length], labels[:max_length]
        if all(label == IGNORE_INDEX for label in labels[1:]):
            continue  # the reply starts past max_length: nothing to learn from this row
        columns["input_ids"].append(ids)
        columns["attention_mask"].append([1] * len(ids))
        columns["labels"].append(labels)
    if not columns["input_ids"]:
        raise DataError(f"no conversation keeps an assistant token within max_length={max_length}")
    return columns


def pad_labelled(tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad ids, masks and labels of chat rows to one length (labels with -100) on the tokenizer's padding side."""
    batch = pad_rows([{k: row[k] for k in ("input_ids", "attention_mask")} for row in rows], tokenizer)
    labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    for i, row in enumerate(rows):
        values = torch.as_tensor(list(row["labels"]), dtype=torch.long)
        if left:
            labels[i, labels.shape[1] - len(values) :] = values
        else:
            labels[i, : len(values)] = values
    batch["labels"] = labels
    return batch


def _render(tokenizer: Any, messages: Chat, add_generation_prompt: bool) -> list[int]:
    if not messages:
        return []
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, return_dict=False))
