"""Extractive question answering: a question and a context in, the likeliest context span out.

Follows Hugging Face's (v4) ``QuestionAnsweringPipeline``: a context longer than ``max_seq_len`` tokens is cut into
windows that overlap by ``doc_stride`` tokens (the question repeated in each); in each window the start and end
logits are softmaxed over the context tokens (and [CLS]), a span scores ``p(start) * p(end)`` with
``start <= end < start + max_answer_len``, and the best spans of all windows are ranked together. Spans are widened
to whole words, and ``start``/``end`` are character offsets into the context.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
import tokenizers
import torch

from modelcore.pipelines.base import Pipeline, chunks


class QuestionAnsweringPipeline(Pipeline):
    """Answer questions from a context with a question-answering model (``AutoModelForQuestionAnswering``)."""

    task = "question-answering"
    auto_model = "AutoModelForQuestionAnswering"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._windowing: dict[tuple[int, int], tokenizers.Tokenizer] = {}
        self._lock = threading.Lock()

    def __call__(
        self,
        question: str | dict[str, str] | Iterable[dict[str, str]] | None = None,
        context: str | None = None,
        *,
        top_k: int = 1,
        doc_stride: int | None = None,
        max_seq_len: int | None = None,
        max_answer_len: int = 15,
        handle_impossible_answer: bool = False,
        batch_size: int | None = None,
    ) -> dict[str, Any] | list[Any]:
        """Answer each question from its context.

        Args:
            question: a question (with ``context``), a ``{"question", "context"}`` dict, or a list / iterable of them.
            context: the text to find the answer in, when ``question`` is a string.
            top_k: answers per question, best first.
            doc_stride: tokens shared by consecutive windows of a long context (default: min(max_seq_len // 2, 128)).
            max_seq_len: tokens per window, question and special tokens included (default: min(model limit, 384)).
            max_answer_len: the longest answer, in tokens.
            handle_impossible_answer: also offer the empty answer, scored by the [CLS] position.
            batch_size: windows per forward pass (None: the pipeline's ``batch_size``, else the task's default).

        Returns:
            Per question ``{"score", "start", "end", "answer"}`` (a list of them when ``top_k`` > 1); a single
            question gives its own result.

        Raises:
            ValueError: a question without a context (or an empty one), or bad lengths.
        """
        examples, single = _examples(question, context)
        batch_size = self.batch_size_for(batch_size)
        if top_k < 1 or max_answer_len < 1:
            raise ValueError(f"top_k and max_answer_len must be >= 1, got {top_k} and {max_answer_len}")
        if max_seq_len is None:
            max_seq_len = min(self.tokenizer.model_max_length, 384)
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        results = []
        for example in examples:
            answers = self._answer(
                example, top_k, doc_stride, max_seq_len, max_answer_len, handle_impossible_answer, batch_size
            )
            results.append(answers[0] if len(answers) == 1 else answers)
        return results[0] if single else results

    def _answer(
        self,
        example: dict[str, str],
        top_k: int,
        doc_stride: int,
        max_seq_len: int,
        max_answer_len: int,
        handle_impossible_answer: bool,
        batch_size: int,
    ) -> list[dict[str, Any]]:
        question, context = example["question"], example["context"]
        windows = self._windows(question, context, max_seq_len, doc_stride)
        answers, min_null_score = [], 1_000_000.0
        for batch in chunks(windows, batch_size):
            start_logits, end_logits, attention = self._logits(batch)
            for row, window in enumerate(batch):
                # the softmax runs over the context's tokens and [CLS] (the "no answer" slot); answers are context spans
                context_tokens = np.array([sid == 1 for sid in window.sequence_ids], dtype=np.int64)
                allowed = context_tokens.copy()
                if self.tokenizer.cls_token_id is not None:
                    allowed[np.array(window.ids) == self.tokenizer.cls_token_id] = 1
                allowed = np.pad(allowed, (0, attention.shape[1] - len(allowed))) & attention[row]
                start, end = _normalized(start_logits[row], allowed), _normalized(end_logits[row], allowed)
                if handle_impossible_answer:
                    min_null_score = min(min_null_score, float(start[0] * end[0]))
                start[0] = end[0] = 0.0
                in_context = np.pad(context_tokens, (0, attention.shape[1] - len(context_tokens)))
                for s, e, score in _best_spans(start, end, in_context, top_k, max_answer_len):
                    char_start, char_end = _word_span(window, int(s), int(e))
                    answers.append(
                        {
                            "score": float(score),
                            "start": char_start,
                            "end": char_end,
                            "answer": context[char_start:char_end],
                        }
                    )
        if handle_impossible_answer:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        return sorted(answers, key=lambda answer: answer["score"], reverse=True)[:top_k]

    def _windows(self, question: str, context: str, max_seq_len: int, doc_stride: int) -> list[tokenizers.Encoding]:
        """The question paired with each window of the context (special tokens added, no padding)."""
        backend = self._windowing_backend(max_seq_len, doc_stride)
        try:
            encoding = backend.encode(question, context)
        except Exception as err:  # tokenizers raises a bare Exception when the question leaves no room
            raise ValueError(
                f"question-answering: the question leaves no room for the context in max_seq_len={max_seq_len} tokens "
                f"with doc_stride={doc_stride}; shorten the question or raise max_seq_len ({err})"
            ) from err
        return [encoding, *encoding.overflowing]

    def _windowing_backend(self, max_seq_len: int, doc_stride: int) -> tokenizers.Tokenizer:
        # a private copy: the shared backend is never reconfigured, so calls in other threads are unaffected
        with self._lock:
            key = (max_seq_len, doc_stride)
            if key not in self._windowing:
                backend = tokenizers.Tokenizer.from_str(self.tokenizer.backend.to_str())
                backend.no_padding()
                backend.enable_truncation(max_seq_len, stride=doc_stride, strategy="only_second")
                self._windowing[key] = backend
            return self._windowing[key]

    def _logits(self, windows: list[tokenizers.Encoding]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Start and end logits (B, T) as float32, and the attention mask (B, T), windows right-padded."""
        length = max(len(window.ids) for window in windows)
        columns = {"input_ids": [], "attention_mask": [], "token_type_ids": []}
        pad_id = self.tokenizer.pad_token_id or 0
        for window in windows:
            pad = length - len(window.ids)
            columns["input_ids"].append(window.ids + [pad_id] * pad)
            columns["attention_mask"].append(window.attention_mask + [0] * pad)
            columns["token_type_ids"].append(window.type_ids + [0] * pad)
        encoding = {key: torch.tensor(rows) for key, rows in columns.items()}
        out = self.forward(encoding)
        attention = encoding["attention_mask"].numpy()
        return out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy(), attention


def _examples(question: Any, context: str | None) -> tuple[list[dict[str, str]], bool]:
    """The calls' inputs as ``{"question", "context"}`` dicts, and whether one question was asked."""
    if isinstance(question, str):
        items, single = [{"question": question, "context": context}], True
    elif isinstance(question, dict):
        items, single = [question], True
    elif question is None:
        raise ValueError("question-answering needs a question and a context: qa(question=..., context=...)")
    else:
        items, single = list(question), False
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(
                f"question-answering: input {index} must be a {{'question', 'context'}} dict, got {item!r:.60}"
            )
        for key in ("question", "context"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise ValueError(
                    f"question-answering: input {index} has no {key} (got {item.get(key)!r:.40}); extractive question "
                    "answering finds the answer in a context: pass qa(question=..., context=...)"
                )
    return items, single


def _normalized(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Softmax over the allowed positions (the others get ~0, as Hugging Face's -10000 mask gives)."""
    masked = np.where(allowed == 0, -10000.0, logits)
    e = np.exp(masked - masked.max())
    return e / e.sum()


def _best_spans(
    start: np.ndarray, end: np.ndarray, allowed: np.ndarray, top_k: int, max_answer_len: int
) -> list[tuple[int, int, float]]:
    """The top_k (start, end, score) spans with start <= end < start + max_answer_len, both ends allowed.

    Hugging Face also lets a span start or end at [CLS] (scored 0), which gives empty answers when ``top_k``
    exceeds the real spans; those are left out here.
    """
    candidates = np.tril(np.triu(np.outer(start, end)), max_answer_len - 1)  # (T, T) scores of start x end
    flat = candidates.flatten()
    if top_k == 1:
        order = np.array([np.argmax(flat)])
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        best = np.argpartition(-flat, top_k)[:top_k]
        order = best[np.argsort(-flat[best])]
    starts, ends = np.unravel_index(order, candidates.shape)
    return [
        (s, e, candidates[s, e])
        for s, e in zip(starts, ends, strict=True)
        if allowed[s] and allowed[e] and s <= e < s + max_answer_len  # past the real spans, top_k reaches zeros
    ]


def _word_span(window: tokenizers.Encoding, start: int, end: int) -> tuple[int, int]:
    """Character span in the context of the words holding tokens ``start`` to ``end`` (token offsets if no words)."""
    start_word, end_word = window.token_to_word(start), window.token_to_word(end)
    if start_word is None or end_word is None:
        return window.offsets[start][0], window.offsets[end][1]
    start_chars = window.word_to_chars(start_word, sequence_index=1)
    end_chars = window.word_to_chars(end_word, sequence_index=1)
    if start_chars is None or end_chars is None:
        return window.offsets[start][0], window.offsets[end][1]
    return start_chars[0], end_chars[1]
