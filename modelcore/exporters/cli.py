"""``modelcore export onnx SRC DST``: export a checkpoint to ONNX (optionally int8 too) and write ``report.json``.

    modelcore export onnx ./fine-tuned ./onnx --int8 --eval-data heldout.jsonl --threads 2
    modelcore export onnx smollm2-135m-gguf ./smollm-onnx --task text-generation

DST receives ``model.onnx`` + ``model.onnx.data``, config, tokenizer and ``report.json``; with
``--int8`` the int8 model goes to ``DST/int8`` with its own report (compared with the eager model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from modelcore.reports import add_report_arguments


def exportable_task_names() -> list[str]:
    """Names and aliases of the registry's tasks that declare an ONNX graph."""
    from modelcore.task_registry import all_tasks

    return [name for spec in all_tasks() if spec.onnx_graph for name in (spec.name, *spec.aliases)]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``export`` verb; each format is a sub-command with its own options (only ``onnx`` so far)."""
    parser = subparsers.add_parser("export", help="export a checkpoint to another format (ONNX)")
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    add_onnx_parser(formats)
    return parser


def add_onnx_parser(formats: Any) -> argparse.ArgumentParser:
    parser = formats.add_parser(
        "onnx",
        help="ONNX for onnxruntime (fp32, optionally int8 too)",
        description="Export the checkpoint SRC to ONNX in DST, check it against the eager model, write DST/report.json.",
    )
    parser.add_argument("source", metavar="SRC", help="checkpoint: directory, asset name, MLflow URI or .gguf file")
    parser.add_argument("output", metavar="DST", help="directory for the export")
    parser.add_argument("--task", choices=exportable_task_names(), help="default: from the checkpoint's architectures")
    parser.add_argument("--no-past", action="store_true", help="text-generation: no KV-cache inputs/outputs")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: torch's)")
    parser.add_argument("--no-optimize", action="store_true", help="keep the plain graph (no onnxruntime fusions)")
    parser.add_argument(
        "--int8", action="store_true", help="also write an int8 (dynamic quantization) model to DST/int8"
    )
    parser.add_argument("--per-tensor", action="store_true", help="int8: one weight scale per tensor, not per channel")
    parser.add_argument(
        "--no-reduce-range",
        action="store_true",
        help="int8: 8-bit weights, for VNNI CPUs only (default 7-bit: 8-bit products overflow on CPUs without VNNI)",
    )
    parser.add_argument("--atol", type=float, default=1e-4, help="largest logit difference from eager (default 1e-4)")
    add_report_arguments(
        parser,
        no_report_help="check the export, but measure nothing",
        threads_help="torch and onnxruntime threads while timing (default: torch's)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from modelcore.exporters.onnx_export import export_onnx
    from modelcore.exporters.onnx_quantize import quantize_onnx
    from modelcore.reports import ConversionReport, report_options, report_summary

    measure = report_options(args)
    if args.opset is not None and args.opset < 1:
        raise ValueError(f"--opset must be >= 1, got {args.opset}")
    if args.no_past and args.task == "text-classification":
        raise ValueError("--no-past applies to --task text-generation only")
    if Path(args.output).resolve() == Path(args.source).resolve():
        raise ValueError(f"DST must differ from SRC ({args.output})")
    output = export_onnx(
        args.source,
        args.output,
        task=args.task,
        with_past=not args.no_past,
        opset=args.opset,
        optimize=not args.no_optimize,
        atol=args.atol,
        **measure,
    )
    outputs = [output]
    if args.int8:
        per_channel, reduce_range = not args.per_tensor, not args.no_reduce_range
        if not args.no_report:  # the eager model's metric was just measured on the same data: not again
            measure["before_metric"] = ConversionReport.read(output).before.metric
        outputs.append(
            quantize_onnx(
                output,
                output / "int8",
                per_channel=per_channel,
                reduce_range=reduce_range,
                reference=args.source,
                **measure,
            )
        )
    summary = []
    for path in outputs:
        entry: dict[str, Any] = {"output": str(path)}
        if not args.no_report:
            entry.update(report_summary(ConversionReport.read(path)))
        summary.append(entry)
    print(json.dumps(summary, indent=2))
    return 0
