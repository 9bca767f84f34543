"""``report.json``: what a quantization or export kept of the model's behaviour, and what it gained.

Every conversion (``modelcore.quantization``, ``modelcore.exporters``) measures the same things on
the original and the converted model and writes one :class:`ConversionReport` next to its output.
"""

from __future__ import annotations

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
