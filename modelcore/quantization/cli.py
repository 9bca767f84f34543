"""``modelcore quantize METHOD SRC DST``: quantize a checkpoint, save it, and write ``report.json``.

modelcore quantize bnb_nf4 ./fine-tuned ./fine-tuned-nf4 --compute-dtype bfloat16 --double-quant
modelcore quantize int8_dynamic ./fine-tuned ./fine-tuned-int8 --eval-data heldout.jsonl --threads 2
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from modelcore.quantization.config import COMPUTE_DTYPES
from modelcore.quantization.registry import QUANTIZERS
from modelcore.reports import add_report_arguments


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``quantize`` verb."""
    parser = subparsers.add_parser(
        "quantize",
        help="quantize a checkpoint (bitsandbytes 8-bit / 4-bit, CPU int8)",
        description="Quantize the checkpoint SRC with METHOD into DST, then measure both and write DST/report.json.",
    )
    parser.add_argument("method", metavar="METHOD", help=f"one of: {', '.join(sorted(QUANTIZERS))}")
    parser.add_argument("source", metavar="SRC", help="full-precision checkpoint: directory, asset name or MLflow URI")
    parser.add_argument("output", metavar="DST", help="directory for the quantized checkpoint")
    parser.add_argument("--compute-dtype", choices=COMPUTE_DTYPES, help="bnb 4-bit: the dtype matmuls compute in")
    parser.add_argument("--double-quant", action="store_true", help="bnb 4-bit: quantize the absmax values too")
    parser.add_argument("--threshold", type=float, help="bnb_8bit: LLM.int8 outlier threshold (0 disables it)")
    parser.add_argument(
        "--skip-modules", nargs="+", metavar="PATTERN", help="modules kept in full precision (default: the task head)"
    )
    parser.add_argument("--no-reduce-range", action="store_true", help="int8_dynamic: 8-bit activations (VNNI CPUs)")
    add_report_arguments(
        parser,
        no_report_help="only write the checkpoint; measure nothing",
        threads_help="torch threads while timing (default: torch's)",
    )
    parser.set_defaults(func=run)
    return parser


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields from the command-line flags that apply to the chosen method."""
    bnb_4bit = args.method in ("bnb_nf4", "bnb_fp4")
    given = {
        "bnb_4bit_compute_dtype": (args.compute_dtype, bnb_4bit),
        "bnb_4bit_use_double_quant": (args.double_quant or None, bnb_4bit),
        "llm_int8_threshold": (args.threshold, args.method == "bnb_8bit"),
        "reduce_range": (False if args.no_reduce_range else None, args.method == "int8_dynamic"),
    }
    options = {}
    for field, (value, applies) in given.items():
        if value is None:
            continue
        if not applies:
            raise ValueError(f"option for {field} does not apply to method {args.method}")
        options[field] = value
    if args.skip_modules:
        key = "modules_to_not_convert" if args.method == "int8_dynamic" else "llm_int8_skip_modules"
        options[key] = list(args.skip_modules)
    return options


def run(args: argparse.Namespace) -> int:
    from modelcore.quantization.convert import quantize_checkpoint
    from modelcore.quantization.registry import quantizer_class
    from modelcore.reports import report_options, report_summary

    quantizer_class(args.method)  # an unknown method fails before anything is loaded
    measure = report_options(args)
    report = quantize_checkpoint(args.source, args.output, args.method, options=options_from_args(args), **measure)
    summary: dict[str, Any] = {"output": args.output, "method": args.method}
    if report is not None:
        summary.update(report_summary(report))
    print(json.dumps(summary, indent=2))
    return 0
