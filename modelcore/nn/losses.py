"""Training losses shared by the model heads, computed as Hugging Face transformers computes them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Label value that marks a position without a loss (padding, unmasked tokens, sub-word continuations).
IGNORE_INDEX = -100


def token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of every position's logits against its label, skipping ``IGNORE_INDEX``.

    Args:
        logits: (..., V) scores over V classes (vocabulary or tag set).
        labels: (...) class ids, or ``IGNORE_INDEX``.
        num_items_in_batch: when given, the loss is summed and divided by it (gradient accumulation
            over micro-batches of unequal token counts); otherwise it is the mean over labelled positions.

    Returns:
        The scalar loss.
    """
    logits = logits.reshape(-1, logits.shape[-1])  # (N, V)
    labels = labels.reshape(-1).to(logits.device)  # (N,)
    if num_items_in_batch is None:
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum") / num_items_in_batch


def causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of position t's logits (B, T, V) against token t+1 of ``labels`` (B, T).

    ``labels`` are aligned with the inputs (the shift happens here); ``IGNORE_INDEX`` positions and the
    last position (which has no next token) carry no loss. ``num_items_in_batch`` as in ``token_cross_entropy``.
    """
    shift_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]  # (B, T)
    return token_cross_entropy(logits.float(), shift_labels, num_items_in_batch)  # fp32 for a stable log-softmax


def sequence_classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_labels: int, problem_type: str | None
) -> torch.Tensor:
    """MSE, cross-entropy or BCE-with-logits for one prediction per sequence, by ``problem_type``.

    Args:
        logits: (B, num_labels).
        labels: (B,) class ids (single-label), (B, num_labels) floats (multi-label), or (B,) /
            (B, num_labels) floats (regression).
        num_labels: the width of ``logits``.
        problem_type: ``"regression"``, ``"single_label_classification"``, ``"multi_label_classification"``,
            or None to infer it as transformers does: one label -> regression, integer labels ->
            single-label, otherwise multi-label.

    Returns:
        The scalar loss.
    """
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    labels = labels.to(logits.device)
    if problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    raise ValueError(f"problem_type {problem_type!r} is not regression / single_label / multi_label_classification")


def question_answering_loss(
    start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor, end_positions: torch.Tensor
) -> torch.Tensor:
    """Mean of the start and end cross-entropies, as Hugging Face computes it.

    Args:
        start_logits, end_logits: (B, T) scores of each token starting / ending the answer.
        start_positions, end_positions: (B,) token indices; positions outside the input (a span truncated
            away) are clamped to T and ignored.

    Returns:
        The scalar loss.
    """
    ignored = start_logits.shape[1]  # T
    start_positions = start_positions.reshape(-1).to(start_logits.device).clamp(0, ignored)
    end_positions = end_positions.reshape(-1).to(end_logits.device).clamp(0, ignored)
    start_loss = F.cross_entropy(start_logits, start_positions, ignore_index=ignored)
    end_loss = F.cross_entropy(end_logits, end_positions, ignore_index=ignored)
    return (start_loss + end_loss) / 2
