"""What a quantization report measures: task metric, logit drift, latency, weight bytes.

The task is the model's in the task registry: text classification -> accuracy on labelled texts, causal
LM -> perplexity on text (non-overlapping windows of ``max_length`` tokens over the concatenated
texts). Every function takes an optional ``autocast`` dtype, so the benchmark can measure eager
bf16 autocast with the same code.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import inspect
import json
import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

CLASSIFICATION, CAUSAL_LM = "accuracy", "perplexity"


@dataclasses.dataclass
class EvalData:
    """Validation texts (and labels, for classification)."""

    texts: list[str]
    labels: list[int] | None = None

    def limited(self, limit: int | None) -> EvalData:
        if limit is None:
            return self
        return EvalData(self.texts[:limit], None if self.labels is None else self.labels[:limit])


def load_eval_data(spec: str | Path, limit: int | None = None) -> EvalData:
    """Read validation data from a file or an asset.

    Args:
        spec: ``.jsonl`` (one ``{"text", "label"?}`` object a line), ``.json`` (a list of such
            objects or of strings), ``.csv`` (``text`` and optional ``label`` columns), or an asset
            name: ``rotten-tomatoes`` (texts + labels) or ``wikipedia-summaries`` (texts).
        limit: keep the first ``limit`` examples.

    Raises:
        FileNotFoundError: neither a file nor a known asset.
        ValueError: a file without texts, or with labels on some rows only.
    """
    path = Path(spec)
    if path.is_file():
        rows = _read_rows(path)
    elif str(spec) == "rotten-tomatoes":
        from modelcore import assets

        rows = assets.load_rotten_tomatoes()
    elif str(spec) == "wikipedia-summaries":
        from modelcore import assets

        articles = json.loads(assets.fetch("wikipedia-summaries").read_text(encoding="utf-8"))  # title -> article
        rows = [{"text": a.get("extract")} for a in articles.values() if isinstance(a, dict)]
    else:
        raise FileNotFoundError(
            f"{spec}: evaluation data must be a .jsonl/.json/.csv file or one of the assets rotten-tomatoes, "
            "wikipedia-summaries"
        )
    texts = [str(r["text"]) for r in rows if r.get("text")]
    if not texts:
        raise ValueError(f"{spec}: no texts found (rows need a 'text' field)")
    has_labels = [("label" in r) for r in rows if r.get("text")]
    if any(has_labels) and not all(has_labels):
        raise ValueError(f"{spec}: some rows have a 'label' and some do not")
    labels = [int(r["label"]) for r in rows if r.get("text")] if all(has_labels) else None
    return EvalData(texts, labels).limited(limit)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = list(data.values())
    return [r if isinstance(r, dict) else {"text": r} for r in data]


# --------------------------------------------------------------- the model
def task_of(model: nn.Module) -> str | None:
    """The metric that decides the model's task in the task registry (``"accuracy"``, ``"perplexity"``), or None."""
    from modelcore.task_registry import task_for_model

    spec = task_for_model(model)
    return spec.decides.name if spec is not None else None


