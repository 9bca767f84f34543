"""Chat rows for a causal LM: the real SmolLM2 chat template, labels on the assistant's tokens only, bad rows named."""

from __future__ import annotations

import math

import pytest
import torch

from modelcore import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from modelcore.errors import DataError
from modelcore.task_registry import get_task
from modelcore.task_registry.chat import encode_conversation, pad_labelled, prepare_chat

CHATS = [
    [
        {"role": "user", "content": "Which river flows through Cairo?"},
        {"role": "assistant", "content": "The Nile flows through Cairo."},
        {"role": "user", "content": "And through Paris?"},
        {"role": "assistant", "content": "The Seine."},
    ],
    [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Capital of Italy?"},
        {"role": "assistant", "content": "Rome."},
    ],
]


@pytest.fixture(scope="module")
def smollm_tokenizer():
    from modelcore import assets

    path = assets.fetch("smollm2-135m-gguf")
    return AutoTokenizer.from_pretrained(path if path.is_file() else next(path.glob("*.gguf")))


def test_only_the_assistant_replies_carry_labels(smollm_tokenizer):
    for row, chat in enumerate(CHATS):
        ids, labels = encode_conversation(smollm_tokenizer, chat, row)
        labelled = smollm_tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != -100])
        replies = [m["content"] for m in chat if m["role"] == "assistant"]
        assert labelled == "".join(f"{reply}<|im_end|>\n" for reply in replies)
        assert all(label in (-100, i) for i, label in zip(ids, labels, strict=True))


def test_prompt_response_columns_are_one_user_and_one_assistant_turn(smollm_tokenizer):
    pairs = {"prompt": ["Capital of Italy?"], "response": ["Rome."]}
    messages = {
        "messages": [[{"role": "user", "content": "Capital of Italy?"}, {"role": "assistant", "content": "Rome."}]]
    }
    assert prepare_chat(smollm_tokenizer, pairs, 128) == prepare_chat(smollm_tokenizer, messages, 128)


@pytest.mark.parametrize(
    ("chat", "message"),
    [
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "message 1 should be the assistant's"),
        ([{"role": "assistant", "content": "hi"}], "message 0 should be the user's"),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
            "ends with the user",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": None}],
            "message 1 should be the assistant's",
        ),
    ],
)
def test_rows_that_do_not_alternate_are_refused_naming_the_row(smollm_tokenizer, chat, message):
    with pytest.raises(DataError, match=rf"chat row 1: .*{message}"):
        prepare_chat(smollm_tokenizer, {"messages": [CHATS[0], chat]}, 128)


def test_a_tokenizer_without_a_chat_template_is_refused_for_chat_data(minilm_dir):
    with pytest.raises(DataError, match="has no chat template"):
        get_task("causal-lm").function("prepare")(AutoTokenizer.from_pretrained(minilm_dir), {"messages": CHATS}, 64)


def test_training_loss_is_the_assistant_tokens_loss(smollm_tokenizer):
    spec = get_task("causal-lm")
    columns = spec.function("prepare")(smollm_tokenizer, {"messages": CHATS}, 128)
    rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    batch = spec.function("collator")(smollm_tokenizer)(rows)
    assert batch["labels"].shape == batch["input_ids"].shape
    assert bool((batch["labels"][batch["attention_mask"] == 0] == -100).all())
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smollm_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.inference_mode():
        loss = model(**batch).loss
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][keep], targets[keep])
    torch.testing.assert_close(loss, manual, rtol=1e-5, atol=1e-5)
    metrics = spec.function("evaluate")(model, smollm_tokenizer, {"messages": CHATS}, 128)
    assert math.isclose(metrics["eval_loss"], float(manual), rel_tol=1e-4)


def test_padding_side_left_keeps_labels_with_their_tokens(smollm_tokenizer):
    columns = prepare_chat(smollm_tokenizer, {"messages": CHATS}, 128)
    rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    side = smollm_tokenizer.padding_side
    try:
        smollm_tokenizer.padding_side = "left"
        batch = pad_labelled(smollm_tokenizer, rows)
    finally:
        smollm_tokenizer.padding_side = side
    labelled = batch["labels"] != -100
    assert bool((batch["input_ids"][labelled] == batch["labels"][labelled]).all())
