"""The ``modelcore`` command: one verb per conversion, each a plain function in its own package.

    modelcore quantize METHOD SRC DST       (modelcore.quantization.cli)
    modelcore export onnx SRC DST           (modelcore.exporters.cli)
    modelcore pipeline TASK MODEL INPUT...  (here: the pipeline's output as JSON)
    modelcore generate MODEL PROMPT         (here: streams the continuation)

Each conversion verb's package exposes ``add_parser(subparsers)``, which registers the verb and sets
``func`` on its parser; the function takes the parsed namespace and returns an exit code. The two
inference verbs are defined below. torch and the models are imported only when a command runs, so
``--help`` stays fast. ``python -m modelcore`` runs the same command.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

# verb -> module that defines add_parser(subparsers)
VERBS: dict[str, str] = {
    "quantize": "modelcore.quantization.cli",
    "export": "modelcore.exporters.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelcore", description="Convert and run modelcore / Hugging Face checkpoints."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module_name in VERBS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    add_pipeline_parser(subparsers)
    add_generate_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:  # bad input: one clear line, no traceback
        print(f"modelcore {args.verb}: error: {error}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------ modelcore pipeline
def add_pipeline_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``pipeline TASK MODEL INPUT... [--top-k K] [--option KEY=VALUE]``."""
    parser = subparsers.add_parser(
        "pipeline",
        help="run a task pipeline on inputs and print its output as JSON",
        description="Build modelcore.pipeline(TASK, MODEL) and print its output for INPUT as JSON. One INPUT is "
        "passed as it is; several are passed as a list. With --json-input each INPUT is parsed as JSON first "
        '(question answering: \'{"question": "...", "context": "..."}\').',
    )
    parser.add_argument(
        "task", metavar="TASK", help="a task name or alias (text-classification, sentiment-analysis...)"
    )
    parser.add_argument("model", metavar="MODEL", help="checkpoint: directory, asset name or MLflow URI")
    parser.add_argument("inputs", metavar="INPUT", nargs="+", help="the text(s) to run the pipeline on")
    parser.add_argument("--top-k", type=positive_int, help="results per input, best first")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another keyword argument of the pipeline call (VALUE parsed as JSON when it is JSON, else a string)",
    )
    parser.add_argument("--json-input", action="store_true", help="parse each INPUT as JSON")
    parser.add_argument("--device", help="where to run (cpu, cuda:0); default: where the model loads")
    parser.add_argument("--dtype", help="weights' dtype when loading (auto, float32, bfloat16...)")
    parser.add_argument("--seed", type=int, help="seed torch before loading (a newly initialized head is then fixed)")
    parser.set_defaults(func=run_pipeline)
    return parser


def run_pipeline(args: argparse.Namespace) -> int:
    """Build the pipeline, call it on the inputs and print the result as JSON."""
    import torch

    from modelcore.pipelines import pipeline

    inputs = [parse_json_input(text) for text in args.inputs] if args.json_input else list(args.inputs)
    call_kwargs = dict(parse_option(option) for option in args.option)
    if args.top_k is not None:
        call_kwargs["top_k"] = args.top_k
    if args.seed is not None:
        torch.manual_seed(args.seed)
    try:
        task_pipeline = pipeline(args.task, args.model, device=args.device, dtype=args.dtype)
    except KeyError as error:  # an unknown task: the message lists the known ones
        raise ValueError(error.args[0]) from None
    result = task_pipeline(inputs[0] if len(inputs) == 1 else inputs, **call_kwargs)
    print(json.dumps(result, indent=2, ensure_ascii=False, default=to_json))
    return 0


def parse_json_input(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--json-input: INPUT {text!r} is not JSON ({error})") from None


def parse_option(option: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value); the value is JSON when it parses as JSON (``3``, ``true``), else the string."""
    key, sep, value = option.partition("=")
    if not sep or not key.isidentifier():
        raise ValueError(f"--option {option!r} is not KEY=VALUE with KEY a keyword argument name")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def to_json(value: Any) -> Any:
    """What json cannot write by itself: numpy scalars and arrays, tensors."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# ------------------------------------------------------------------ modelcore generate
def add_generate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``generate MODEL PROMPT [--max-new-tokens N] [--do-sample --temperature T --top-k K --top-p P]``."""
    parser = subparsers.add_parser(
        "generate",
        help="continue a prompt with a causal language model, streaming the text",
        description="Load MODEL (AutoModelForCausalLM and its tokenizer), continue PROMPT and print the "
        "continuation (without the prompt) as it is generated. Greedy unless --do-sample.",
    )
    parser.add_argument("model", metavar="MODEL", help="checkpoint: directory, GGUF file, asset name or MLflow URI")
    parser.add_argument("prompt", metavar="PROMPT", help="the text to continue")
    parser.add_argument("--max-new-tokens", type=positive_int, default=50, help="default 50")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of taking the most likely token")
    parser.add_argument("--temperature", type=float, help="sampling: divide the logits by T")
    parser.add_argument("--top-k", type=positive_int, help="sampling: keep the K most likely tokens")
    parser.add_argument("--top-p", type=float, help="sampling: keep the smallest set of tokens of probability >= P")
    parser.add_argument("--seed", type=int, help="seed torch's generator: the same seed samples the same text")
    parser.add_argument("--device", help="where to run (cpu, cuda:0); default: cpu")
    parser.add_argument("--dtype", default="auto", help="weights' dtype (auto keeps the stored one)")
    parser.set_defaults(func=run_generate)
    return parser


SAMPLING_FLAGS = {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p"}


def generation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``generate`` keyword arguments the flags set (the model's generation config supplies the rest)."""
    options: dict[str, Any] = {"max_new_tokens": args.max_new_tokens}
    sampling = {field: getattr(args, field) for field in SAMPLING_FLAGS if getattr(args, field) is not None}
    if sampling and not args.do_sample:
        flags = ", ".join(SAMPLING_FLAGS[field] for field in sampling)
        raise ValueError(f"{flags} only apply when sampling: add --do-sample")
    if args.do_sample:
        options |= {"do_sample": True, **sampling}
    return options


def run_generate(args: argparse.Namespace) -> int:
    """Load the model and tokenizer, generate, and print the continuation (streamed when ``generate`` can)."""
    import torch

    from modelcore.auto import AutoModelForCausalLM, AutoTokenizer
    from modelcore.generation.streamers import TextStreamer
    from modelcore.serialization.sources import resolve_source

    if not args.prompt.strip():
        raise ValueError("PROMPT is empty: give the text to continue")
    options = generation_options(args)
    directory = resolve_source(args.model)  # one resolution: model and tokenizer read the same files
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=args.dtype)
    if args.device:
        model.to(args.device)
    input_ids = tokenizer(args.prompt, return_tensors="pt").input_ids.to(model.device)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    if "streamer" in inspect.signature(model.generate).parameters:
        model.generate(
            input_ids, streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True), **options
        )
    else:  # this generate cannot stream: print the text once it is complete
        output = model.generate(input_ids, **options)
        print(tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True), flush=True)
    return 0


def positive_int(text: str) -> int:
    """An argparse ``type`` accepting integers >= 1 (argparse names the flag in the refusal)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
