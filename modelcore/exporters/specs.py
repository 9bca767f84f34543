"""What goes in and out of an exported graph, per task: names, dynamic axes, example inputs, the traced module.

``ONNX_TASKS`` holds the exportable tasks of the task registry (``modelcore.task_registry``: a task with an
``onnx_graph``), keyed by the pipeline task the exported model serves (the name written into the graph's
metadata). A model's task is the registry's: the one whose Auto class serves its class.

Graph signatures (B batch, T new tokens, P cached tokens, S = P + T):

* text-classification: ``input_ids`` (B, T), ``attention_mask`` (B, T) [, ``token_type_ids`` (B, T)]
  -> ``logits`` (B, num_labels)
* text-generation: ``input_ids`` (B, T), ``attention_mask`` (B, S), ``position_ids`` (B, T)
  [, ``past_key_values.{i}.key`` / ``.value`` (B, nkv, P, hs) for each layer i]
  -> ``logits`` (B, T, V) [, ``present.{i}.key`` / ``.value`` (B, nkv, S, hs)]

With past inputs, P may be 0 at run time, so one graph serves the prompt and every later step.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from modelcore.modeling_utils import PreTrainedModel
from modelcore.task_registry import TaskSpec, all_tasks, get_task, task_for_class_name
from modelcore.task_registry import task_for_model as registry_task_for_model


def call_forward(model: PreTrainedModel, **kwargs: Any) -> Any:
    """The model class's own ``forward``, bypassing a ``forward`` set on the instance.

    Mixed-precision training (accelerate) replaces ``model.forward`` with an autocast wrapper; traced
    through it, an export would hold bf16 MatMuls that onnxruntime's CPU provider cannot run.
    """
    return type(model).forward(model, **kwargs)


class ClassifierGraph(nn.Module):
    """input_ids, attention_mask[, token_type_ids] -> logits."""

    def __init__(self, model: PreTrainedModel, with_token_type_ids: bool) -> None:
        super().__init__()
        self.model = model
        self.with_token_type_ids = with_token_type_ids

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if self.with_token_type_ids else {}
        return call_forward(self.model, input_ids=input_ids, attention_mask=attention_mask, **extra).logits


class DecoderGraph(nn.Module):
    """input_ids, attention_mask, position_ids[, past keys/values] -> logits[, present keys/values]."""

    def __init__(self, model: PreTrainedModel, with_past: bool) -> None:
        super().__init__()
        self.model = model
        self.with_past = with_past

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, ...]:
        from modelcore.nn.cache import DynamicCache

        cache = None
        if self.with_past:
            cache = DynamicCache()
            for layer, (key, value) in enumerate(past_key_values):
                cache.update(key, value, layer)
        out = call_forward(
            self.model,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=self.with_past,
        )
        if not self.with_past:
            return (out.logits,)
        presents = [t for pair in zip(cache.keys, cache.values, strict=True) for t in pair]
        return (out.logits, *presents)


@dataclasses.dataclass
class GraphSpec:
    """Everything ``torch.onnx.export`` needs for one model and task."""

    module: nn.Module
    args: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_shapes: dict[str, Any]


def _uses_token_type_ids(model: PreTrainedModel) -> bool:
    accepts = "token_type_ids" in inspect.signature(type(model).forward).parameters
    return accepts and getattr(model.config, "type_vocab_size", 1) > 1


def classifier_spec(model: PreTrainedModel, with_past: bool = False) -> GraphSpec:
    b, t = 2, 16  # not 1: torch.export would specialize a size-1 axis
    vocab = model.config.vocab_size
    input_ids = torch.randint(min(5, vocab - 1), vocab, (b, t), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones(b, t, dtype=torch.long)
    attention_mask[1, t // 2 :] = 0  # a padded row, so the mask path is traced
    axes = {0: "batch", 1: "sequence"}
    names, args, shapes = ["input_ids", "attention_mask"], [input_ids, attention_mask], {}
    if _uses_token_type_ids(model):
        names.append("token_type_ids")
        args.append(torch.zeros_like(input_ids))
    shapes = {name: axes for name in names}
    module = ClassifierGraph(model, with_token_type_ids="token_type_ids" in names)
    return GraphSpec(module, tuple(args), names, ["logits"], shapes)


def decoder_spec(model: PreTrainedModel, with_past: bool = True) -> GraphSpec:
    config = model.config
    if getattr(config, "rope_scaling", None) and config.rope_scaling.get("rope_type") == "dynamic":
        raise ValueError("dynamic RoPE scaling depends on the input's values and cannot be exported to one graph")
    b, t, p = 2, 3, 4 if with_past else 0
    vocab = config.vocab_size
    input_ids = torch.randint(min(5, vocab - 1), vocab, (b, t), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones(b, p + t, dtype=torch.long)
    attention_mask[1, 0] = 0  # a left-padded row
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, p:]
    names = ["input_ids", "attention_mask", "position_ids"]
    shapes: dict[str, Any] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
    }
    outputs = ["logits"]
    args: list[Any] = [input_ids, attention_mask, position_ids]
    if with_past:
        n_layers, nkv, hs = config.num_hidden_layers, config.num_key_value_heads, config.head_dim
        generator = torch.Generator().manual_seed(1)
        past = [tuple(torch.randn(b, nkv, p, hs, generator=generator) for _ in "kv") for _ in range(n_layers)]
        args.append(past)
        past_axes = {0: "batch", 2: "past_sequence"}
        shapes["past_key_values"] = [(past_axes, past_axes) for _ in range(n_layers)]
        names += [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
        outputs += [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    return GraphSpec(DecoderGraph(model, with_past), tuple(args), names, outputs, shapes)


@dataclasses.dataclass(frozen=True)
class OnnxTask:
    """An exportable task: the registry's task, and how to build its graph."""

    name: str  # the pipeline task the exported model serves (written into the graph's metadata)
    task: TaskSpec
    auto_class: str  # the modelcore Auto class that loads a checkpoint for it
    build: Callable[[PreTrainedModel, bool], GraphSpec]
    has_past: bool  # whether with_past applies


