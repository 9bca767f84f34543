"""Datasets for the Trainer: column selection, validation with clear errors, and data loaders."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from modelcore.data.sampling import is_hf_dataset

logger = logging.getLogger(__name__)

LABEL_COLUMNS = ("labels", "label", "label_ids")


def model_input_names(model: torch.nn.Module) -> set[str]:
    return set(inspect.signature(model.forward).parameters) | set(LABEL_COLUMNS)


def prepare_dataset(dataset: Any, model: torch.nn.Module, role: str, remove_unused_columns: bool) -> Any:
    """Check a dataset and drop the columns the model's forward does not take.

    Args:
        dataset: a ``datasets.Dataset`` or any map-style torch dataset of dicts.
        role: "train_dataset" / "eval_dataset" / "test_dataset", used in error messages.

    Raises:
        ValueError: the dataset is empty, or has no column of the model's main input (``input_ids`` or
            ``inputs_embeds``, ``pixel_values``, ``input_features``) while ``remove_unused_columns`` is on.
    """
    if dataset is None:
        return None
    if len(dataset) == 0:
        raise ValueError(f"{role} is empty: nothing to train or evaluate on")
    columns = list(dataset.column_names) if is_hf_dataset(dataset) else list(_first(dataset, role))
    main_input = getattr(model, "main_input_name", "input_ids")
    accepted = {main_input, "inputs_embeds"} if main_input == "input_ids" else {main_input}
    if remove_unused_columns and not accepted & set(columns):
        # with remove_unused_columns=False the collator builds the inputs (images decoded per batch)
        hint = " (tokenize the 'text' column first)" if "text" in columns and main_input == "input_ids" else ""
        if main_input != "input_ids":
            hint = f" (or pass remove_unused_columns=False with a collator that builds {main_input!r})"
        raise ValueError(f"{role} has no {main_input!r} column{hint}; its columns are {columns}")
    if remove_unused_columns and is_hf_dataset(dataset):
        unused = [c for c in columns if c not in model_input_names(model) and c != "length"]
        if unused:
            logger.info("%s: dropping columns the model does not take: %s", role, unused)
            dataset = dataset.remove_columns(unused)
    return dataset


def label_column(dataset: Any) -> str | None:
    columns = dataset.column_names if is_hf_dataset(dataset) else list(_first(dataset, "dataset"))
    return next((c for c in LABEL_COLUMNS if c in columns), None)


def check_labels(dataset: Any, model: torch.nn.Module, role: str) -> None:
    """A model whose task reads a label column: the dataset must carry labels, all in ``[0, num_labels)`` (or -100).

    The task is the registry's (``modelcore.task_registry``); a causal LM's labels come from its collator.
    """
    from modelcore.task_registry import task_for_model

    task = task_for_model(model)
    if task is None or task.label_column is None:
        return
    column = label_column(dataset)
    if column is None:
        raise ValueError(f"{role} has no label column (one of {list(LABEL_COLUMNS)}) for {type(model).__name__}")
    num_labels = model.config.num_labels
    if num_labels == 1 or model.config.problem_type in ("regression", "multi_label_classification"):
        return
    values = dataset[column] if is_hf_dataset(dataset) else [dataset[i][column] for i in range(len(dataset))]
    flat = torch.as_tensor(_flatten(values))
    bad = (flat != -100) & ((flat < 0) | (flat >= num_labels))
    if bool(bad.any()):
        raise ValueError(
            f"{role} column {column!r} has label {int(flat[bad][0])} outside [0, {num_labels}) "
            f"(num_labels={num_labels}); set num_labels or fix the data"
        )


def make_loader(dataset: Dataset, batch_sampler: Any, collator: Any, num_workers: int) -> DataLoader:
    """A DataLoader over our batch sampler; its own generator keeps the global RNG untouched (exact resume)."""
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collator,
        num_workers=num_workers,
        generator=torch.Generator(),
        pin_memory=torch.cuda.is_available(),
    )


def _first(dataset: Any, role: str) -> dict:
    item = dataset[0]
    if not isinstance(item, dict):
        raise ValueError(f"{role} items must be dicts of features, got {type(item).__name__}")
    return item


def _flatten(values: Sequence) -> list:
    out: list = []
    for v in values:
        if isinstance(v, (list, tuple)):
            out.extend(_flatten(v))
        else:
            out.append(int(v) if not isinstance(v, torch.Tensor) else int(v.item()))
    return out
