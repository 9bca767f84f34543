"""TrainingArguments: the Trainer's hyperparameters as one grouped, validated, serializable dataclass."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from modelcore.serialization.atomic import atomic_write_text
from modelcore.typecheck import matches, non_finite_path, type_name

OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")
LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
EVAL_STRATEGIES = ("no", "steps", "epoch")
SAVE_STRATEGIES = ("no", "steps", "epoch", "best")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
REPORT_INTEGRATIONS = ("mlflow",)  # what report_to="all" expands to


@dataclasses.dataclass(kw_only=True)
class TrainingArguments:
    """Everything the Trainer loop needs to know, grouped as below; names follow transformers.

    Groups: output, batches & length, optimizer, schedule, precision & speed, evaluation,
    checkpoints, logging, reproducibility, distillation (read by the distillation trainer).

    Every field is checked in ``__post_init__``; a bad value raises ``ValueError`` naming the
    field. ``from_dict`` / ``from_json_file`` / ``from_yaml_file`` reject unknown keys, so a typo
    in a params file is an error, not a silently ignored setting.

    Where we differ from transformers:

    * ``group_by_length=True`` draws each batch from examples of similar length (shuffled
      mega-batches, as transformers does); it reads ``length_column_name`` when the dataset has it
      and measures ``input_ids`` otherwise. It is off by default, as in transformers: random batches
      keep their statistics, and padding-free BERT training already skips the padding they carry.
    * ``optim`` defaults to ``adamw_torch_fused``; only the two torch AdamW variants exist.
    * ``eval_strategy="steps"`` needs ``eval_steps`` (transformers falls back to ``logging_steps``).
    * ``report_to`` defaults to ``[]`` (transformers reports to every installed integration);
      ``"all"`` means every integration we have (``mlflow``).
    * ``log_level`` defaults to ``"info"`` and there is no ``"passive"``.
    * Fewer fields: no hub, deepspeed/FSDP, TPU or per-backend knobs.

    Semantics kept from transformers: ``max_steps > 0`` overrides ``num_train_epochs``;
    ``warmup_steps > 0`` overrides ``warmup_ratio``; ``eval_steps`` in (0, 1) is a fraction of
    the total training steps; setting ``torch_compile_mode`` turns ``torch_compile`` on;
    ``load_best_model_at_end`` or ``save_strategy="best"`` default ``metric_for_best_model`` to
    ``"loss"``; ``greater_is_better`` left None is False for metric names ending in "loss", else True.
    """

    # ------------------------------------------------------------- output
    output_dir: str
    overwrite_output_dir: bool = False
    run_name: str | None = None

    # ------------------------------------------------------------- batches & length
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    dataloader_drop_last: bool = False
    dataloader_num_workers: int = 0
    group_by_length: bool = False
    length_column_name: str = "length"
    remove_unused_columns: bool = True
    label_names: list[str] | None = None

    # ------------------------------------------------------------- optimizer
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0  # 0 or None: no clipping
    optim: str = "adamw_torch_fused"
    # > 0: the Trainer's loss is the label-smoothed cross-entropy of the logits (labels -100 skipped, next-token
    # for causal LMs), as transformers' LabelSmoother computes it, instead of the model's own loss
    label_smoothing_factor: float = 0.0

    # ------------------------------------------------------------- schedule
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    warmup_steps: int = 0  # > 0 overrides warmup_ratio

    # ------------------------------------------------------------- precision & speed
    bf16: bool = False
    fp16: bool = False
    torch_compile: bool = False
    torch_compile_mode: str | None = None
    gradient_checkpointing: bool = False

    # ------------------------------------------------------------- evaluation
    eval_strategy: str = "no"
    eval_steps: int | float | None = None  # an int >= 1, or a fraction in (0, 1) of the total steps
    prediction_loss_only: bool = False

    # ------------------------------------------------------------- checkpoints
    save_strategy: str = "steps"
    save_steps: int = 500
    save_total_limit: int | None = None
    load_best_model_at_end: bool = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    save_only_model: bool = False

    # ------------------------------------------------------------- logging
    logging_steps: int = 50
    logging_first_step: bool = False
    report_to: list[str] = dataclasses.field(default_factory=list)
    disable_tqdm: bool = False
    log_level: str = "info"

    # ------------------------------------------------------------- reproducibility
    seed: int = 42
    data_seed: int | None = None
    full_determinism: bool = False

    # ------------------------------------------------------------- distillation
    distillation_alpha: float = 0.5  # weight of the distillation loss; 1 - alpha goes to the hard labels
    distillation_temperature: float = 2.0

    def __post_init__(self) -> None:
        self._normalize()
        self._check_types()
        self.validate()
        self._fill_derived()

    # ------------------------------------------------------------- validation
    def _normalize(self) -> None:
        """Accept the convenient spellings: a path for output_dir, a str or None for report_to, tuples."""
        if isinstance(self.output_dir, os.PathLike):
            self.output_dir = os.fspath(self.output_dir)
        self.report_to = _normalize_report_to(self.report_to)
        if isinstance(self.label_names, tuple):
            self.label_names = list(self.label_names)

    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value, hint = getattr(self, field.name), hints[field.name]
            if not matches(value, hint):
                raise ValueError(f"{field.name} must be {type_name(hint)}, got {value!r} ({type(value).__name__})")
            if non_finite_path(value, field.name) is not None:  # NaN passes range checks written as comparisons
                raise ValueError(f"{field.name} must be a finite number, got {value!r}")
            if _is_float_field(hint) and isinstance(value, int):
                setattr(self, field.name, float(value))  # 3 and 3.0 epochs are the same setting

    def validate(self) -> None:
        """Check every constraint; raise ``ValueError`` naming the field. Run again after edits."""
        if not self.output_dir.strip():
            raise ValueError("output_dir must be a non-empty path")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            _require(self, name, getattr(self, name) >= 1, ">= 1")
        for name in ("logging_steps", "save_steps"):
            _require(self, name, getattr(self, name) >= 1, ">= 1")
        _require(self, "max_steps", self.max_steps == -1 or self.max_steps >= 1, "-1 (use epochs) or >= 1")
        if self.max_steps <= 0:
            _require(self, "num_train_epochs", self.num_train_epochs > 0, "> 0 (or set max_steps)")
        _require(self, "dataloader_num_workers", self.dataloader_num_workers >= 0, ">= 0")

        _require(self, "learning_rate", self.learning_rate >= 0, ">= 0")
        _require(self, "weight_decay", self.weight_decay >= 0, ">= 0")
        for name in ("adam_beta1", "adam_beta2"):
            _require(self, name, 0 <= getattr(self, name) < 1, "in [0, 1)")
        _require(self, "adam_epsilon", self.adam_epsilon > 0, "> 0")
        if self.max_grad_norm is not None:
            _require(self, "max_grad_norm", self.max_grad_norm >= 0, ">= 0 (0 or None disables clipping)")
        _require_one_of(self, "optim", OPTIMIZERS)
        _require(self, "label_smoothing_factor", 0 <= self.label_smoothing_factor < 1, "in [0, 1) (0: off)")

        _require_one_of(self, "lr_scheduler_type", LR_SCHEDULERS)
        _require(self, "warmup_ratio", 0 <= self.warmup_ratio <= 1, "in [0, 1]")
        _require(self, "warmup_steps", self.warmup_steps >= 0, ">= 0")

        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 cannot both be True; pick one mixed precision")
        if self.torch_compile_mode is not None:
            _require_one_of(self, "torch_compile_mode", TORCH_COMPILE_MODES)

        _require_one_of(self, "eval_strategy", EVAL_STRATEGIES)
        if self.eval_strategy == "steps" and self.eval_steps is None:
            raise ValueError("eval_steps must be set when eval_strategy is 'steps'")
        if self.eval_steps is not None:
            steps = self.eval_steps
            ok = (isinstance(steps, int) and steps >= 1) or (isinstance(steps, float) and 0 < steps < 1)
            _require(self, "eval_steps", ok, "an int >= 1 or a fraction in (0, 1)")

        _require_one_of(self, "save_strategy", SAVE_STRATEGIES)
        if self.save_total_limit is not None:
            _require(self, "save_total_limit", self.save_total_limit >= 1, ">= 1 or None")
        if self.save_strategy == "best" and self.eval_strategy == "no":
            raise ValueError("save_strategy 'best' needs evaluations: set eval_strategy to 'steps' or 'epoch'")
        if self.load_best_model_at_end:
            self._check_load_best()

        _require_one_of(self, "log_level", LOG_LEVELS)
        if self.data_seed is not None:
            _require(self, "data_seed", self.data_seed >= 0, ">= 0 or None")
        _require(self, "seed", self.seed >= 0, ">= 0")

        _require(self, "distillation_alpha", 0 <= self.distillation_alpha <= 1, "in [0, 1]")
        _require(self, "distillation_temperature", self.distillation_temperature > 0, "> 0")

    def _check_load_best(self) -> None:
        if self.eval_strategy == "no":
            raise ValueError("load_best_model_at_end needs evaluations: set eval_strategy to 'steps' or 'epoch'")
        if self.save_strategy != "best" and self.save_strategy != self.eval_strategy:
            raise ValueError(
                "load_best_model_at_end needs save_strategy to match eval_strategy (or be 'best'), got "
                f"save_strategy={self.save_strategy!r}, eval_strategy={self.eval_strategy!r}"
            )
        # A fractional eval_steps is only known at train time; the Trainer checks it there.
        if self.save_strategy == "steps" and isinstance(self.eval_steps, int) and self.save_steps % self.eval_steps:
            raise ValueError(
                "load_best_model_at_end needs save_steps to be a multiple of eval_steps, got "
                f"save_steps={self.save_steps}, eval_steps={self.eval_steps}"
            )

    def _fill_derived(self) -> None:
        """The transformers defaults that depend on other fields."""
        if self.torch_compile_mode is not None:
            self.torch_compile = True
        if self.metric_for_best_model is None and (self.load_best_model_at_end or self.save_strategy == "best"):
            self.metric_for_best_model = "loss"
        if self.greater_is_better is None and self.metric_for_best_model is not None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")

    # ------------------------------------------------------------- derived values
    @property
    def mixed_precision(self) -> str:
        """``"bf16"``, ``"fp16"`` or ``"no"``, as accelerate names them."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "no"

    def global_train_batch_size(self, world_size: int = 1) -> int:
        """Examples per optimizer step over all processes: per device x accumulation x world size."""
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * world_size

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """Warmup length in optimizer steps: ``warmup_steps`` if > 0, else ``ceil(warmup_ratio * steps)``."""
        return self.warmup_steps if self.warmup_steps > 0 else math.ceil(self.warmup_ratio * num_training_steps)

    def get_eval_steps(self, num_training_steps: int) -> int | None:
        """``eval_steps`` in optimizer steps, resolving a fraction against ``num_training_steps``."""
        if isinstance(self.eval_steps, float):
            return max(1, math.ceil(self.eval_steps * num_training_steps))
        return self.eval_steps

    # ------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """Every field, in declaration order (so files read group by group)."""
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_json_file(self, path: str | os.PathLike) -> None:
        atomic_write_text(Path(path), self.to_json_string())

    def to_yaml_file(self, path: str | os.PathLike) -> None:
        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingArguments:
        """Build from a dict; an unknown key is a ``ValueError`` listing it (with a near match, if any)."""
        names = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, names, n=1)
                hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
            raise ValueError(f"unknown TrainingArguments keys: {', '.join(hints)}")
        return cls(**data)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> TrainingArguments:
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        return cls.from_dict(_mapping(data, path))

    @classmethod
    def from_yaml_file(cls, path: str | os.PathLike) -> TrainingArguments:
        """Read YAML safely; unlike plain PyYAML, ``1e-4`` reads as a float (as in YAML 1.2), not a string."""
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = yaml.load(text, Loader=_SafeLoader)  # a SafeLoader subclass: no arbitrary objects
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from err
        return cls.from_dict(_mapping(data or {}, path))


