"""Optimizer and learning-rate schedules for the Trainer."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay for matrices, none for biases and norm weights (every 0-/1-D parameter)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    """AdamW over ``parameter_groups``; ``optim="adamw_torch_fused"`` uses the fused kernel (CPU and GPU)."""
    return torch.optim.AdamW(
        parameter_groups(model, args.weight_decay),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        fused=args.optim == "adamw_torch_fused",
    )


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_scheduler_type {schedule!r} is not one of {SCHEDULES}")

    def factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        if schedule == "constant_with_warmup":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))  # cosine

    return factor


def create_scheduler(optimizer: torch.optim.Optimizer, args, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = args.get_warmup_steps(total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.lr_scheduler_type, warmup, total_steps))
