"""What the stages hand each other: frozen, typed results (paths and numbers, never models or DataFrames)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainResult:
    """A fine-tuning run's outcome.

    Args:
        checkpoint: the final checkpoint directory (a LoRA run's adapters merged in).
        train_log: the Trainer's JSON-lines log (loss per logging step).
        global_step: optimizer steps taken.
        train_loss: mean training loss.
        train_runtime: seconds in ``Trainer.train``.
        pending_metrics: metrics the tracking server missed, to replay; None when none.
        resumed_from: the checkpoint training resumed from; None for a fresh start.
        adapter: a LoRA run's adapters in peft's layout; None otherwise.
        nodes: machines the training ran on (``tasks.distributed``); 1: in the task's process.
        restarts: times training started again after a failure (a lost node, failed workers), each from the newest
            checkpoint.
        time_lost_s: seconds the restarts cost: from reaching the step each resumed at to training going again.
    """

    checkpoint: str
    train_log: str
    global_step: int
    train_loss: float
    train_runtime: float
    pending_metrics: str | None = None
    resumed_from: str | None = None
    adapter: str | None = None
    nodes: int = 1
    restarts: int = 0
    time_lost_s: float = 0.0


@dataclass(frozen=True)
class Evaluation:
    """Held-out metrics (with the baseline's as ``baseline_<metric>``) and the report directory."""

    metrics: dict[str, float] = field(default_factory=dict)
    report_dir: str = ""


@dataclass(frozen=True)
class ExportCheck:
    """One export and how it compared with the eager model it came from.

    Args:
        path: the export's directory.
        passed: whether it is kept (logged and registered beside the model).
        max_abs_logit_diff: the largest logit difference from the eager model on the check inputs.
        metric_before, metric_after: the task's deciding metric on held-out data, eager and exported.
        size_ratio, speedup: exported size / eager size, eager latency / exported latency.
        shards: the safetensors files of a sharded export.
    """

    path: str
    passed: bool = True
    max_abs_logit_diff: float | None = None
    metric_before: float | None = None
    metric_after: float | None = None
    size_ratio: float | None = None
    speedup: float | None = None
    shards: tuple[str, ...] = ()

    def figures(self) -> dict[str, Any]:
        """Everything measured (not the path), for the run's summary."""
        return {k: v for k, v in asdict(self).items() if k != "path" and v is not None and v != ()}
