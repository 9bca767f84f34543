"""Command line for a flow: every field of its parameter model as a flag, or a params file.

    python -m flows.retrain --learning-rate 3e-5 --export-formats safetensors onnx
    python -m flows.retrain --params-file params.yaml --max-steps 50     # flags override the file

Nested fields (``training.learning_rate``) get flat flags (``--learning-rate``). A bad value is
reported naming the field, before anything runs; the run ends with a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tasks import settings, warmup


def _fields(
    model: type[BaseModel], prefix: tuple[str, ...] = (), flag_prefix: str = ""
) -> list[tuple[tuple[str, ...], Any, str]]:
    """(path, FieldInfo, flag) of every leaf field; nested models are walked.

    A nested model's fields are flags of their own name (``--learning-rate``), or prefixed when the field holding
    the model says so with ``json_schema_extra={"flag_prefix": "lora"}`` (``--lora-r``).
    """
    leaves = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            leaves += _fields(annotation, (*prefix, name), str(extra.get("flag_prefix", "")))
        else:
            flag = "--" + (f"{flag_prefix}-" if flag_prefix else "") + name.replace("_", "-")
            leaves.append(((*prefix, name), info, flag))
    return leaves


def _without_none(annotation: Any) -> Any:
    """``X`` for ``X | None`` (and ``Optional[X]``); anything else as it is."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def build_parser(model: type[BaseModel], prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=(model.__doc__ or "").strip())
    parser.add_argument(
        "--params-file", type=Path, help="YAML or JSON file with parameter values (nested as the model)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON only")
    for path, info, flag in _fields(model):
        annotation = _without_none(info.annotation)  # an empty field (None) takes the task's default
        origin = typing.get_origin(annotation)
        kwargs: dict[str, Any] = {"dest": ".".join(path), "default": argparse.SUPPRESS, "help": info.description}
        if annotation is not bool:
            kwargs["metavar"] = path[-1].upper()
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is list:
            kwargs["nargs"] = "*"
        parser.add_argument(flag, **kwargs)
    return parser


def parse_params(model: type[BaseModel], argv: Sequence[str] | None, prog: str) -> tuple[BaseModel, argparse.Namespace]:
    """Parameter values from the file, then the flags, validated by ``model``.

    Raises:
        SystemExit(2): with the field and the reason, on a bad file or value.
    """
    parser = build_parser(model, prog)
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    if args.params_file is not None:
        try:
            loaded = yaml.safe_load(args.params_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            parser.error(f"{args.params_file}: {error}")
        if not isinstance(loaded, dict):
            parser.error(f"{args.params_file}: expected a mapping of parameter names to values")
        values = loaded
    for key, value in vars(args).items():
        if key in ("params_file", "json"):
            continue
        *parents, leaf = key.split(".")
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    try:
        return model.model_validate(values), args
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        parser.error(f"invalid parameters: {problems}")


def main(
    flow_fn: Callable[..., dict[str, Any]],
    model: type[BaseModel],
    prog: str,
    argv: Sequence[str] | None = None,
    warm_up: bool = False,
) -> int:
    """Parse, run ``flow_fn(params)`` and print its summary; returns the exit code.

    ``warm_up``: import the heavy libraries and create the local MLflow store while Prefect's
    temporary server starts (``tasks.warmup``; the flow must call ``warmup.wait()`` first).
    """
    params, args = parse_params(model, argv, prog=prog)
    if warm_up:
        warmup.start(settings.tracking_uri())
    summary = flow_fn(params)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_summary(summary))
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    lines = ["", "retrain: done"]
    for key, value in summary.get("metrics", {}).items():
        lines.append(f"  {key:<22} {value:.4f}")
    if "version" in summary:
        aliases = ", ".join(summary.get("aliases") or []) or "none"
        lines.append(
            f"  {'registered':<22} {summary['registered_model']} version {summary['version']} (aliases: {aliases})"
        )
        lines.append(f"  {'champion':<22} version {summary.get('champion_version')} - {summary.get('promotion')}")
    elif "registration" in summary:
        lines.append(f"  {'registered':<22} no: {summary['registration']}")
    if summary.get("data"):
        data = summary["data"]
        dropped = ", ".join(f"{n} {reason}" for reason, n in data.get("dropped", {}).items()) or "none"
        lines.append(f"  {'data rows':<22} {data.get('rows_read')} read, dropped: {dropped}")
    if summary.get("resumed_from"):
        resumed = summary["resumed_from"]
        lines.append(
            f"  {'resumed':<22} from {resumed.get('checkpoint') or 'the start'} "
            f"(unfinished MLflow run {resumed.get('mlflow_run_id')})"
        )
    lines.append(f"  {'tokenization cache':<22} {summary.get('tokenization_cache')}")
    lines.append(f"  {'mlflow run':<22} {summary.get('mlflow_run_id')}")
    if summary.get("timings_s"):
        lines.append(f"  {'stage seconds':<22} {summary['timings_s']}")
    uri = summary.get("tracking_uri") or settings.tracking_uri()
    if uri.startswith(("http://", "https://")):
        lines.append(f"  open the MLflow UI at {uri}")
    else:
        lines.append(f"  open the MLflow UI:  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
    pull = f"models:/{summary.get('registered_model')}@champion"
    env = "" if os.environ.get("MLFLOW_TRACKING_URI") == uri else f"MLFLOW_TRACKING_URI={uri} "
    task = summary.get("task", "text-classification")
    examples = {"causal-lm": ("text-generation", "The river"), "image-classification": (task, "path/to/image.png")}
    pipeline_task, example = examples.get(task, (task, "what a film"))
    code = f"import modelcore; print(modelcore.pipeline('{pipeline_task}', model='{pull}')('{example}'))"
    lines.append(f'  pull the champion:   {env}python -c "{code}"')
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run a flow module instead, e.g. python -m flows.retrain")
