"""Trainer callbacks: hooks called at fixed points of the loop, with the shared state and control.

The hook names and the ``(args, state, control, **kwargs)`` signature follow transformers, so
callbacks written for its Trainer port with little change. A hook may flip flags on ``control``
(stop, save, evaluate, log); it must not touch the model or the optimizer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcore.serialization.atomic import atomic_write_text

if TYPE_CHECKING:
    from modelcore.trainer.arguments import TrainingArguments

logger = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"


@dataclasses.dataclass
class TrainerState:
    """What the loop knows about its progress; saved in every checkpoint as ``trainer_state.json``.

    ``global_step`` counts optimizer updates; ``epoch`` is fractional (1.5 = half way through the
    second epoch); ``log_history`` holds every logged dict, each with its ``step``.
    """

    epoch: float = 0.0
    global_step: int = 0
    max_steps: int = 0
    num_train_epochs: int = 0
    steps_per_epoch: int = 0
    train_batch_size: int = 0  # global batch per optimizer step (all processes, all accumulation steps)
    log_history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_metric: float | None = None
    best_model_checkpoint: str | None = None
    is_world_process_zero: bool = True
    total_flos: float = 0.0
    model_fingerprint: str = ""  # architecture + shapes, to refuse resuming another model's checkpoint

    def save_to_json(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load_from_json(cls, path: str | Path) -> TrainerState:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclasses.dataclass
class TrainerControl:
    """Flags callbacks set to steer the loop; the loop resets each after acting on it."""

    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False


class TrainerCallback:
    """Base class: override the hooks you need. Every hook gets ``(args, state, control, **kwargs)``.

    kwargs carry what the moment has: ``model``, ``optimizer``, ``lr_scheduler``, ``metrics``
    (on_evaluate), ``logs`` (on_log), ``checkpoint`` (on_save: the directory written).
    """

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        pass

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        pass

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        pass

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        pass

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        pass

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        pass

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        pass

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        pass

    def on_predict(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        pass

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        pass

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        pass


class CallbackHandler:
    """Calls each callback's hook in order; a hook returning a TrainerControl replaces the current one."""

    def __init__(self, callbacks: list[TrainerCallback]) -> None:
        self.callbacks: list[TrainerCallback] = []
        for callback in callbacks:
            self.add(callback)

    def add(self, callback: TrainerCallback | type[TrainerCallback]) -> None:
        instance = callback() if isinstance(callback, type) else callback
        if any(type(c) is type(instance) for c in self.callbacks):
            logger.warning("callback %s added twice", type(instance).__name__)
        self.callbacks.append(instance)

    def call(self, event: str, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        for callback in self.callbacks:
            result = getattr(callback, event)(args, state, control, **kwargs)
            if result is not None:
                control = result
        return control


class ProgressCallback(TrainerCallback):
    """A tqdm bar over optimizer steps (rank 0 only), showing the latest loss."""

    def __init__(self) -> None:
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and not args.disable_tqdm:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LoggingCallback(TrainerCallback):
    """Sends every log dict to ``logging`` as one readable line (step of the total, epoch, the numbers, the pace and
    the time left) and appends it, as one JSON line, to ``output_dir/log.jsonl``."""

    def __init__(self) -> None:
        self.started: tuple[float, int] | None = None  # (monotonic time, step) when this training began

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = (time.monotonic(), state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch, 4), **logs}
        logger.info("%s", progress_line(record, state.max_steps, self.started))
        path = Path(args.output_dir) / "log.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def progress_line(record: dict[str, Any], max_steps: int, started: tuple[float, int] | None = None) -> str:
    """``step 50/945 (5%), epoch 0.79: loss 2.1923, learning_rate 0.001032, grad_norm 4.211 | 6.1 steps/s, 2m27s
    left`` from a log record (the pace and time left once a step was timed)."""
    step = record["step"]
    head = f"step {step}/{max_steps} ({100 * step / max_steps:.0f}%)" if max_steps > 0 else f"step {step}"
    numbers = ", ".join(f"{key} {_number(value)}" for key, value in record.items() if key not in ("step", "epoch"))
    line = f"{head}, epoch {record.get('epoch', 0):.2f}: {numbers}"
    if started is not None and step > started[1]:
        rate = (step - started[1]) / max(time.monotonic() - started[0], 1e-9)
        left = (max_steps - step) / rate if max_steps > step else 0.0
        line += f" | {rate:.3g} steps/s, {_duration(left)} left"
    return line


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return str(value)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class EarlyStoppingCallback(TrainerCallback):
    """Stop when ``args.metric_for_best_model`` has not improved for ``patience`` evaluations.

    Args:
        patience: evaluations without improvement tolerated.
        threshold: the least change that counts as an improvement.
    """

    def __init__(self, patience: int = 3, threshold: float = 0.0) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.threshold = threshold
        self.best: float | None = None
        self.bad_evaluations = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if args.metric_for_best_model is None:
            raise ValueError("EarlyStoppingCallback needs TrainingArguments.metric_for_best_model")
        if args.eval_strategy == "no":
            raise ValueError("EarlyStoppingCallback needs evaluations: set eval_strategy to 'steps' or 'epoch'")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = metric_value(metrics or {}, args.metric_for_best_model)
        if value is None:
            logger.warning("early stopping: metric %r not in %s", args.metric_for_best_model, sorted(metrics or {}))
            return
        if self.best is None or is_better(value, self.best, args.greater_is_better, self.threshold):
            self.best = value
            self.bad_evaluations = 0
        else:
            self.bad_evaluations += 1
            if self.bad_evaluations >= self.patience:
                logger.info(
                    "early stopping at step %d: no improvement in %d evaluations", state.global_step, self.patience
                )
                control.should_training_stop = True


def metric_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """Look up ``name`` in evaluation metrics, with or without the ``eval_`` prefix."""
    if name is None:
        return None
    for key in (name, f"eval_{name}", name.removeprefix("eval_")):
        if key in metrics and isinstance(metrics[key], (int, float)) and math.isfinite(metrics[key]):
            return float(metrics[key])
    return None


def is_better(value: float, best: float, greater_is_better: bool, threshold: float = 0.0) -> bool:
    return value > best + threshold if greater_is_better else value < best - threshold
