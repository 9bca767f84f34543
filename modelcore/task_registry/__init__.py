"""The task registry: each task the library trains and serves, declared once (see ``registry``)."""

from modelcore.task_registry.registry import (
    Metric,
    PyfuncParam,
    TaskSpec,
    UnknownTaskError,
    all_tasks,
    get_task,
    register_task,
    task_for_class_name,
    task_for_model,
    task_names,
)

__all__ = [
    "Metric",
    "PyfuncParam",
    "TaskSpec",
    "UnknownTaskError",
    "all_tasks",
    "get_task",
    "register_task",
    "task_for_class_name",
    "task_for_model",
    "task_names",
]
