"""The retraining flow's parameters: one pydantic model, whose defaults are the embedded demo.

The Prefect UI renders this model as the form of a manual run; the CLI (``python -m flows.retrain``)
takes the same fields as flags or from a params file. A bad value is rejected naming the field.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelcore.task_registry import UnknownTaskError, all_tasks, get_task

# The form's task choices: the registered tasks (aliases are accepted too, and become their task's name).
TaskName = Literal[tuple(spec.name for spec in all_tasks())]  # type: ignore[valid-type]

QUANTIZATION_METHODS = ("int8_dynamic", "bnb_8bit", "bnb_nf4", "bnb_fp4")
EXPORT_FORMATS = ("safetensors", "onnx", "onnx_int8")
# What a run takes for each field it leaves empty, per task. The form (Prefect's UI fills every field with its
# schema default) and the CLI leave these fields empty (None) by default, so choosing a task in the form is all it
# takes to get that task's model, data and training settings; a value given wins.
TRAINING_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 1.0,
    "max_steps": -1,
    "per_device_train_batch_size": 32,
    "learning_rate": 5e-5,
    "weight_decay": 0.0,
    "warmup_ratio": 0.0,
    "lr_scheduler_type": "linear",
    "logging_steps": 50,
    "save_steps": 100,
    "label_smoothing_factor": 0.0,
    "augment": False,
}
# text-classification: MiniLM-L6 fine-tuned on Rotten Tomatoes (the embedded demo).
TEXT_CLASSIFICATION_DEFAULTS: dict[str, Any] = {
    "base_model": "minilm-l6",
    "dataset": "rotten-tomatoes",
    "max_length": 64,
    "registered_model_name": "rotten-tomatoes-sentiment",
    "export_formats": ["safetensors", "onnx", "onnx_int8"],
    "lora": {"enabled": False},
    "training": TRAINING_DEFAULTS,
}
# causal-lm: SmolLM2-135M (dequantized from its GGUF) continued on Wikipedia article summaries with LoRA.
CAUSAL_LM_DEFAULTS: dict[str, Any] = {
    "base_model": "smollm2-135m-gguf",
    "dataset": "wikipedia-summaries",
    "max_length": 128,
    "max_examples": 600,
    "registered_model_name": "wikipedia-smollm2",
    "export_formats": ["safetensors"],
    "lora": {"enabled": True},
    "training": {
        **TRAINING_DEFAULTS,
        "max_steps": 40,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.1,
        "logging_steps": 5,
        "save_steps": 20,
    },
}
# image-classification: a small ViT (vit_mnist_patch4_28, 0.8M parameters) trained from scratch on the MNIST-5k
# digits (benchmarks/README: "ViT from scratch on MNIST-5k").
IMAGE_CLASSIFICATION_DEFAULTS: dict[str, Any] = {
    "base_model": "vit_mnist_patch4_28",
    "dataset": "mnist-5k",
    "max_length": 64,  # unused: images are not tokenized
    "registered_model_name": "mnist-vit",
    "export_formats": ["safetensors"],
    "lora": {"enabled": False},
    # benchmarks/bench_vit_mnist.py's recipe: 160,000 randomly moved digits (40 passes over ~4,000), label smoothing
    "training": {
        **TRAINING_DEFAULTS,
        "num_train_epochs": 40,
        "per_device_train_batch_size": 64,
        "learning_rate": 5e-4,
        "weight_decay": 0.05,
        "warmup_ratio": 0.1,
        "lr_scheduler_type": "cosine",
        "label_smoothing_factor": 0.1,
        "augment": True,
        "logging_steps": 25,
        "save_steps": 200,
    },
}
TASK_DEFAULTS = {
    "text-classification": TEXT_CLASSIFICATION_DEFAULTS,
    "causal-lm": CAUSAL_LM_DEFAULTS,
    "image-classification": IMAGE_CLASSIFICATION_DEFAULTS,
}


def _task_defaults_note(*path: str) -> str:
    """ "; empty: X (text-classification), Y (causal-lm), ..." for the field at ``path`` of the defaults tables."""
    values = []
    for task, defaults in TASK_DEFAULTS.items():
        value: Any = defaults
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        values.append(f"{'all' if value is None else value} ({task})")
    return "; empty: the task's default, " + ", ".join(values)


def _bounds_in_descriptions(schema: dict[str, Any], model: type | None = None) -> None:
    """Each property's limits appended to its description ("> 0, <= 1"), so a form that shows descriptions and
    not the schema's bounds still tells the user what is accepted."""
    symbols = (("exclusiveMinimum", ">"), ("minimum", ">="), ("exclusiveMaximum", "<"), ("maximum", "<="))
    for field in schema.get("properties", {}).values():
        typed = [field, *field.get("anyOf", [])]  # an optional field keeps its bounds in the non-null branch
        bounds = [f"{op} {t[key]:g}" for t in typed for key, op in symbols if isinstance(t.get(key), (int, float))]
        if bounds and field.get("description"):
            field["description"] += f" ({', '.join(bounds)})"


