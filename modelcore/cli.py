"""The ``modelcore`` command: one verb per conversion, each a plain function in its own package.

    modelcore quantize METHOD SRC DST     (modelcore.quantization.cli)
    modelcore export onnx SRC DST         (modelcore.exporters.cli)

Each verb's package exposes ``add_parser(subparsers)``, which registers the verb and sets
``func`` on its parser; the function takes the parsed namespace and returns an exit code.
The verb modules are imported only when the command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# verb -> module that defines add_parser(subparsers)
VERBS: dict[str, str] = {
    "quantize": "modelcore.quantization.cli",
    "export": "modelcore.exporters.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelcore", description="Convert modelcore / Hugging Face checkpoints.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module_name in VERBS.values():
        importlib.import_module(module_name).add_parser(subparsers)
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


if __name__ == "__main__":
    sys.exit(main())
