"""The task registry and the ``pipeline`` factory."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch

logger = logging.getLogger(__name__)

# task name -> pipeline class; aliases point at the same class (filled by each task module)
TASKS: dict[str, type[Pipeline]] = {}
ALIASES: dict[str, str] = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


class Pipeline:
    """A model in eval mode, its tokenizer and a device. Subclasses set ``task`` and ``auto_model``.

    Args:
        model: a loaded ``PreTrainedModel``.
        tokenizer: its tokenizer.
        device: where the model runs (``"cpu"``, ``"cuda:0"``, a ``torch.device``); None keeps the model's.
        source: where the model came from (a directory or URI), shown in ``repr``.
    """

    task: str = ""
    auto_model: str = ""  # name of the modelcore Auto class that loads the task's model

    def __init__(self, model: Any, tokenizer: Any, device: str | torch.device | None = None, source: str = "") -> None:
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.tokenizer = tokenizer
        self.source = source

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def accepted_inputs(self) -> set[str]:
        """The keyword arguments the model's ``forward`` takes (a tokenizer may return more columns)."""
        return set(inspect.signature(self.model.forward).parameters)

    def encode(
        self, texts: list[str], max_length: int | None = None, truncation: bool | str = True, **tokenizer_kwargs: Any
    ) -> Any:
        """Tokenize a batch with padding and truncation, as torch tensors (every column the tokenizer returns)."""
        return self.tokenizer(
            texts, padding=True, truncation=truncation, max_length=max_length, return_tensors="pt", **tokenizer_kwargs
        )

    def forward(self, encoding: Any) -> Any:
        """Run the model without gradients on the columns of ``encoding`` that ``forward`` accepts."""
        accepted = self.accepted_inputs()
        inputs = {key: value.to(self.device) for key, value in encoding.items() if key in accepted}
        with torch.inference_mode():
            return self.model(**inputs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, model={self.source or type(self.model).__name__!r})"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.task:
            TASKS[cls.task] = cls


def as_texts(inputs: str | Iterable[str]) -> tuple[list[str], bool]:
    """A lone string, a list or any iterable (a generator) of strings as a list, and whether it was a lone string.

    Raises:
        TypeError: an item is not a string (the message names its index).
    """
    if isinstance(inputs, str):
        return [inputs], True
    texts = list(inputs)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] must be a str, got {type(text).__name__} ({text!r:.40})")
    return texts, False


def chunks(items: list[Any], batch_size: int) -> Iterator[list[Any]]:
    """Consecutive slices of at most ``batch_size`` items.

    Raises:
        ValueError: ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def pipeline(
    task: str,
    model: str | os.PathLike | Any,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    **model_kwargs: Any,
) -> Pipeline:
    """Build the pipeline for ``task``.

    Args:
        task: a task name (``"text-classification"``) or alias (``"sentiment-analysis"``).
        model: a checkpoint source (a directory, an asset name, ``models:/NAME@alias``,
            ``runs:/RUN_ID/PATH``) or an already loaded model.
        tokenizer: a tokenizer or a source for one; defaults to the model's source.
        device: where to run; None leaves the model where it was loaded (CPU).
        dtype: the weights' dtype when loading (``"auto"`` keeps the stored one).
        **model_kwargs: passed to ``from_pretrained``.

    Returns:
        The task's :class:`Pipeline`.

    Raises:
        KeyError: naming the known tasks when ``task`` is unknown.
    """
    import modelcore
    from modelcore.serialization.sources import resolve_source

    name = ALIASES.get(task, task)
    if name not in TASKS:
        known = sorted(set(TASKS) | set(ALIASES))
        raise KeyError(f"unknown pipeline task {task!r}; known tasks: {', '.join(known)}")
    cls = TASKS[name]
    source = ""
    if isinstance(model, (str, os.PathLike)):
        source = str(model)
        directory = resolve_source(model)  # resolve a URI once: model and tokenizer read the same files
        if dtype is not None:
            model_kwargs["dtype"] = dtype
        model = getattr(modelcore, cls.auto_model).from_pretrained(directory, **model_kwargs)
        if tokenizer is None:
            tokenizer = directory
    if tokenizer is None:
        raise ValueError("pipeline: pass tokenizer= when model is an already loaded model")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = modelcore.AutoTokenizer.from_pretrained(tokenizer)
    return cls(model, tokenizer, device=device, source=source)
