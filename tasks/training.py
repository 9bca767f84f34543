"""The fine-tuning task: base model + tokenized data + training settings -> checkpoint directory."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.outputs import retry_unless_disk_full
from tasks.results import TrainResult

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "model"  # the final checkpoint inside the task's output directory
ADAPTER_DIR = "adapter"  # a LoRA run's adapters, in peft's layout
TRAIN_LOG = "log.jsonl"  # the Trainer's log lines (loss per logging step), read by the evaluation report


@task(
    name="fine_tune", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1, retry_condition_fn=retry_unless_disk_full
)
def fine_tune(
    base_model: str,
    tokenized_path: str,
    labels: list[str],
    training: dict[str, Any],
    output_dir: str,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    task_name: str = "text-classification",
    lora: dict[str, Any] | None = None,
    distributed: dict[str, Any] | None = None,
    job_id: str | None = None,
) -> TrainResult:
    """Fine-tune ``base_model`` for ``task_name`` (a registered task) on ``tokenized_path/train``.

    The seed is set before the model is built, so the new classification head is initialized the
    same way in every run (a seed only in the training arguments would not cover it). Intermediate
    checkpoints go to ``output_dir/checkpoint-N``; a retried task (or a re-run of the same flow run)
    resumes from the newest complete one. Metrics go to MLflow run ``run_id`` as they are logged; if
    the tracking server goes down, training goes on and the unsent metrics are kept in
    ``output_dir/mlflow_pending_metrics.jsonl`` for the registration step to replay.

    Args:
        base_model: a checkpoint source (directory, asset name, ``models:/`` URI); for an image task also a size of
            ``modelcore.create_model`` (``vit_mnist_patch4_28``), trained from scratch.
        tokenized_path: output of ``tokenize_dataset``.
        labels: label names, index = label id (a task without a label column: empty).
        training: ``TrainingArguments`` fields (``output_dir`` is set here), and ``augment``: an image task's collator
            moves each training image at random (``RandomAffine``).
        output_dir: where checkpoints and the final model go.
        tracking_uri, run_id: the flow's MLflow run; None disables tracking.
        task_name: the task's Auto class builds the model, its collator batches the rows.
        lora: ``LoraSettings`` fields; when ``enabled``, only LoRA adapters train (peft); they are saved in peft's
            layout under ``output_dir/adapter`` and merged into the base weights of the final checkpoint.
        distributed: ``DistributedSettings`` fields; with ``nodes`` > 1 training runs as a torchrun job across that
            many nodes (``tasks.distributed``), and its metrics come back as ``pending_metrics``; None or one node:
            in this process.
        job_id: the distributed job's rendezvous id (the flow run's id); default: one derived from ``output_dir``.

    Returns:
        A ``TrainResult``: the checkpoint, the log, steps, loss and runtime, pending metrics, what training
        resumed from, a LoRA run's adapter directory, and a distributed run's nodes, restarts and time lost.

    Raises:
        DiskFullError: a checkpoint did not fit (naming its path and the bytes needed); the task is not
            retried then, and no partial checkpoint is left.
        PlatformError: a distributed run cannot start here, or a node failed past its restarts.
    """
    if distributed and int(distributed.get("nodes", 1)) > 1:
        from tasks.distributed import train_across_nodes

        spec = dict(base_model=base_model, tokenized_path=tokenized_path, labels=labels, training=training,
                    output_dir=output_dir, task_name=task_name, lora=lora)  # fmt: skip
        job = job_id or "train-" + hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:12]
        return train_across_nodes(spec, distributed, job, tracking_uri, run_id)
    return train_here(base_model, tokenized_path, labels, training, output_dir, tracking_uri, run_id, task_name, lora)


def train_here(
    base_model: str,
    tokenized_path: str,
    labels: list[str],
    training: dict[str, Any],
    output_dir: str,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    task_name: str = "text-classification",
    lora: dict[str, Any] | None = None,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """``fine_tune``'s training in this process (or in each rank of a torchrun job: ``train_distributed.py``);
    ``callbacks``: more Trainer callbacks."""
    import datasets
    import torch

    import modelcore
    from modelcore import AutoTokenizer, Trainer, TrainingArguments
    from modelcore.integrations.mlflow import PENDING_METRICS_FILE, MLflowCallback
    from modelcore.task_registry import get_task
    from modelcore.trainer.checkpoint import latest_checkpoint

    spec = get_task(task_name)
    auto_class = getattr(modelcore, spec.auto_class)

    out = Path(output_dir)
    image = spec.modality == "image"  # the collator decodes the images per batch: the Trainer keeps the columns
    training, augment = split_training(training)
    if augment and not image:
        raise ValueError(f"training.augment moves images; task {spec.name} takes {spec.modality}")
    args = TrainingArguments(output_dir=str(out), report_to=[], **({"remove_unused_columns": False} if image else {}),
                             **training)  # fmt: skip
    train = datasets.load_from_disk(str(Path(tokenized_path) / "train"))
    torch.manual_seed(args.seed)  # before the model: the new head's init (or a new model's) is part of the run
    if spec.label_column is not None:
        id2label = dict(enumerate(labels))
        head = {"num_labels": len(labels), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
        if image and is_architecture(base_model):
            tokenizer, model = _new_image_model(base_model, head)
        else:
            tokenizer = spec.load_preprocessor(base_model)
            # an image checkpoint's head (1000 ImageNet classes) is replaced by a new one of this run's classes
            model = auto_class.from_pretrained(
                base_model, **head, **({"ignore_mismatched_sizes": True} if image else {})
            )
    else:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
        model = auto_class.from_pretrained(base_model, dtype="float32")  # a GGUF base is dequantized to train
    lora_config = None
    if lora and lora.get("enabled"):
        from modelcore.integrations.lora import add_lora

        if lora.get("base_quantization"):
            from modelcore.quantization import quantize

            model = quantize(model, lora["base_quantization"])  # QLoRA: the frozen base held quantized
        lora_config = add_lora(model, lora["target_modules"], lora["r"], lora["alpha"], lora["dropout"])
    callbacks = list(callbacks or [])
    if run_id is not None:
        callbacks.append(MLflowCallback(tracking_uri=tracking_uri, run_id=run_id, tolerate_errors=True))
    trainer = Trainer(
        model,
        args,
        train_dataset=train,
        processing_class=tokenizer,
        data_collator=spec.function("collator")(tokenizer, **({"augment": _random_moves()} if augment else {})),
        callbacks=callbacks,
    )
    resume = latest_checkpoint(out)
    if resume is not None:
        logger.info("resuming training from %s (step %s)", resume, resume.name.rsplit("-", 1)[-1])
    result = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    adapter = None
    if lora_config is not None:
        from modelcore.integrations.lora import merge_lora, save_adapter

        adapter = str(save_adapter(model, lora_config, out / ADAPTER_DIR, base_model=base_model))
        if lora.get("base_quantization"):  # quantized weights are not merged into: the adapters go on the fp32 base
            trainer.model = _with_adapter_on_full_precision(auto_class, base_model, lora, adapter)
        merge_lora(trainer.model)  # the registered checkpoint is a plain model: it loads and exports without peft
    checkpoint = trainer.save_model(str(out / CHECKPOINT_DIR))
    pending = out / PENDING_METRICS_FILE
    return TrainResult(
        checkpoint=str(checkpoint),
        train_log=str(out / TRAIN_LOG),
        global_step=result.global_step,
        train_loss=float(result.training_loss),
        train_runtime=float(result.metrics["train_runtime"]),
        pending_metrics=str(pending) if pending.is_file() else None,
        resumed_from=str(resume) if resume is not None else None,
        adapter=adapter,
    )


def is_architecture(base_model: str) -> bool:
    """Whether ``base_model`` names a size of ``modelcore.create_model`` (a model trained from scratch) rather than a
    checkpoint: a registered name that is no existing path."""
    from modelcore.factory import MODEL_REGISTRY

    return base_model in MODEL_REGISTRY and not Path(base_model).exists()


def _new_image_model(name: str, head: dict[str, Any]) -> tuple[Any, Any]:
    """(image processor, randomly initialized classifier) of a ``create_model`` size, with this run's classes."""
    from modelcore.factory import create_image_processor, create_model

    model = create_model(name, num_classes=head["num_labels"])
    model.config.id2label, model.config.label2id = head["id2label"], head["label2id"]
    logger.info("training %s from scratch: %.2fM parameters", name, sum(p.numel() for p in model.parameters()) / 1e6)
    return create_image_processor(name), model


def _with_adapter_on_full_precision(auto_class: Any, base_model: str, lora: dict[str, Any], adapter: str) -> Any:
    """A QLoRA run's adapters loaded on the full-precision base (reloaded), ready to merge, so the registered
    checkpoint keeps the base's own precision."""
    from modelcore.integrations.lora import add_lora, load_adapter

    model = auto_class.from_pretrained(base_model, dtype="float32")
    add_lora(model, lora["target_modules"], lora["r"], lora["alpha"], lora["dropout"])
    load_adapter(model, adapter)
    return model


def split_training(training: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(``TrainingArguments`` fields, ``augment``): the flow's training settings without the one that is the
    collator's, not the Trainer's."""
    fields = dict(training)
    return fields, bool(fields.pop("augment", False))


def _random_moves() -> Any:
    """The image task's train-time augmentation (the moves of benchmarks/bench_vit_mnist.py's recipe)."""
    from modelcore.task_registry.image_classification import RandomAffine

    return RandomAffine()
