"""The task registry and the ``pipeline`` factory."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

logger = logging.getLogger(__name__)

# task name -> pipeline class; aliases point at the same class (filled by each task module)
TASKS: dict[str, type[Pipeline]] = {}
ALIASES: dict[str, str] = {"sentiment-analysis": "text-classification"}


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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, model={self.source or type(self.model).__name__!r})"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.task:
            TASKS[cls.task] = cls


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