# ------------------------------------------------------------------- helpers
class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads exponent floats without a dot (``5e-5``), as YAML 1.2 does."""


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _mapping(data: Any, path: str | os.PathLike) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of argument names to values, got {type(data).__name__}")
    return data


def _normalize_report_to(value: Any) -> Any:
    """None / "none" -> [], "all" -> every integration, a str -> [str]; unknown names are errors."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"report_to must be a str or a list of str, got {value!r}")
    if "none" in names:
        if len(names) > 1:
            raise ValueError(f"report_to cannot mix 'none' with integrations, got {list(names)}")
        return []
    if "all" in names:
        return list(REPORT_INTEGRATIONS)
    unknown = [n for n in names if n not in REPORT_INTEGRATIONS]
    if unknown:
        raise ValueError(
            f"report_to got unknown integrations {unknown}; known: none, all, {', '.join(REPORT_INTEGRATIONS)}"
        )
    return list(dict.fromkeys(names))


def _require(args: TrainingArguments, name: str, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {getattr(args, name)!r}")


def _require_one_of(args: TrainingArguments, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(args, name)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _is_float_field(hint: Any) -> bool:
    """``float`` or ``float | None``: ints given there are stored as floats."""
    return hint is float or (isinstance(hint, types.UnionType) and set(typing.get_args(hint)) == {float, type(None)})
