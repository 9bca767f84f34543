"""The task registry and the ``pipeline`` factory."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

# task name -> pipeline class; aliases point at the same class (filled by each task module)
TASKS: dict[str, type[Pipeline]] = {}
ALIASES: dict[str, str] = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


@dataclass(frozen=True)
class TaskDefault:
    """Where ``pipeline(task)`` finds a model when none is given, in this order."""

    registered_model: str | None = None  # an MLflow registered model whose champion serves the task
    asset: str | None = None  # an asset of ``modelcore.assets``'s catalog that fits the task as it is
    prepare: str | None = None  # "module:function" turning the fetched asset into a checkpoint directory


CHAMPION_ALIAS = "champion"
# Only tasks with a model that fits: MiniLM-L6-v2 is a sentence embedder (no MLM head, no classifier), SmolLM2-135M
# Instruct a small chat model, and the retraining flow registers its sentiment classifier as rotten-tomatoes-sentiment.
DEFAULTS: dict[str, TaskDefault] = {
    "text-classification": TaskDefault(registered_model="rotten-tomatoes-sentiment"),
    "feature-extraction": TaskDefault(asset="minilm-l6"),
    "text-generation": TaskDefault(asset="smollm2-135m-gguf"),
    # whisper tiny.en ships in CTranslate2's format: converted once into the cache (a Hugging Face folder)
    "automatic-speech-recognition": TaskDefault(
        asset="whisper-tiny-en", prepare="modelcore.models.whisper.convert_ctranslate2:converted_asset"
    ),
}


class Pipeline:
    """A model in eval mode, its tokenizer and a device. Subclasses set ``task`` and ``auto_model``.

    Args:
        model: a loaded ``PreTrainedModel``.
        tokenizer: its tokenizer.
        device: where the model runs (``"cpu"``, ``"cuda:0"``, a ``torch.device``); None keeps the model's.
        source: where the model came from (a directory or URI), shown in ``repr``.
        batch_size: inputs per forward pass for calls that do not give one (None: the task's default).
    """

    task: str = ""
    auto_model: str = ""  # name of the modelcore Auto class that loads the task's model
    default_batch_size: int = 8  # inputs per forward pass when neither the call nor the pipeline says

    @classmethod
    def load_preprocessor(cls, source: str | os.PathLike) -> Any:
        """The preprocessor stored with a checkpoint: a tokenizer here; image and audio tasks override this."""
        import modelcore

        return modelcore.AutoTokenizer.from_pretrained(source)

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: str | torch.device | None = None,
        source: str = "",
        batch_size: int | None = None,
    ) -> None:
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.tokenizer = tokenizer
        self.source = source
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def read_directory_settings(self, directory: Path) -> None:
        """Take task settings stored next to the checkpoint (none by default; a task overrides this)."""

    def batch_size_for(self, batch_size: int | None) -> int:
        """The call's ``batch_size``, else the pipeline's, else the task's default."""
        if batch_size is not None:
            return batch_size
        return self.batch_size if self.batch_size is not None else self.default_batch_size

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


def default_source(task: str) -> tuple[str, Path]:
    """The model ``pipeline(task)`` uses when none is given: the champion of the task's registered model in the
    MLflow registry of ``MLFLOW_TRACKING_URI`` if there is one, else the task's catalog asset.

    Args:
        task: a canonical task name.

    Returns:
        The source (a ``models:/`` URI or an asset name) and its local directory.

    Raises:
        ValueError: the task has no default, saying what was tried and what to pass.
    """
    from modelcore.serialization.sources import resolve_source

    default = DEFAULTS.get(task, TaskDefault())
    tried = []
    if default.registered_model:
        uri = f"models:/{default.registered_model}@{CHAMPION_ALIAS}"
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
        if tracking_uri:
            from modelcore.integrations.mlflow_models import RegistryError

            try:
                directory = resolve_source(uri)
            except RegistryError as err:
                tried.append(f"{uri} is not in the registry {tracking_uri} ({err})")
            else:
                logger.info("pipeline(%r): no model given; using the registry's champion %s", task, uri)
                return uri, directory
        else:
            tried.append(f"{uri} was not looked up: MLFLOW_TRACKING_URI is not set")
    if default.asset:
        logger.info("pipeline(%r): no model given; using the catalog asset %r", task, default.asset)
        if default.prepare:
            module, _, function = default.prepare.partition(":")
            return default.asset, Path(getattr(importlib.import_module(module), function)(default.asset))
        return default.asset, resolve_source(default.asset)
    reason = "; ".join(tried) or "no registered model or catalog asset fits it"
    raise ValueError(
        f"pipeline({task!r}) has no default model: {reason}. Pass model= (a checkpoint directory, an asset name "
        "of modelcore.assets, or models:/NAME@ALIAS)"
    )


def pipeline(
    task: str,
    model: str | os.PathLike | Any = None,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    batch_size: int | None = None,
    **model_kwargs: Any,
) -> Pipeline:
    """Build the pipeline for ``task``.

    Args:
        task: a task name (``"text-classification"``) or alias (``"sentiment-analysis"``).
        model: a checkpoint source (a directory, an asset name, ``models:/NAME@alias``,
            ``runs:/RUN_ID/PATH``) or an already loaded model; None picks the task's default (:func:`default_source`)
            and logs which.
        tokenizer: the preprocessor (a tokenizer; an image processor or an audio processor for those tasks) or a
            source for one; defaults to the model's source.
        device: where to run; None leaves the model where it was loaded (CPU).
        dtype: the weights' dtype when loading (``"auto"`` keeps the stored one).
        batch_size: inputs per forward pass (inputs are padded per batch); None: the task's default.
        **model_kwargs: passed to ``from_pretrained``.

    Returns:
        The task's :class:`Pipeline`.

    Raises:
        KeyError: naming the known tasks when ``task`` is unknown.
        ValueError: no model given and the task has no default.
    """
    import modelcore
    from modelcore.serialization.sources import resolve_source

    name = ALIASES.get(task, task)
    if name not in TASKS:
        known = sorted(set(TASKS) | set(ALIASES))
        raise KeyError(f"unknown pipeline task {task!r}; known tasks: {', '.join(known)}")
    cls = TASKS[name]
    source, directory = "", None
    if model is None:
        model, directory = default_source(name)
        source = model
    elif isinstance(model, (str, os.PathLike)):
        source = str(model)
        directory = resolve_source(model)  # resolve a URI once: model and tokenizer read the same files
    if isinstance(model, (str, os.PathLike)):
        if dtype is not None:
            model_kwargs["dtype"] = dtype
        model = getattr(modelcore, cls.auto_model).from_pretrained(directory, **model_kwargs)
        if tokenizer is None:
            tokenizer = directory
    if tokenizer is None:
        raise ValueError("pipeline: pass tokenizer= (the preprocessor) when model is an already loaded model")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = cls.load_preprocessor(tokenizer)
    task_pipeline = cls(model, tokenizer, device=device, source=source, batch_size=batch_size)
    if directory is not None and Path(directory).is_dir():
        task_pipeline.read_directory_settings(Path(directory))
    return task_pipeline
