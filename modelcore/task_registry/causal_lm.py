"""causal-lm (text-generation): next-token prediction on raw text or chats, judged by held-out perplexity.

Raw text is packed: every text's tokens plus an EOS, concatenated and cut into ``max_length`` blocks, so no
position is padding. Chat rows (a ``messages`` or ``prompt``/``response`` column) are rendered with the model's
chat template, one conversation a row, and only the assistant's tokens carry labels (``task_registry.chat``).
The baseline is the base model's own perplexity on the same held-out rows: fine-tuning must lower it.
"""

from __future__ import annotations

import math
from typing import Any

from modelcore.task_registry.chat import has_chat_columns, pad_labelled, prepare_chat
from modelcore.task_registry.registry import Metric, PyfuncParam, TaskSpec, register_task
from modelcore.task_registry.requests import MESSAGES_FIELD, has_field, request_conversations, request_texts

GENERATION_PARAMS = (
    PyfuncParam("max_new_tokens", "long", 64),
    PyfuncParam("temperature", "double", 0.0),  # 0: greedy decoding; above 0: sampling at that temperature
    PyfuncParam("top_p", "double", 1.0),
)


def prepare(tokenizer: Any, rows: dict[str, list], max_length: int) -> dict[str, list]:
    """Chat rows as conversations with assistant-only labels; raw texts packed into ``max_length``-token blocks
    (the remainder shorter than a block is dropped).

    Raises:
        ValueError: the texts hold fewer than ``max_length`` tokens in all (no block at all).
        DataError: a conversation that does not alternate user/assistant, or chat rows for a tokenizer without a
            chat template.
    """
    if has_chat_columns(rows):
        return prepare_chat(tokenizer, rows, max_length)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for ids in tokenizer(list(rows["text"]), add_special_tokens=False)["input_ids"]:
        stream.extend(list(ids) + eos)
    blocks = [stream[start : start + max_length] for start in range(0, len(stream) - max_length + 1, max_length)]
    if not blocks:
        raise ValueError(f"the texts hold {len(stream)} tokens, fewer than one block of max_length={max_length}")
    return {"input_ids": blocks, "attention_mask": [[1] * max_length for _ in blocks]}


class CausalLMCollator:
    """Chat rows (which carry ``labels``) padded with their labels; packed text rows labelled by their own ids."""

    def __init__(self, tokenizer: Any) -> None:
        from modelcore.data.collators import DataCollatorForLanguageModeling

        self.tokenizer = tokenizer
        self.language_modeling = DataCollatorForLanguageModeling(tokenizer, mlm=False)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if rows and "labels" in rows[0]:
            return pad_labelled(self.tokenizer, rows)
        return self.language_modeling(rows)


def collator(tokenizer: Any) -> Any:
    return CausalLMCollator(tokenizer)


def evaluate(model: Any, tokenizer: Any, rows: dict[str, list], max_length: int) -> dict[str, Any]:
    """Perplexity (and its log, the mean next-token loss): over ``max_length`` windows of held-out texts, or over
    the assistant's tokens of held-out conversations."""
    if has_chat_columns(rows):
        loss = _chat_loss(model, tokenizer, prepare_chat(tokenizer, rows, max_length))
        return {"perplexity": math.exp(loss), "eval_loss": loss}
    from modelcore.quantization.evaluation import EvalData, perplexity

    value = perplexity(model, tokenizer, EvalData(list(rows["text"])), max_length=max_length)
    return {"perplexity": value, "eval_loss": math.log(value)}


def _chat_loss(model: Any, tokenizer: Any, columns: dict[str, list], batch_size: int = 8) -> float:
    """Mean next-token loss over the labelled (assistant) tokens."""
    import torch

    rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = pad_labelled(tokenizer, rows[start : start + batch_size])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            targets = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum", ignore_index=-100
            )
            total += float(losses)
            count += int((targets != -100).sum())
    return total / max(count, 1)


def baseline(train: dict[str, list], test: dict[str, list], base_model: str | None, max_length: int) -> dict[str, Any]:
    """The base model's own perplexity on the held-out texts ({} without a base model)."""
    if base_model is None:
        return {}
    from modelcore import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_model, dtype="float32")
    return evaluate(model, AutoTokenizer.from_pretrained(base_model), test, max_length)


def pyfunc_outputs(config: dict[str, Any]) -> list[tuple[str, str]]:
    return [("string", "generated_text")]


def pyfunc_predict(pipe: Any, model_input: Any, params: dict[str, Any], settings: dict[str, Any]) -> Any:
    """The generated text (without the prompt) for each prompt of ``text`` or conversation of ``messages``."""
    import pandas as pd

    if has_field(model_input, MESSAGES_FIELD):
        prompts: list[Any] = request_conversations(model_input)
    else:
        prompts = request_texts(model_input)
    options = {p.name: params.get(p.name, p.default) if params else p.default for p in GENERATION_PARAMS}
    temperature = float(options.pop("temperature"))
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    if not sampling["do_sample"]:
        options.pop("top_p")
    outputs = pipe(
        prompts, return_full_text=False, max_new_tokens=int(options.pop("max_new_tokens")), **options, **sampling
    )
    texts = [output[0]["generated_text"] for output in outputs]
    return pd.DataFrame({"generated_text": texts})


register_task(
    TaskSpec(
        name="causal-lm",
        auto_class="AutoModelForCausalLM",
        pipeline_task="text-generation",
        input_column="text",
        label_column=None,
        metrics=(Metric("perplexity", greater_is_better=False), Metric("eval_loss", greater_is_better=False)),
        prepare=f"{__name__}:prepare",
        collator=f"{__name__}:collator",
        evaluate=f"{__name__}:evaluate",
        baseline=f"{__name__}:baseline",
        onnx_graph="modelcore.exporters.specs:decoder_spec",
        onnx_with_past=True,
        pyfunc_outputs=f"{__name__}:pyfunc_outputs",
        pyfunc_predict=f"{__name__}:pyfunc_predict",
        pyfunc_params=GENERATION_PARAMS,
        aliases=("text-generation",),
    )
)
