"""Losses shared by the heads; parity of each head's loss with transformers is in tests/modelcore/models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modelcore.nn.losses import IGNORE_INDEX, causal_lm_loss, sequence_classification_loss, token_cross_entropy


def test_token_cross_entropy_skips_ignored_positions_and_sums_over_num_items():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.randint(0, 7, (2, 5), generator=g)
    labels[0, :2] = IGNORE_INDEX
    kept = labels != IGNORE_INDEX
    per_token = F.cross_entropy(logits[kept], labels[kept], reduction="none")
    torch.testing.assert_close(token_cross_entropy(logits, labels), per_token.mean())
    torch.testing.assert_close(token_cross_entropy(logits, labels, num_items_in_batch=20), per_token.sum() / 20)


def test_causal_lm_loss_predicts_the_next_token():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=g, dtype=torch.bfloat16)
    labels = torch.randint(0, 11, (2, 6), generator=g)
    want = F.cross_entropy(logits[:, :-1].float().reshape(-1, 11), labels[:, 1:].reshape(-1))
    got = causal_lm_loss(logits, labels)
    assert got.dtype == torch.float32  # computed in fp32 whatever the logits' dtype
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    ("num_labels", "labels", "loss"),
    [
        (1, torch.tensor([0.5, -1.0]), "mse"),
        (3, torch.tensor([0, 2]), "ce"),
        (3, torch.tensor([[1.0, 0, 1], [0, 1, 0]]), "bce"),
    ],
    ids=["regression", "single-label", "multi-label"],
)
def test_sequence_classification_infers_the_problem_type(num_labels, labels, loss):
    logits = torch.randn(2, num_labels, generator=torch.Generator().manual_seed(0))
    want = {
        "mse": lambda: F.mse_loss(logits.squeeze(), labels),
        "ce": lambda: F.cross_entropy(logits, labels),
        "bce": lambda: F.binary_cross_entropy_with_logits(logits, labels),
    }[loss]()
    torch.testing.assert_close(sequence_classification_loss(logits, labels, num_labels, None), want)


def test_sequence_classification_explicit_problem_type_wins_and_unknown_is_an_error():
    logits = torch.randn(2, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[1, 0], [0, 1]])  # integer labels would infer single-label
    got = sequence_classification_loss(logits, labels, 2, "multi_label_classification")
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(logits, labels.float()))
    with pytest.raises(ValueError, match="ranking"):
        sequence_classification_loss(logits, labels, 2, "ranking")
