"""Trainer: the training loop over accelerate, with evaluation, prediction, checkpoints and callbacks.

Features and their exact semantics:

* **Batches**: per-device batches of ``per_device_train_batch_size``; ``gradient_accumulation_steps``
  micro-batches make one optimizer step (the last window of an epoch may be shorter). Random
  batches by default, in transformers' order for a seed; with ``group_by_length`` batches hold
  sequences of similar length, drawn from shuffled mega-batches. Order is a pure function of (seed, epoch).
* **Loss**: the model's own; with ``label_smoothing_factor`` > 0, the label-smoothed cross-entropy of its logits
  (``label_smoothed_loss``, transformers' ``LabelSmoother``), for training and for the evaluation loss.
* **Precision**: ``bf16`` / ``fp16`` autocast through accelerate; weights and optimizer stay fp32.
* **Optimizer**: AdamW (fused by default), no weight decay on biases and norm weights;
  linear / cosine / constant schedules with warmup; gradient clipping at ``max_grad_norm``.
* **Distributed**: under ``torchrun`` the model is wrapped in DDP by accelerate; each rank takes
  its slice of every global batch, so N processes x batch b equal one process x batch N*b. Only
  rank 0 logs and saves.
* **Checkpoints**: ``output_dir/checkpoint-N`` (see ``checkpoint.py``), written atomically.
  ``train(resume_from_checkpoint=True)`` resumes from the newest one exactly: weights, optimizer,
  scheduler, RNG and data position are restored, and consumed batches are not iterated again.
* **Guard**: a NaN or infinite loss stops the run with ``TrainingDivergedError``; checkpoints
  already written are left as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelcore.trainer import checkpoint as ckpt
from modelcore.trainer.arguments import TrainingArguments
from modelcore.trainer.callbacks import (
    CallbackHandler,
    LoggingCallback,
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    is_better,
    metric_value,
)
from modelcore.trainer.data import check_labels, make_loader, prepare_dataset
from modelcore.trainer.optim import create_optimizer, create_scheduler

logger = logging.getLogger(__name__)


def label_smoothed_loss(
    logits: torch.Tensor, labels: torch.Tensor, factor: float, shift_labels: bool = False
) -> torch.Tensor:
    """Cross-entropy against a target of ``1 - factor`` on the label plus ``factor`` spread evenly over all V
    classes, averaged over the labels that are not -100: what transformers' ``LabelSmoother`` computes.

    Args:
        logits: (..., V) scores.
        labels: (...) class ids, or -100 for no loss.
        factor: the smoothing, in [0, 1).
        shift_labels: position t's logits against label t + 1 (causal LMs, whose labels align with the inputs).

    Returns:
        The scalar loss (fp32).
    """
    if shift_labels:
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    logits = logits.reshape(-1, logits.shape[-1]).float()  # (N, V)
    labels = labels.reshape(-1).to(logits.device)  # (N,)
    return torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, label_smoothing=factor)


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


@dataclasses.dataclass
class EvalPrediction:
    predictions: np.ndarray
    label_ids: np.ndarray | None


@dataclasses.dataclass
class PredictionOutput:
    predictions: np.ndarray
    label_ids: np.ndarray | None
    metrics: dict[str, float]


@dataclasses.dataclass
class TrainOutput:
    global_step: int
    training_loss: float
    metrics: dict[str, float]


class Trainer:
    """Train, evaluate and predict with a modelcore (or any ``torch.nn.Module``) model.

    Args:
        model: a model whose forward takes the batch's keys and returns ``loss`` (given labels) and ``logits``.
        args: the ``TrainingArguments``.
        train_dataset / eval_dataset: ``datasets.Dataset`` or map-style datasets of dicts with ``input_ids``.
        data_collator: turns a list of rows into a batch; default: padding with ``processing_class``.
        processing_class: the tokenizer, saved with every checkpoint.
        compute_metrics: ``EvalPrediction -> dict[str, float]``.
        callbacks: extra ``TrainerCallback`` instances or classes.
        optimizers: ``(optimizer, scheduler)`` to use instead of creating them.
        tokenizer: deprecated name of ``processing_class`` (as older transformers wrote it); warns.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        args: TrainingArguments,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        data_collator: Any = None,
        processing_class: Any = None,
        compute_metrics: Any = None,
        callbacks: list[TrainerCallback | type[TrainerCallback]] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, Any] = (None, None),
        *,
        tokenizer: Any = None,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        processing_class = _processing_class_or_tokenizer(processing_class, tokenizer)
        self.args = args
        _check_output_dir(Path(args.output_dir))
        if args.fp16 and not torch.cuda.is_available():
            raise ValueError("fp16 mixed precision needs a CUDA GPU; use bf16=True on CPU")
        # accelerate keeps one process-wide state; a new precision needs it rebuilt (the process group is kept).
        AcceleratorState._reset_state(reset_partial_state=False)
        # cpu=True without CUDA: accelerate then runs torchrun's processes as DDP over gloo (MULTI_CPU).
        self.accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=not torch.cuda.is_available())
        if args.bf16 and self.accelerator.device.type == "cpu" and not cpu_has_bf16_kernels():
            logger.warning(
                "bf16=True on a CPU without bf16 matrix kernels (torch sees %s; they need AVX-512 or AMX): bf16 "
                "autocast is emulated here and trains many times slower than fp32 (18x on an AVX2 EPYC); "
                "train with bf16=False",
                torch.backends.cpu.get_cpu_capability(),
            )
        self.model = model
        if args.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.processing_class = processing_class
        self.data_collator = data_collator or _default_collator(processing_class)
        self.train_dataset = prepare_dataset(train_dataset, model, "train_dataset", args.remove_unused_columns)
        self.eval_dataset = prepare_dataset(eval_dataset, model, "eval_dataset", args.remove_unused_columns)
        if self.train_dataset is not None:
            check_labels(self.train_dataset, model, "train_dataset")
        if self.eval_dataset is not None:
            check_labels(self.eval_dataset, model, "eval_dataset")
        self.compute_metrics = compute_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self.state = TrainerState(is_world_process_zero=self.accelerator.is_main_process)
        self.control = TrainerControl()
        self._step_grad_norm: torch.Tensor | None = None  # of the last optimizer step, for the log
        self._step_lr = 0.0
        default_callbacks = [LoggingCallback, *([] if args.disable_tqdm else [ProgressCallback])]
        self.callbacks = CallbackHandler([*default_callbacks, *_reporting_callbacks(args), *(callbacks or [])])
        self.control = self.callbacks.call("on_init_end", args, self.state, self.control)

    @property
    def tokenizer(self) -> Any:
        """Deprecated name of ``processing_class`` (older transformers code reads ``trainer.tokenizer``); warns."""
        warnings.warn(
            "Trainer.tokenizer is deprecated: read Trainer.processing_class instead", FutureWarning, stacklevel=2
        )
        return self.processing_class

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one micro-batch; subclasses (distillation) override this.

        With ``label_smoothing_factor`` > 0 the model runs without its labels and the loss is
        :func:`label_smoothed_loss` of its logits, as transformers' ``LabelSmoother`` replaces the model's loss.
        """
        if self.args.label_smoothing_factor > 0 and "labels" in inputs:
            labels = inputs["labels"]
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            return self._smoothed_loss(model, outputs.logits, labels)
        outputs = model(**inputs)
        if getattr(outputs, "loss", None) is None:
            raise ValueError(
                f"{type(model).__name__} returned no loss: the batch has no labels (keys: {sorted(inputs)})"
            )
        return outputs.loss

    def _smoothed_loss(self, model: torch.nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        causal_lm = type(self.accelerator.unwrap_model(model)).__name__.endswith("ForCausalLM")  # as transformers
        return label_smoothed_loss(logits, labels, self.args.label_smoothing_factor, shift_labels=causal_lm)

    # ------------------------------------------------------------------ train
    def train(self, resume_from_checkpoint: bool | str | None = None) -> TrainOutput:
        """Run the training loop; resume from a checkpoint when asked (True = the newest in output_dir)."""
        args, acc = self.args, self.accelerator
        if self.train_dataset is None:
            raise ValueError("Trainer.train needs a train_dataset")
        torch.manual_seed(args.seed)
        world, rank = acc.num_processes, acc.process_index
        sampler = self._train_sampler(world, rank)
        micro_per_epoch = sampler.batches_per_epoch
        steps_per_epoch = math.ceil(micro_per_epoch / args.gradient_accumulation_steps)
        max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
        num_epochs = math.ceil(max_steps / steps_per_epoch)

        model = self.model.to(acc.device)
        if self.optimizer is None:
            self.optimizer = create_optimizer(model, args)
        if self.lr_scheduler is None:
            self.lr_scheduler = create_scheduler(self.optimizer, args, max_steps)
        self.state = TrainerState(
            max_steps=max_steps,
            num_train_epochs=num_epochs,
            steps_per_epoch=steps_per_epoch,
            train_batch_size=args.global_train_batch_size(world),
            is_world_process_zero=acc.is_main_process,
            model_fingerprint=ckpt.model_fingerprint(self.model),
        )
        checkpoint = self._resolve_resume(resume_from_checkpoint)
        if checkpoint is not None:
            self._load_checkpoint(checkpoint, rank)
        wrapped, self.optimizer = acc.prepare(model, self.optimizer)
        if args.torch_compile:
            wrapped = torch.compile(wrapped, mode=args.torch_compile_mode, dynamic=True)

        self.control = self.callbacks.call("on_train_begin", args, self.state, self.control, model=self.model)
        start_time, start_step = time.perf_counter(), self.state.global_step
        loss_sum = torch.zeros((), device=acc.device)  # summed on device: no host sync per step
        loss_steps, total_loss, total_steps = 0, 0.0, 0
        try:
            for epoch in range(self.state.global_step // steps_per_epoch, num_epochs):
                skip = (self.state.global_step - epoch * steps_per_epoch) * args.gradient_accumulation_steps
                batches = self._epoch_batches(sampler, epoch, skip)
                self.control = self.callbacks.call("on_epoch_begin", args, self.state, self.control)
                windows = _windows(batches, args.gradient_accumulation_steps, micro_per_epoch - skip)
                for window in windows:
                    self.control = self.callbacks.call("on_step_begin", args, self.state, self.control)
                    loss = self._optimizer_step(wrapped, window)
                    loss_sum += loss
                    loss_steps += 1
                    self.state.global_step += 1
                    self.state.epoch = self.state.global_step / steps_per_epoch
                    self.control = self.callbacks.call("on_step_end", args, self.state, self.control)
                    if self._should_log():
                        value = (loss_sum / loss_steps).item()
                        self._guard(value)
                        total_loss += value * loss_steps
                        total_steps += loss_steps
                        loss_sum.zero_()
                        loss_steps = 0
                        logs = {"loss": round(value, 6)}
                        if self._step_grad_norm is not None:
                            logs["grad_norm"] = float(self._step_grad_norm)
                        self.log(logs | {"learning_rate": self._step_lr})
                    self._maybe_evaluate_and_save(epoch_end=False)
                    if self.control.should_training_stop or self.state.global_step >= max_steps:
                        break
                self.control = self.callbacks.call("on_epoch_end", args, self.state, self.control)
                self._maybe_evaluate_and_save(epoch_end=True)
                if self.control.should_training_stop or self.state.global_step >= max_steps:
                    break
        except BaseException:
            for callback in self.callbacks.callbacks:  # e.g. end the tracking run as FAILED
                if hasattr(callback, "close"):
                    callback.close(status="FAILED")
            raise
        finally:
            self.model = acc.unwrap_model(wrapped, keep_fp32_wrapper=False, keep_torch_compile=False)  # plain module
        if loss_steps:
            value = (loss_sum / loss_steps).item()
            self._guard(value)
            total_loss += value * loss_steps
            total_steps += loss_steps
        if args.load_best_model_at_end and self.state.best_model_checkpoint:
            self._load_weights(Path(self.state.best_model_checkpoint))
        runtime = time.perf_counter() - start_time
        steps_done = self.state.global_step - start_step
        metrics = {
            "train_runtime": round(runtime, 3),
            "train_samples_per_second": round(steps_done * self.state.train_batch_size / max(runtime, 1e-9), 3),
            "train_steps_per_second": round(steps_done / max(runtime, 1e-9), 3),
            "train_loss": total_loss / max(total_steps, 1),
            "epoch": self.state.epoch,
        }
        self.log(metrics)
        self.control = self.callbacks.call("on_train_end", args, self.state, self.control, model=self.model)
        return TrainOutput(self.state.global_step, metrics["train_loss"], metrics)

    def _optimizer_step(self, model: torch.nn.Module, window: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Forward/backward every micro-batch of one accumulation window, then one optimizer step."""
        acc, args = self.accelerator, self.args
        model.train()
        sizes = [_batch_size(b) for b in window]
        total = sum(sizes)
        step_loss = torch.zeros((), device=acc.device)
        for i, (batch, size) in enumerate(zip(window, sizes, strict=True)):
            batch = {k: v.to(acc.device, non_blocking=True) for k, v in batch.items()}
            sync = i == len(window) - 1
            with contextlib.nullcontext() if sync else acc.no_sync(model), acc.autocast():
                loss = self.compute_loss(model, batch) * (size / total)  # the window's mean over examples
                acc.backward(loss)
            step_loss += loss.detach()
        # what the log reports for this step, as transformers does: the gradient norm before clipping and the
        # learning rate the step was taken with (the scheduler moves on right after)
        self._step_grad_norm = (
            acc.clip_grad_norm_(model.parameters(), args.max_grad_norm) if args.max_grad_norm else None
        )
        self._step_lr = self.lr_scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss

    def _guard(self, loss: float) -> None:
        if not math.isfinite(loss):
            last = ckpt.latest_checkpoint(self.args.output_dir)
            kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written before it"
            raise TrainingDivergedError(
                f"loss is {loss} at step {self.state.global_step}: training stopped ({kept}). "
                "Lower the learning rate, enable clipping (max_grad_norm) or check the data."
            )

    # ------------------------------------------------------------------ data
    def _train_sampler(self, world: int, rank: int) -> Any:
        from modelcore.data.sampling import LengthGroupedSampler, RandomBatchSampler, lengths_of

        args = self.args
        seed = args.data_seed if args.data_seed is not None else args.seed
        common = dict(
            batch_size=args.per_device_train_batch_size,
            seed=seed,
            drop_last=args.dataloader_drop_last,
            num_replicas=world,
            rank=rank,
        )
        if args.group_by_length:
            return LengthGroupedSampler(lengths_of(self.train_dataset), **common)
        return RandomBatchSampler(len(self.train_dataset), **common)

    def _epoch_batches(self, sampler: Any, epoch: int, skip: int) -> Any:
        if skip == 0:
            # The one draw torch's DataLoader makes from the global generator (its workers' base seed) when an
            # epoch begins. Our loader has its own generator, so resuming mid-epoch never draws (exact resume);
            # drawing here at each epoch start keeps a seed's dropout stream the same as in transformers' Trainer.
            torch.empty((), dtype=torch.int64).random_()
        sampler.set_epoch(epoch)
        sampler.skip_batches(skip)  # consumed batches are skipped in the sampler, never loaded
        return iter(make_loader(self.train_dataset, sampler, self.data_collator, self.args.dataloader_num_workers))

    # ------------------------------------------------------------------ eval / predict
    def evaluate(self, eval_dataset: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Loss (and ``compute_metrics``) over the evaluation set; logged and returned with the prefix."""
        dataset = (
            self.eval_dataset
            if eval_dataset is None
            else prepare_dataset(eval_dataset, self.model, "eval_dataset", self.args.remove_unused_columns)
        )
        if dataset is None:
            raise ValueError("Trainer.evaluate needs an eval_dataset")
        output = self._predict_loop(dataset, metric_key_prefix)
        self.log(output.metrics)
        self.control = self.callbacks.call("on_evaluate", self.args, self.state, self.control, metrics=output.metrics)
        return output.metrics

    def predict(self, test_dataset: Any, metric_key_prefix: str = "test") -> PredictionOutput:
        """Logits (as numpy), labels when present, and metrics."""
        dataset = prepare_dataset(test_dataset, self.model, "test_dataset", self.args.remove_unused_columns)
        output = self._predict_loop(dataset, metric_key_prefix)
        self.control = self.callbacks.call("on_predict", self.args, self.state, self.control, metrics=output.metrics)
        return output

    @torch.inference_mode()
    def _predict_loop(self, dataset: Any, prefix: str) -> PredictionOutput:
        from modelcore.data.sampling import LengthGroupedSampler, lengths_of

        acc, args = self.accelerator, self.args
        model = self.model.to(acc.device).eval()
        # Sorted by length for speed; results are put back in dataset order. Inputs without a length (images,
        # audio features) go in dataset order.
        try:
            lengths = lengths_of(dataset)
        except KeyError:
            lengths = None
        size = args.per_device_eval_batch_size
        sampler = (
            LengthGroupedSampler(lengths, batch_size=size, seed=0, mega_batch_mult=len(dataset))
            if lengths is not None
            else [list(range(i, min(i + size, len(dataset)))) for i in range(0, len(dataset), size)]
        )
        start = time.perf_counter()
        order, logits, labels, loss_sum, count = [], [], [], 0.0, 0
        for indices, batch in zip(sampler, make_loader(dataset, sampler, self.data_collator, 0), strict=True):
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            with acc.autocast():
                outputs = model(**batch)
            if getattr(outputs, "loss", None) is not None:
                smoothed = self.args.label_smoothing_factor > 0  # the eval loss is the training loss, as transformers
                loss = self._smoothed_loss(model, outputs.logits, batch["labels"]) if smoothed else outputs.loss
                loss_sum += float(loss) * len(indices)
                count += len(indices)
            order.extend(indices)
            logits.extend(outputs.logits.float().cpu().unbind(0))
            if "labels" in batch:
                labels.extend(batch["labels"].cpu().unbind(0))
        inverse = np.argsort(order)
        predictions = _stack_padded([logits[i] for i in inverse], pad=-100.0)
        label_ids = _stack_padded([labels[i] for i in inverse], pad=-100) if labels else None
        runtime = time.perf_counter() - start
        metrics: dict[str, float] = {}
        if count:
            metrics[f"{prefix}_loss"] = loss_sum / count
        if self.compute_metrics is not None and label_ids is not None:
            metrics.update(
                {f"{prefix}_{k}": v for k, v in self.compute_metrics(EvalPrediction(predictions, label_ids)).items()}
            )
        metrics[f"{prefix}_runtime"] = round(runtime, 3)
        metrics[f"{prefix}_samples_per_second"] = round(len(order) / max(runtime, 1e-9), 3)
        return PredictionOutput(predictions, label_ids, metrics)

    # ------------------------------------------------------------------ logging, evaluation, saving
    def log(self, logs: dict[str, float]) -> None:
        logs = {**logs, "epoch": round(self.state.epoch, 4)}
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callbacks.call("on_log", self.args, self.state, self.control, logs=logs)

    def _should_log(self) -> bool:
        args, step = self.args, self.state.global_step
        return step % args.logging_steps == 0 or (args.logging_first_step and step == 1) or self.control.should_log

    def _maybe_evaluate_and_save(self, epoch_end: bool) -> None:
        args, step = self.args, self.state.global_step
        if epoch_end:
            evaluate, save = args.eval_strategy == "epoch", args.save_strategy == "epoch"
        else:
            evaluate = args.eval_strategy == "steps" and step % args.get_eval_steps(self.state.max_steps) == 0
            save = args.save_strategy == "steps" and step % args.save_steps == 0
        evaluate |= self.control.should_evaluate
        metrics = self.evaluate() if evaluate and self.eval_dataset is not None else None
        improved = self._track_best(metrics)
        save |= self.control.should_save or (args.save_strategy == "best" and improved)
        self.control.should_evaluate = self.control.should_save = self.control.should_log = False
        if save:
            self._save_checkpoint(improved)

    def _track_best(self, metrics: dict[str, float] | None) -> bool:
        value = metric_value(metrics or {}, self.args.metric_for_best_model)
        if value is None:
            return False
        if self.state.best_metric is None or is_better(value, self.state.best_metric, self.args.greater_is_better):
            self.state.best_metric = value
            return True
        return False

    def _save_checkpoint(self, is_best: bool) -> None:
        acc, args = self.accelerator, self.args
        rng = [ckpt.rng_state()]
        if acc.num_processes > 1:  # every rank's RNG goes into the checkpoint, for an exact resume
            rng = [None] * acc.num_processes
            torch.distributed.all_gather_object(rng, ckpt.rng_state())
        if acc.is_main_process:
            output_dir = Path(args.output_dir)
            path = output_dir / f"{ckpt.PREFIX}-{self.state.global_step}"
            if is_best:
                self.state.best_model_checkpoint = str(path)
            saved = ckpt.save_checkpoint(
                output_dir,
                model=acc.unwrap_model(self.model, keep_torch_compile=False),
                processing_class=self.processing_class,
                optimizer=self.optimizer,
                scheduler=self.lr_scheduler,
                state=self.state,
                args=args,
                rng_states=rng,
            )
            ckpt.rotate_checkpoints(output_dir, args.save_total_limit, keep=self.state.best_model_checkpoint)
            self.control = self.callbacks.call("on_save", args, self.state, self.control, checkpoint=saved)
        acc.wait_for_everyone()

    def save_model(self, output_dir: str | None = None) -> Path:
        """Save the (unwrapped) model and tokenizer for use, without training state."""
        directory = Path(output_dir or self.args.output_dir)
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False, keep_torch_compile=False)
            model.save_pretrained(directory)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(directory)
        self.accelerator.wait_for_everyone()
        return directory

    # ------------------------------------------------------------------ resume
    def _resolve_resume(self, resume: bool | str | None) -> Path | None:
        if not resume:
            return None
        if resume is True:
            found = ckpt.latest_checkpoint(self.args.output_dir)
            if found is None:
                logger.info("no checkpoint in %s: starting from scratch", self.args.output_dir)
            return found
        path = Path(resume)
        if not path.is_dir():
            raise FileNotFoundError(f"resume_from_checkpoint: {path} is not a checkpoint directory")
        return path

    def _load_checkpoint(self, checkpoint: Path, rank: int) -> None:
        state, optimizer_state, scheduler_state, rng = ckpt.load_training_state(checkpoint, rank)
        if state.model_fingerprint and state.model_fingerprint != self.state.model_fingerprint:
            raise ValueError(
                f"{checkpoint} was written for another model (fingerprint {state.model_fingerprint}, "
                f"this {type(self.model).__name__} has {self.state.model_fingerprint}); refusing to resume from it"
            )
        if state.train_batch_size != self.state.train_batch_size or state.steps_per_epoch != self.state.steps_per_epoch:
            raise ValueError(
                f"{checkpoint} was trained with {state.train_batch_size} examples per step and {state.steps_per_epoch} "
                f"steps per epoch; this run has {self.state.train_batch_size} and {self.state.steps_per_epoch}: "
                "resuming would not be exact"
            )
        self._load_weights(checkpoint)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        if scheduler_state is not None:
            self.lr_scheduler.load_state_dict(scheduler_state)
        keep = ("max_steps", "num_train_epochs", "is_world_process_zero", "model_fingerprint")
        for field in dataclasses.fields(state):
            if field.name not in keep:
                setattr(self.state, field.name, getattr(state, field.name))
        if rng is not None:
            ckpt.set_rng_state(rng)
        logger.info("resumed from %s at step %d", checkpoint, self.state.global_step)

    def _load_weights(self, checkpoint: Path) -> None:
        loaded = type(self.model).from_pretrained(checkpoint, dtype=self.model.dtype)
        with torch.no_grad():
            target = self.model.state_dict()
            for name, tensor in loaded.state_dict().items():
                target[name].copy_(tensor)


# ---------------------------------------------------------------------- helpers
def cpu_has_bf16_kernels() -> bool:
    """Whether oneDNN runs bf16 matmuls natively on this CPU (AVX-512 or AMX); elsewhere (AVX2) it emulates them."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _windows(batches: Any, size: int, remaining: int) -> Any:
    """Group micro-batches into accumulation windows; the epoch's last window may be shorter."""
    window: list = []
    for _ in range(remaining):
        window.append(next(batches))
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def _batch_size(batch: dict[str, torch.Tensor]) -> int:
    return next(iter(batch.values())).shape[0]


def _stack_padded(rows: list[torch.Tensor], pad: float) -> np.ndarray:
    """Stack per-example arrays, padding the first dimension (token-level outputs differ in length)."""
    if not rows:
        return np.empty((0,))
    if rows[0].dim() == 0 or all(r.shape == rows[0].shape for r in rows):
        return torch.stack(rows).numpy()
    length = max(r.shape[0] for r in rows)
    out = torch.full((len(rows), length, *rows[0].shape[1:]), pad, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out.numpy()


def _processing_class_or_tokenizer(processing_class: Any, tokenizer: Any) -> Any:
    """``processing_class``, or the ``tokenizer=`` that older transformers code passes instead (with a warning)."""
    if tokenizer is None:
        return processing_class
    if processing_class is not None:
        raise ValueError(
            "Trainer got both tokenizer= and processing_class=; pass only processing_class= (tokenizer= is its old name)"
        )
    warnings.warn(
        "Trainer(tokenizer=...) is deprecated: pass processing_class= instead (the tokenizer is used as it)",
        FutureWarning,
        stacklevel=3,  # the caller of Trainer(...)
    )
    return tokenizer


def _default_collator(processing_class: Any) -> Any:
    from modelcore.data.collators import DataCollatorWithPadding, default_data_collator

    if processing_class is not None and getattr(processing_class, "pad_token_id", None) is not None:
        return DataCollatorWithPadding(processing_class)
    return default_data_collator


def _reporting_callbacks(args: TrainingArguments) -> list[TrainerCallback]:
    callbacks: list[TrainerCallback] = []
    if "mlflow" in args.report_to:
        from modelcore.integrations.mlflow import MLflowCallback

        callbacks.append(MLflowCallback())
    return callbacks


def _check_output_dir(path: Path) -> None:
    """Fail before training, not at the first checkpoint, when output_dir cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a probe of its own: the ranks of a distributed run check the same directory at the same moment
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise PermissionError(f"output_dir {path} cannot be written: {err}") from err
