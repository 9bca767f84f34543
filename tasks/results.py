"""What the stages hand each other: frozen, typed results (paths and numbers, never models or DataFrames)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    """

    checkpoint: str
    train_log: str
    global_step: int
    train_loss: float
    train_runtime: float
    pending_metrics: str | None = None
    resumed_from: str | None = None
    adapter: str | None = None


@dataclass(frozen=True)
class Evaluation:
    """Held-out metrics (with the baseline's as ``baseline_<metric>``) and the report directory."""

    metrics: dict[str, float] = field(default_factory=dict)
    report_dir: str = ""