MIN_LOG_POINTS = 10  # the fewest loss points a run of max_steps logs: logging_steps shrinks to fit


class TrainingSettings(BaseModel):
    """The training arguments users tune (names as in ``TrainingArguments``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_bounds_in_descriptions)

    num_train_epochs: float | None = Field(
        None, gt=0, description="passes over the training split" + _task_defaults_note("training", "num_train_epochs")
    )
    max_steps: int | None = Field(
        None,
        ge=-1,
        description="stop after this many optimizer steps (overrides epochs); -1: run the epochs"
        + _task_defaults_note("training", "max_steps"),
    )
    per_device_train_batch_size: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="examples per optimizer step and process"
        + _task_defaults_note("training", "per_device_train_batch_size"),
    )
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="micro-batches summed per optimizer step")
    learning_rate: float | None = Field(
        None,
        gt=0,
        le=1.0,
        description="peak learning rate of AdamW (after warm-up)" + _task_defaults_note("training", "learning_rate"),
    )
    weight_decay: float | None = Field(
        None,
        ge=0,
        le=1.0,
        description="AdamW weight decay (not on biases and norms)" + _task_defaults_note("training", "weight_decay"),
    )
    warmup_ratio: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="share of the steps spent ramping the rate up from 0"
        + _task_defaults_note("training", "warmup_ratio"),
    )
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] | None = Field(
        None, description="how the rate moves after warm-up" + _task_defaults_note("training", "lr_scheduler_type")
    )
    max_grad_norm: float = Field(1.0, ge=0, description="clip the gradient norm to this; 0: no clipping")
    bf16: bool = Field(False, description="bf16 autocast (fast only where the CPU has AMX, or on GPU)")
    group_by_length: bool = Field(False, description="batches of similar length: faster, other batch statistics")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory for longer sequences, ~30% slower"
    )
    label_smoothing_factor: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="share of the target spread over the other classes (0: plain cross-entropy)"
        + _task_defaults_note("training", "label_smoothing_factor"),
    )
    augment: bool | None = Field(
        None,
        description="move each training image at random every time it is seen (rotation up to 10 degrees, scale "
        "0.9-1.1, shift up to 2 pixels); image tasks only" + _task_defaults_note("training", "augment"),
    )
    seed: int = Field(0, ge=0, description="seeds the new head's init, the shuffling, dropout and augmentation")
    logging_steps: int | None = Field(
        None,
        ge=1,
        description="log the loss and learning rate every N steps" + _task_defaults_note("training", "logging_steps"),
    )
    save_steps: int | None = Field(
        None,
        ge=1,
        description="checkpoint every N steps; a retried run resumes from the last"
        + _task_defaults_note("training", "save_steps"),
    )

    def to_training_arguments(self) -> dict[str, Any]:
        """The Trainer's arguments (a field left empty outside a ``RetrainParams``: text-classification's default); a
        run of ``max_steps`` logs at least ``MIN_LOG_POINTS`` times (a curve, not a dot)."""
        values = {
            key: TRAINING_DEFAULTS.get(key) if value is None else value for key, value in self.model_dump().items()
        }
        logging_steps = values["logging_steps"]
        if values["max_steps"] > 0:
            logging_steps = min(logging_steps, max(1, values["max_steps"] // MIN_LOG_POINTS))
        return {
            **values,
            "logging_steps": logging_steps,
            "save_strategy": "steps",
            "save_total_limit": 1,
            "eval_strategy": "no",
        }


class LoraSettings(BaseModel):
    """LoRA adapters (through peft) instead of full fine-tuning: only the adapters train, then merge for export."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_bounds_in_descriptions)

    enabled: bool | None = Field(
        None,
        description="train LoRA adapters on the target layers instead of every weight"
        + _task_defaults_note("lora", "enabled"),
    )
    r: int = Field(8, ge=1, le=256, description="the adapters' rank")
    alpha: int = Field(16, ge=1, description="scale numerator: the update is alpha / r * B @ A")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
        description="names of the linear layers to adapt (a Llama's attention and MLP projections)",
    )
    base_quantization: Literal["bnb_nf4", "bnb_fp4", "bnb_8bit"] | None = Field(
        None,
        description="QLoRA: hold the frozen base weights quantized (bitsandbytes) while the adapters train; the "
        "adapters are then merged into the full-precision base for the registered checkpoint",
    )