def _exportable() -> dict[str, OnnxTask]:
    tasks = {}
    for spec in all_tasks():
        if (
            spec.onnx_graph is not None
        ):  # graphs of this module resolve here: it is in sys.modules, its builders defined
            build = spec.function("onnx_graph")
            tasks[spec.pipeline_task] = OnnxTask(spec.pipeline_task, spec, spec.auto_class, build, spec.onnx_with_past)
    return tasks


ONNX_TASKS: dict[str, OnnxTask] = _exportable()


def onnx_task(task: str) -> OnnxTask:
    """The exportable task named ``task`` (a registry name, alias or pipeline task).

    Raises:
        ValueError: an unknown task, or one the registry declares no ONNX graph for.
    """
    spec = get_task(task)
    if spec.pipeline_task not in ONNX_TASKS:
        raise ValueError(f"task {task!r} cannot be exported to ONNX; one of: {', '.join(sorted(ONNX_TASKS))}")
    return ONNX_TASKS[spec.pipeline_task]


def task_for_model(model: PreTrainedModel, task: str | None = None) -> OnnxTask:
    """The task named, checked against the model's class, or the one the registry gives the model."""
    name = type(model).__name__
    own = registry_task_for_model(model)
    if task is not None:
        spec = onnx_task(task)
        if own is not spec.task:
            raise ValueError(f"task {task!r} needs a model that {spec.auto_class} serves, got {name}")
        return spec
    if own is not None and own.pipeline_task in ONNX_TASKS:
        return ONNX_TASKS[own.pipeline_task]
    raise ValueError(
        f"{name} has no ONNX export: exportable are the models of "
        + ", ".join(f"{s.auto_class} ({s.name})" for s in ONNX_TASKS.values())
    )


def task_for_architectures(architectures: list[str] | None, task: str | None, where: str) -> OnnxTask:
    """The task named, or the one a checkpoint's ``architectures`` imply (for loading it before export)."""
    if task is not None:
        return onnx_task(task)
    for name in architectures or []:
        spec = task_for_class_name(name)
        if spec is not None and spec.pipeline_task in ONNX_TASKS:
            return ONNX_TASKS[spec.pipeline_task]
    raise ValueError(
        f"{where}: architectures {architectures} name no exportable head; pass the task "
        f"(one of: {', '.join(sorted(ONNX_TASKS))})"
    )
