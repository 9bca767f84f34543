"""``TaskSpec`` and the registry: what a task is trained on, judged by, served and exported as, declared once.

A task names its Auto class (which heads serve it), the dataset columns it reads and how rows become model
inputs, its collator, its metrics (the first decides a promotion, in its direction), its baseline, the
pipeline that serves it, its ONNX graph and its MLflow pyfunc (outputs, parameters, predict). Functions are
"module:function" references, imported on first use, so reading the registry imports no model, exporter or
MLflow code. The trainer, the quantization report, the exporters and the MLflow flavor look tasks up here;
the tests are parametrized over ``all_tasks()``, so a registered task enrols itself in the suite.

Adding a task: a module under ``modelcore/task_registry/`` that calls ``register_task(TaskSpec(...))``, and
its name in ``TASK_MODULES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TASK_MODULES = (
    "modelcore.task_registry.text_classification",
    "modelcore.task_registry.causal_lm",
    "modelcore.task_registry.image_classification",
)
MODALITIES = ("text", "image")

_TASKS: dict[str, TaskSpec] = {}
_ALIASES: dict[str, str] = {}
_loaded = False


class UnknownTaskError(ValueError):
    """A task name that is not registered; the message lists the registered ones."""


@dataclass(frozen=True)
class Metric:
    """A number evaluation reports, and which way is better."""

    name: str
    greater_is_better: bool = True


@dataclass(frozen=True)
class PyfuncParam:
    """A generation parameter of the served model: MLflow's params schema (name, type, default)."""

    name: str
    type: str  # an MLflow DataType name: "long", "double", "string", "boolean"
    default: Any


@dataclass(frozen=True)
class TaskSpec:
    """One task. ``metrics[0]`` decides promotions; references are "module:function" strings.

    Args:
        name: the task's name (``RetrainParams.task``, ``export --task``).
        auto_class: the modelcore Auto class whose heads serve it (``AutoModelForSequenceClassification``).
        pipeline_task: the ``modelcore.pipeline`` task that serves a checkpoint of it.
        input_column: the dataset (and served request) column holding the input: ``text``, ``image``.
        label_column: the column holding the targets; None when the input is its own target.
        metrics: what evaluation reports; the first decides.
        prepare: (preprocessor, rows: dict of columns, max_length) -> dict of model-input columns.
        collator: (preprocessor) -> a collate function for the Trainer.
        evaluate: (model, preprocessor, rows, max_length) -> {metric: value} on held-out rows.
        baseline: (train rows, test rows, base model source, max_length) -> {metric: value}, the floor a
            trained model must beat (the majority class; the base model's own perplexity).
        onnx_graph: (model, with_past) -> the exporter's ``GraphSpec``; None: not exportable to ONNX.
        onnx_with_past: whether the ONNX graph takes and returns a KV cache.
        pyfunc_outputs: (checkpoint config dict) -> [(MLflow type, column name)] of the served model's output.
        pyfunc_predict: (pipeline, request rows, params) -> a DataFrame; None: not served through MLflow.
        pyfunc_params: the request parameters the served model takes (MLflow's params schema).
        aliases: other names of the task.
        modality: what the input is, ``"text"`` or ``"image"``: which preprocessor a checkpoint of the task carries
            (a tokenizer or an image processor, see :meth:`load_preprocessor`). An image task's prepared rows keep
            the encoded images; its collator decodes and processes them per batch (the Trainer keeps the columns).
    """

    name: str
    auto_class: str
    pipeline_task: str
    input_column: str
    label_column: str | None
    metrics: tuple[Metric, ...]
    prepare: str
    collator: str
    evaluate: str
    baseline: str
    onnx_graph: str | None = None
    onnx_with_past: bool = False
    pyfunc_outputs: str | None = None
    pyfunc_predict: str | None = None
    pyfunc_params: tuple[PyfuncParam, ...] = ()
    aliases: tuple[str, ...] = ()
    modality: str = "text"

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"task {self.name!r}: modality must be one of {MODALITIES}, got {self.modality!r}")

    def load_preprocessor(self, source: Any) -> Any:
        """The checkpoint's preprocessor for this task: its tokenizer, or its image processor."""
        import modelcore

        auto = modelcore.AutoImageProcessor if self.modality == "image" else modelcore.AutoTokenizer
        return auto.from_pretrained(source)

    @property
    def decides(self) -> Metric:
        """The metric a promotion compares."""
        return self.metrics[0]

    def function(self, field: str) -> Callable[..., Any]:
        """The function a reference field names, imported now (``spec.function("evaluate")(model, ...)``)."""
        ref = getattr(self, field)
        if not isinstance(ref, str):
            raise ValueError(f"task {self.name!r} declares no {field}")
        module, _, name = ref.partition(":")
        return getattr(importlib.import_module(module), name)


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` (and its aliases) to the registry; a name already taken by another task is an error."""
    for name in (spec.name, *spec.aliases):
        owner = _ALIASES.get(name)
        if owner is not None and owner != spec.name:
            raise ValueError(f"task name {name!r} is already registered for task {owner!r}")
    _TASKS[spec.name] = spec
    for name in (spec.name, *spec.aliases):
        _ALIASES[name] = spec.name
    return spec


def get_task(name: str) -> TaskSpec:
    """The task registered under ``name`` or one of its aliases.

    Raises:
        UnknownTaskError: no such task (the message lists the registered names).
    """
    _load()
    key = _ALIASES.get(name)
    if key is None:
        raise UnknownTaskError(f"unknown task {name!r}; registered tasks: {', '.join(task_names())}")
    return _TASKS[key]


def all_tasks() -> list[TaskSpec]:
    """Every registered task, in registration order."""
    _load()
    return list(_TASKS.values())


def task_names() -> list[str]:
    """The registered task names (aliases after their task's name: ``text-generation (causal-lm)``)."""
    _load()
    names = []
    for spec in _TASKS.values():
        names.append(spec.name + (f" (also {', '.join(spec.aliases)})" if spec.aliases else ""))
    return names


def task_for_model(model: Any) -> TaskSpec | None:
    """The task of ``model``: the one whose Auto class serves its class (by the family registry), or, for a model
    that is not a registered class (an onnxruntime model), the task its ``task`` attribute names; else None."""
    spec = task_for_class_name(type(model).__name__)
    declared = getattr(type(model), "task", None)
    if spec is None and isinstance(declared, str):
        _load()
        key = _ALIASES.get(declared)
        return _TASKS[key] if key is not None else None
    return spec


def task_for_class_name(class_name: str) -> TaskSpec | None:
    """The task whose Auto class maps some family to a class named ``class_name`` (a config's architectures)."""
    from modelcore.auto.registry import FAMILIES

    _load()
    for spec in _TASKS.values():
        for family in FAMILIES.values():
            ref = family.models.get(spec.auto_class)
            if ref is not None and _class_name(ref) == class_name:
                return spec
    return None


def _class_name(ref: str | type) -> str:
    return ref.__name__ if isinstance(ref, type) else ref.partition(":")[2]


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in TASK_MODULES:
            importlib.import_module(module)
        _loaded = True