class DistributedSettings(BaseModel):
    """Training across machines: one torchrun agent per node, data-parallel (``tasks.distributed``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_bounds_in_descriptions)

    nodes: int = Field(1, ge=1, le=64, description="machines to train on; 1: in the flow's own process (as always)")
    nproc_per_node: int = Field(
        1, ge=1, le=64, description="training processes per node; the global batch is nodes x this x the batch size"
    )
    max_restarts: int = Field(
        3, ge=0, le=100, description="times a job may start again after a failure (a lost node), from its checkpoint"
    )
    platform: Literal["netns"] = Field(
        "netns",
        description="what starts one agent per node: netns, network namespaces on this machine (needs root; the "
        "stand-in of a cluster's Job, see infra/DISTRIBUTED.md)",
    )


class RetrainParams(BaseModel):
    """Everything a retraining run needs; the defaults fine-tune MiniLM-L6 on Rotten Tomatoes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_bounds_in_descriptions)

    task: TaskName = Field(
        "text-classification",
        description="what the model learns (a task of modelcore.task_registry): text-classification (a label per "
        "text), causal-lm (continue the base model on raw text, judged by held-out perplexity) or "
        "image-classification (a label per image)",
    )
    base_model: str | None = Field(
        None,
        min_length=1,
        description="directory, asset name or models:/ URI; for image-classification also a modelcore.create_model "
        "size (vit_mnist_patch4_28), trained from scratch" + _task_defaults_note("base_model"),
    )
    dataset: str | None = Field(
        None,
        min_length=1,
        description="dataset asset name or csv/json/parquet path; for image-classification also a folder of class "
        "sub-folders" + _task_defaults_note("dataset"),
    )
    registered_model_name: str | None = Field(
        None,
        description="the MLflow registered model that gets the new version (created if new); consumers pull "
        "models:/NAME@champion" + _task_defaults_note("registered_model_name"),
    )
    max_examples: int | None = Field(
        None,
        ge=2,
        description="use at most this many rows (documents) after the seeded shuffle: a quicker run"
        + _task_defaults_note("max_examples"),
    )
    training: TrainingSettings = Field(
        default_factory=TrainingSettings,
        title="Training",
        description="how long and how fast to train (fields left empty take the task's defaults)",
    )
    test_size: float = Field(0.2, gt=0, lt=1, description="held-out share after a seeded shuffle")
    split_seed: int = Field(0, ge=0, description="seed of the shuffle before the train/test split")
    max_length: int | None = Field(
        None, ge=8, le=8192, description="tokens per example (truncation)" + _task_defaults_note("max_length")
    )
    text_column: str = Field("text", min_length=1, description="the dataset column holding the text")
    image_column: str = Field(
        "image",
        min_length=1,
        description="the table column holding the image (image-classification): a file path, base64 text or bytes",
    )
    label_column: str = Field(
        "label", min_length=1, description="the dataset column holding the class (text-classification only)"
    )
    label_map: dict[str, str] = Field(
        default_factory=dict,
        description="raw label -> class name, applied first: folds look-alike names ({'Fresh': 'fresh'}) or names "
        "float/bool labels ({'1.0': 'pos'}); on the command line a JSON object",
    )
    allow_similar_labels: bool = Field(
        False, description="keep label names that look like typos of each other (fresh/Fresh/rotton) as classes"
    )
    lora: LoraSettings = Field(
        default_factory=LoraSettings,
        title="LoRA",
        description="train small adapters instead of every weight (causal-lm only)",
        json_schema_extra={"flag_prefix": "lora"},
    )
    distributed: DistributedSettings = Field(
        default_factory=DistributedSettings,
        title="Distributed",
        description="train on several nodes at once (data-parallel, torchrun); one node: in process",
        json_schema_extra={"flag_prefix": "distributed"},
    )
    export_formats: list[Literal["safetensors", "onnx", "onnx_int8"]] | None = Field(
        None,
        description="each export is checked against the eager model (logits, held-out accuracy) before it is logged"
        + _task_defaults_note("export_formats"),
    )
    quantization: list[Literal["int8_dynamic", "bnb_8bit", "bnb_nf4", "bnb_fp4"]] = Field(
        default_factory=list,
        description="quantized copies to make and check on the held-out data (kept only within their metric budget)",
    )
    max_shard_size: str = Field("50MB", description="shard size of the safetensors export")
    promotion_metric: str | None = Field(
        None, description="the evaluation metric a new champion must improve (default: the task's deciding one)"
    )
    min_gain: float = Field(0.0, ge=0, le=1, description="champion moves only when beaten by more than this")
    min_metric: float | None = Field(
        None, ge=0, le=1, description="a new champion needs at least this promotion metric (besides the baseline)"
    )
    register_model: bool = Field(
        True, description="register the trained model in MLflow (and maybe promote it); off: train and evaluate only"
    )
    experiment_name: str = Field("retrain", min_length=1, description="MLflow experiment the run is logged to")

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, values: Any) -> Any:
        """The fields a run leaves empty (absent or None) take its task's defaults (``TASK_DEFAULTS``); the nested
        training and LoRA settings field by field."""
        if not isinstance(values, dict):
            return values
        try:
            name = get_task(str(values.get("task") or "text-classification")).name
        except UnknownTaskError:
            return values  # the field validator names the bad task
        filled = dict(values)
        for key, default in TASK_DEFAULTS[name].items():
            given = filled.get(key)
            if isinstance(default, dict):
                if isinstance(given, BaseModel):
                    given = given.model_dump()
                given = {k: v for k, v in (given or {}).items() if v is not None}
                filled[key] = {**default, **given}
            elif given is None:
                filled[key] = default
        return filled

    @field_validator("task", mode="before")
    @classmethod
    def _registered_task(cls, value: Any) -> Any:
        """An alias (sentiment-analysis, text-generation) becomes its task's name; an unknown name lists the tasks."""
        if not isinstance(value, str):
            return value
        try:
            return get_task(value).name
        except UnknownTaskError as error:
            raise ValueError(str(error)) from None

    @model_validator(mode="after")
    def _fits_the_task(self) -> RetrainParams:
        spec = get_task(self.task)
        metrics = [metric.name for metric in spec.metrics]
        if self.promotion_metric is None:
            self.promotion_metric = spec.decides.name
        elif self.promotion_metric not in metrics:
            raise ValueError(
                f"promotion_metric {self.promotion_metric!r} is not a metric of task {spec.name}: {metrics}"
            )
        if self.lora.enabled and spec.auto_class != "AutoModelForCausalLM":
            raise ValueError(f"lora: the flow trains LoRA adapters for causal-lm runs, not for {spec.name}")
        if spec.onnx_graph is None and {"onnx", "onnx_int8"} & set(self.export_formats):
            raise ValueError(f"export_formats: task {spec.name} has no ONNX export; use ['safetensors']")
        if self.training.augment and spec.modality != "image":
            raise ValueError(f"training.augment moves images; task {spec.name} takes {spec.modality}")
        if spec.modality != "text" and self.quantization:
            raise ValueError(
                f"quantization: the quantized copies are checked on held-out text; task {spec.name} takes images"
            )
        if spec.label_column is None and self.min_metric is not None:
            raise ValueError(
                f"min_metric is a floor on accuracy-like metrics; task {spec.name} decides by "
                f"{spec.decides.name}, where lower is better"
            )
        return self

    @field_validator("label_map", mode="before")
    @classmethod
    def _label_map_from_json(cls, value: Any) -> Any:
        """The command line passes a string: a JSON object (label names may hold spaces and commas)."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f'a JSON object such as {{"Fresh": "fresh"}}: {error}') from None
        return value

    @field_validator("label_map")
    @classmethod
    def _label_names_not_empty(cls, value: dict[str, str]) -> dict[str, str]:
        empty = [raw for raw, name in value.items() if not name.strip()]
        if empty:
            raise ValueError(f"labels {empty} map to an empty name; drop those rows from the data instead")
        return value

    @field_validator("registered_model_name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}", value):
            raise ValueError("use letters, digits, '.', '_' and '-' (at most 128), starting with a letter or digit")
        return value

    @field_validator("max_shard_size")
    @classmethod
    def _shard_size(cls, value: str) -> str:
        if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|KiB|MiB|GiB)", value.strip(), flags=re.IGNORECASE):
            raise ValueError("a size like '50MB' or '2GB'")
        return value.strip()
