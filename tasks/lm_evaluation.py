"""The evaluation of a causal LM: held-out perplexity against the base model's, and sample generations."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelcore.serialization.atomic import atomic_write_text
from tasks.evaluation import REPORT_FILE, plot_loss_curve
from tasks.results import Evaluation

logger = logging.getLogger(__name__)

SAMPLES_FILE = "samples.md"
HELDOUT_FILE = "heldout.jsonl"
SAMPLE_PROMPTS = ("The history of the city", "In mathematics, a group is", "The river flows through")
SAMPLE_NEW_TOKENS = 24


@task(name="evaluate_lm", cache_policy=NO_CACHE)
def evaluate_lm(
    checkpoint: str,
    base_model: str,
    dataset_path: str,
    max_length: int,
    output_dir: str,
    train_log: str | None = None,
) -> Evaluation:
    """Perplexity of ``checkpoint`` and of ``base_model`` on the held-out rows; greedy samples of both.

    Raw text: perplexity over the documents, samples continue ``SAMPLE_PROMPTS``. Chats: perplexity over the
    assistant's tokens, samples answer the first user turn of held-out conversations.

    Writes ``evaluation.json`` (both perplexities, the rows scored), ``samples.md`` (a table of the base and the
    fine-tuned model's continuations) and ``heldout.jsonl`` (the held-out rows as text, for the exports' checks)
    into ``output_dir``.

    Returns:
        An ``Evaluation``: metrics ``perplexity``, ``eval_loss``, ``baseline_perplexity``, ``baseline_eval_loss``;
        the baseline is the base model's own perplexity, the ceiling ``tasks.registry.register`` holds a new
        champion under.
    """
    import datasets

    from modelcore import AutoModelForCausalLM, AutoTokenizer
    from modelcore.task_registry import get_task

    spec = get_task("causal-lm")
    evaluate = spec.function("evaluate")
    test = datasets.load_from_disk(str(Path(dataset_path) / "test")).to_dict()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tuned = AutoModelForCausalLM.from_pretrained(checkpoint, dtype="float32")
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype="float32")
    result = evaluate(tuned, tokenizer, test, max_length)
    baseline = evaluate(base, AutoTokenizer.from_pretrained(base_model), test, max_length)
    samples = [
        {
            "prompt": _shown(prompt),
            "base": _continue(base, tokenizer, prompt),
            "fine_tuned": _continue(tuned, tokenizer, prompt),
        }
        for prompt in _sample_prompts(test)
    ]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "checkpoint": checkpoint,
        "rows": len(next(iter(test.values()))),
        "max_length": max_length,
        **result,
        "baseline": {"kind": "the base model", "model": base_model, **baseline},
        "samples": samples,
    }
    atomic_write_text(out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / SAMPLES_FILE, _samples_table(samples))
    texts = _heldout_texts(tokenizer, test)  # what the exports' perplexity checks read (modelcore's eval-data format)
    atomic_write_text(out / HELDOUT_FILE, "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
    if train_log and Path(train_log).is_file():
        plot_loss_curve(Path(train_log), out / "loss_curve.png")
    metrics = {
        "perplexity": result["perplexity"],
        "eval_loss": result["eval_loss"],
        "baseline_perplexity": baseline["perplexity"],
        "baseline_eval_loss": baseline["eval_loss"],
    }
    logger.info(
        "evaluation on %d held-out rows: perplexity %.3f (the base model %s: %.3f)",
        len(next(iter(test.values()))),
        metrics["perplexity"],
        base_model,
        metrics["baseline_perplexity"],
    )
    return Evaluation(metrics, str(out))


def _heldout_texts(tokenizer: Any, test: dict[str, list]) -> list[str]:
    """The held-out rows as text: documents as they are, conversations rendered with the chat template."""
    if "text" in test:
        return list(test["text"])
    from modelcore.task_registry.chat import conversations

    return [tokenizer.apply_chat_template(chat, tokenize=False) for chat in conversations(test)]


def _sample_prompts(test: dict[str, list]) -> list[str | list[dict[str, str]]]:
    """``SAMPLE_PROMPTS`` for raw text; for chats, the first user turn of the first held-out conversations."""
    if "prompt" in test:
        return [[{"role": "user", "content": p}] for p in test["prompt"][: len(SAMPLE_PROMPTS)]]
    if "messages" in test:
        firsts = []
        for messages in test["messages"][: len(SAMPLE_PROMPTS)]:
            upto = next(i for i, m in enumerate(messages) if m["role"] == "user")
            firsts.append(list(messages[: upto + 1]))
        return firsts
    return list(SAMPLE_PROMPTS)


def _shown(prompt: str | list[dict[str, str]]) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def _continue(model: Any, tokenizer: Any, prompt: str | list[dict[str, str]]) -> str:
    import torch

    if isinstance(prompt, str):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    else:
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            ids, max_new_tokens=SAMPLE_NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id or 0
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def _samples_table(samples: list[dict[str, str]]) -> str:
    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    lines = ["| prompt | base model | fine-tuned |", "|---|---|---|"]
    lines += [f"| {cell(s['prompt'])} | {cell(s['base'])} | {cell(s['fine_tuned'])} |" for s in samples]
    return "\n".join(lines) + "\n"