@contextlib.contextmanager
def running(autocast: torch.dtype | None = None, threads: int | None = None) -> Iterator[None]:
    """Inference mode, optional CPU autocast, and a temporary torch thread count."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    cast = torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext()
    try:
        with torch.inference_mode(), cast:
            yield
    finally:
        torch.set_num_threads(previous)


def logits_of(model: nn.Module, batch: dict[str, torch.Tensor], autocast: torch.dtype | None = None) -> torch.Tensor:
    with running(autocast):
        return model(**batch).logits.float()


def accepted_inputs(batch: dict[str, torch.Tensor], model: Any) -> dict[str, torch.Tensor]:
    """The fields of ``batch`` that ``model.forward`` takes (a decoder paired with a BERT-style tokenizer gets no
    ``token_type_ids``); all of them when it takes ``**kwargs``."""
    parameters = inspect.signature(model.forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return batch
    return {name: value for name, value in batch.items() if name in parameters}


def check_batch(
    tokenizer: Any, texts: list[str] | None, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A (batch_size, seq_len) batch: real texts padded/truncated to ``seq_len``, or random ids without them."""
    if tokenizer is not None and texts:
        rows = (texts * math.ceil(batch_size / len(texts)))[:batch_size]
        enc = tokenizer(rows, truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt")
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def max_abs_diff(before: nn.Module, after: nn.Module, batch: dict[str, torch.Tensor], **kwargs: Any) -> float:
    """The largest |logit difference| over the batch.

    The batch runs whole (int8_dynamic's activation scale depends on every row of a call), except
    for language models, whose (B, T, vocab) logits go in chunks of about 32M values.
    """
    ids = batch["input_ids"]
    chunk = ids.shape[0]
    if task_of(before) == CAUSAL_LM:
        chunk = max(1, 2**25 // (ids.shape[1] * before.config.vocab_size))
    worst = 0.0
    for i in range(0, ids.shape[0], chunk):
        part = {k: v[i : i + chunk] for k, v in batch.items()}
        worst = max(worst, (logits_of(before, part, **kwargs) - logits_of(after, part, **kwargs)).abs().max().item())
    return worst


def accuracy(
    model: nn.Module,
    tokenizer: Any,
    data: EvalData,
    batch_size: int = 32,
    max_length: int = 64,
    autocast: torch.dtype | None = None,
) -> float:
    """Share of ``data.texts`` whose argmax logit is their label."""
    if data.labels is None:
        raise ValueError("accuracy needs labelled evaluation data (a 'label' per text)")
    correct = 0
    with running(autocast):
        for i in range(0, len(data.texts), batch_size):
            enc = tokenizer(
                data.texts[i : i + batch_size],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            pred = model(**enc).logits.argmax(-1)
            correct += int((pred == torch.tensor(data.labels[i : i + batch_size])).sum())
    return correct / len(data.texts)


def perplexity(
    model: nn.Module,
    tokenizer: Any,
    data: EvalData,
    max_length: int = 512,
    batch_size: int = 4,
    max_tokens: int | None = None,
    autocast: torch.dtype | None = None,
) -> float:
    """exp(mean next-token NLL) over non-overlapping ``max_length`` windows of the concatenated texts."""
    ids = tokenizer("\n\n".join(data.texts), add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    n_windows = len(ids) // max_length
    if n_windows == 0:
        raise ValueError(f"perplexity needs at least {max_length} tokens of text, got {len(ids)}")
    windows = torch.tensor(ids[: n_windows * max_length]).view(n_windows, max_length)  # (N, T)
    nll, count = 0.0, 0
    with running(autocast):
        for i in range(0, n_windows, batch_size):
            chunk = windows[i : i + batch_size]
            logits = model(input_ids=chunk).logits.float()  # (B, T, V)
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum"
            )
            nll += loss.item()
            count += chunk[:, 1:].numel()
    return math.exp(nll / count)


def task_metric(model: nn.Module, tokenizer: Any, data: EvalData, seq_len: int, **kwargs: Any) -> float | None:
    """Accuracy or perplexity, as the model's head calls for (None for other heads)."""
    task = task_of(model)
    if task == CLASSIFICATION and data.labels is not None:
        return accuracy(model, tokenizer, data, max_length=seq_len, **kwargs)
    if task == CAUSAL_LM:
        return perplexity(model, tokenizer, data, max_length=seq_len, **kwargs)
    return None


def latency_ms(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    repeats: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    autocast: torch.dtype | None = None,
) -> float:
    """Median milliseconds of one forward of ``batch``."""
    return paired_latency_ms([model], batch, repeats, warmup, threads, autocast)[0]


def paired_latency_ms(
    models: list[nn.Module],
    batch: dict[str, torch.Tensor],
    repeats: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    autocast: torch.dtype | None = None,
) -> list[float]:
    """Median milliseconds of one forward of ``batch``, per model.

    The models take turns call by call, so that load from other processes on a shared machine
    falls on all of them alike.
    """
    times: list[list[float]] = [[] for _ in models]
    with running(autocast, threads):
        for model in models:
            for _ in range(warmup):
                model(**batch)
        for _ in range(repeats):
            for model, samples in zip(models, times, strict=True):
                start = time.perf_counter()
                model(**batch)
                samples.append((time.perf_counter() - start) * 1000.0)
    return [statistics.median(samples) for samples in times]


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights of the Linear layers, quantized or not (quantization state included, biases not).

    An output layer tied to the input embeddings is the embedding table, stored once: not counted.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) in embeddings:
            continue
        if isinstance(module, nn.Linear) or getattr(module, "quantized_by", None):
            state = module.state_dict()
            total += sum(t.numel() * t.element_size() for k, t in state.items() if k != "bias")
    return total
