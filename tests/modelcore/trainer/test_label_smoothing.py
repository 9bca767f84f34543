"""label_smoothing_factor: our smoothed loss against transformers' LabelSmoother, and the Trainer using it."""

from __future__ import annotations

import pytest
import torch

from modelcore import LlamaConfig, LlamaForCausalLM, ViTConfig, ViTForImageClassification
from modelcore.trainer import Trainer, TrainingArguments
from modelcore.trainer.trainer import label_smoothed_loss

trainer_pt_utils = pytest.importorskip("transformers.trainer_pt_utils")


def their_loss(logits: torch.Tensor, labels: torch.Tensor, factor: float, shift_labels: bool = False) -> torch.Tensor:
    smoother = trainer_pt_utils.LabelSmoother(epsilon=factor)
    return smoother({"logits": logits}, labels, shift_labels=shift_labels)


def with_ignored(labels: torch.Tensor, every: int) -> torch.Tensor:
    labels = labels.clone()
    labels.view(-1)[::every] = -100
    return labels


@pytest.mark.parametrize("factor", [0.0, 0.1, 0.35])
def test_classification_loss_matches_transformers_label_smoother(factor):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 7, generator=generator) * 3  # (B, V)
    labels = with_ignored(torch.randint(0, 7, (12,), generator=generator), every=5)  # 3 of 12 ignored
    ours = label_smoothed_loss(logits, labels, factor)
    torch.testing.assert_close(ours, their_loss(logits, labels, factor), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shift_labels", [False, True])
def test_token_loss_matches_transformers_label_smoother(shift_labels):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 9, 11, generator=generator)  # (B, T, V)
    labels = with_ignored(torch.randint(0, 11, (3, 9), generator=generator), every=4)
    ours = label_smoothed_loss(logits, labels, 0.1, shift_labels=shift_labels)
    torch.testing.assert_close(ours, their_loss(logits, labels, 0.1, shift_labels), rtol=1e-6, atol=1e-6)


def tiny_vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    config.num_labels = 5
    return ViTForImageClassification(config)


def image_rows(n: int = 16) -> list[dict]:
    generator = torch.Generator().manual_seed(2)
    pixels = torch.randn(n, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 5, (n,), generator=generator)
    return [{"pixel_values": p, "labels": y} for p, y in zip(pixels, labels, strict=True)]


def args(tmp_path, **overrides) -> TrainingArguments:
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=8,
                num_train_epochs=1, save_strategy="no", disable_tqdm=True, seed=0)  # fmt: skip
    return TrainingArguments(**(base | overrides))


def collate(rows: list[dict]) -> dict:
    return {key: torch.stack([r[key] for r in rows]) for key in ("pixel_values", "labels")}


def test_the_trainer_trains_and_evaluates_on_the_smoothed_loss(tmp_path):
    rows = image_rows()
    batch = collate(rows[:8])
    model = tiny_vit()
    trainer = Trainer(model, args(tmp_path, label_smoothing_factor=0.2), train_dataset=rows, data_collator=collate)
    with torch.no_grad():
        logits = model(pixel_values=batch["pixel_values"]).logits
        own = model(**batch).loss
        smoothed = trainer.compute_loss(model, dict(batch))
    expected = their_loss(logits, batch["labels"], 0.2)
    torch.testing.assert_close(smoothed, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(smoothed, own)  # the model's own loss was replaced
    # evaluation reports the same loss as training, as transformers does
    expected_eval = (
        expected + their_loss(model(**collate(rows[8:])).logits.detach(), collate(rows[8:])["labels"], 0.2)
    ) / 2
    assert trainer.evaluate(rows)["eval_loss"] == pytest.approx(float(expected_eval), rel=1e-5)
    assert trainer.train().global_step == 2

    plain = Trainer(model, args(tmp_path), train_dataset=rows, data_collator=collate)
    with torch.no_grad():
        torch.testing.assert_close(plain.compute_loss(model, dict(batch)), model(**batch).loss)  # factor 0: model's


def test_a_causal_lm_is_smoothed_on_the_next_token(tmp_path):
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=2)
    )  # fmt: skip
    input_ids = torch.randint(0, 64, (2, 7))
    labels = with_ignored(input_ids, every=5)
    rows = [{"input_ids": i, "labels": y} for i, y in zip(input_ids, labels, strict=True)]
    trainer = Trainer(model, args(tmp_path, label_smoothing_factor=0.1), train_dataset=rows)
    with torch.no_grad():
        ours = trainer.compute_loss(model, {"input_ids": input_ids, "labels": labels})
        logits = model(input_ids=input_ids).logits
    torch.testing.assert_close(ours, their_loss(logits, labels, 0.1, shift_labels=True), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_a_factor_outside_0_1_names_the_field(tmp_path, value):
    with pytest.raises(ValueError, match=r"label_smoothing_factor must be in \[0, 1\)"):
        args(tmp_path, label_smoothing_factor=value)


def test_the_factor_defaults_to_off_and_round_trips(tmp_path):
    assert args(tmp_path).label_smoothing_factor == 0.0
    smoothed = args(tmp_path, label_smoothing_factor=0.1)
    assert TrainingArguments.from_dict(smoothed.to_dict()).label_smoothing_factor == 0.1
