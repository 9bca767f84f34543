"""``report.json``: what a quantization or export kept of the model's behaviour, and what it gained.

Every conversion (``modelcore.quantization``, ``modelcore.exporters``) measures the same things on
the original and the converted model and writes one :class:`ConversionReport` next to its output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelcore.serialization.atomic import atomic_write_text

REPORT_NAME = "report.json"


@dataclasses.dataclass
class Measurement:
    """One model's side of a report. Latency is per batch (median of the timed repeats)."""

    size_bytes: int
    metric: float | None = None
    latency_ms: float | None = None
    throughput: float | None = None  # samples per second at the measured batch size


@dataclasses.dataclass
class ConversionReport:
    """Before/after figures of one conversion; ``write`` stores it as ``report.json``.

    Args:
        kind: ``"quantize"`` or ``"export"``.
        method: the method or format name (``"bnb_nf4"``, ``"onnx"``, ``"onnx_int8"``...).
        source, output: the checkpoint converted and where the result lies.
        before, after: the measurements of the original and the converted model.
        max_abs_logit_diff: the largest absolute difference of their logits on the check batch.
        metric_name: what ``before.metric`` / ``after.metric`` measure (``"accuracy"``, ``"perplexity"``).
        settings: how it was measured (batch size, sequence length, threads, dataset, repeats).
    """

    kind: str
    method: str
    source: str
    output: str
    before: Measurement
    after: Measurement
    max_abs_logit_diff: float | None = None
    metric_name: str | None = None
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.before.size_bytes:
            data["size_ratio"] = self.after.size_bytes / self.before.size_bytes
        if self.before.latency_ms and self.after.latency_ms:
            data["speedup"] = self.before.latency_ms / self.after.latency_ms
        return data

    def write(self, directory: str | Path) -> Path:
        """Write ``directory/report.json`` atomically and return its path."""
        path = Path(directory) / REPORT_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> ConversionReport:
        data = json.loads((Path(directory) / REPORT_NAME).read_text(encoding="utf-8"))
        data.pop("size_ratio", None)
        data.pop("speedup", None)
        data["before"] = Measurement(**data["before"])
        data["after"] = Measurement(**data["after"])
        return cls(**data)


def directory_size(path: str | Path, suffixes: tuple[str, ...] = (".safetensors", ".onnx", ".data", ".bin")) -> int:
    """Bytes of the weight-bearing files under ``path`` (a file counts alone)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))


def time_call(fn: Callable[[], Any], *, warmup: int = 2, repeats: int = 10) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


# ----------------------------------------------------------------------------------- command line
REPORT_OPTIONS = ("eval_limit", "batch_size", "seq_len", "threads", "repeats")  # counts: each must be >= 1


def add_report_arguments(parser: argparse.ArgumentParser, *, no_report_help: str, threads_help: str) -> None:
    """The measuring flags that ``modelcore quantize`` and ``modelcore export onnx`` share."""
    parser.add_argument("--no-report", action="store_true", help=no_report_help)
    parser.add_argument(
        "--eval-data",
        metavar="DATA",
        help="validation data for the task metric: .jsonl/.json/.csv with 'text' (+ 'label'), or an asset name",
    )
    parser.add_argument("--eval-limit", type=int, metavar="N", help="use the first N validation examples")
    parser.add_argument("--batch-size", type=int, default=32, help="check batch for logits and timing (default 32)")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per row of the check batch (default 64)")
    parser.add_argument("--threads", type=int, help=threads_help)
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards per model (default 10)")


def report_options(args: argparse.Namespace) -> dict[str, Any]:
    """``report``, ``eval_data`` and the counts of ``add_report_arguments``, checked, as conversion keywords.

    Raises:
        ValueError: a count below 1, naming its flag.
    """
    for name in REPORT_OPTIONS:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return {"report": not args.no_report, "eval_data": args.eval_data} | {n: getattr(args, n) for n in REPORT_OPTIONS}


def report_summary(report: ConversionReport) -> dict[str, Any]:
    """The figures a CLI prints for one report."""
    data = report.to_dict()
    summary = {k: data.get(k) for k in ("method", "size_ratio", "speedup", "max_abs_logit_diff", "metric_name")}
    summary["metric"] = {"before": report.before.metric, "after": report.after.metric}
    return summary
