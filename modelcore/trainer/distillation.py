"""Knowledge distillation: a student learns from a teacher's logits as well as from the labels."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from modelcore.trainer.trainer import Trainer


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    hard_loss: torch.Tensor | None,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard_loss`` (Hinton et al., 2015).

    Both logit tensors are softened by the temperature T; the T^2 factor keeps the soft term's
    gradients on the same scale as the hard term's. Computed in fp32. For token-level logits
    (B, T, V) positions are flattened and the KL is averaged over them.
    """
    s = student_logits.float().reshape(-1, student_logits.shape[-1]) / temperature
    t = teacher_logits.float().reshape(-1, teacher_logits.shape[-1]) / temperature
    soft = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), log_target=True, reduction="batchmean")
    soft = soft * temperature**2
    if hard_loss is None or alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * hard_loss


class DistillationTrainer(Trainer):
    """A Trainer whose loss mixes the teacher's softened logits with the hard-label loss.

    Args:
        teacher_model: a trained model with the same output space (its logits' last dim); it is
            kept frozen, in eval mode, on the training device.
        **kwargs: as for ``Trainer``. ``args.distillation_alpha`` weighs the soft term (1.0 = teacher
            only), ``args.distillation_temperature`` softens both distributions.
    """

    def __init__(self, *args: Any, teacher_model: torch.nn.Module, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = teacher_model.to(self.accelerator.device).eval().requires_grad_(False)

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        outputs = model(**inputs)
        with torch.no_grad():
            teacher_logits = self.teacher(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        if teacher_logits.shape[-1] != outputs.logits.shape[-1]:
            raise ValueError(
                f"teacher has {teacher_logits.shape[-1]} outputs, student {outputs.logits.shape[-1]}: they must match"
            )
        return distillation_loss(
            outputs.logits,
            teacher_logits,
            getattr(outputs, "loss", None),
            self.args.distillation_alpha,
            self.args.distillation_temperature,
        )
