"""Our Trainer against transformers' Trainer with the same seed: the same batches, losses and weights.

Both fine-tune the real MiniLM-L6 checkpoint (the same seeded head) on real Rotten Tomatoes snippets for two
epochs, each library shuffling with its own sampler. With random batches our Trainer is transformers' run
exactly: the same epoch permutations, the same dropout stream, and the same training step (the loss, AdamW
and its decay groups, clipping, warmup and the linear schedule).
"""

from __future__ import annotations

import pytest
import torch

from modelcore import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments
from tests.modelcore.trainer.helpers import snippet_dataset

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

BATCH = 16
SEED = 3
SETTINGS = dict(
    per_device_train_batch_size=BATCH,
    learning_rate=5e-5,
    num_train_epochs=2,
    lr_scheduler_type="linear",
    warmup_steps=3,
    weight_decay=0.01,
    max_grad_norm=1.0,
    logging_steps=1,
    save_strategy="no",
    eval_strategy="no",
    seed=SEED,
    disable_tqdm=True,
)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def data(minilm_dir, rotten_tomatoes):
    # 200 rows: per epoch 12 full batches and a short one of 8
    return snippet_dataset(AutoTokenizer.from_pretrained(minilm_dir), rotten_tomatoes[1000:1200], max_length=64)


def _config_overrides(dropout: bool) -> dict:
    return {} if dropout else NO_DROPOUT


def _train_ours(minilm_dir, data, tmp_path, padding_free, dropout):
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=2, **_config_overrides(dropout))
    model.bert.padding_free_training = padding_free
    args = TrainingArguments(output_dir=str(tmp_path / "ours"), group_by_length=False, **SETTINGS)
    trainer = Trainer(model, args, train_dataset=data, processing_class=AutoTokenizer.from_pretrained(minilm_dir))
    trainer.train()
    return trainer.model, [h for h in trainer.state.log_history if "loss" in h]


def _train_theirs(minilm_dir, data, tmp_path, dropout):
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    torch.manual_seed(SEED)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        minilm_dir, num_labels=2, **_config_overrides(dropout)
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "theirs"), use_cpu=True, report_to="none", **SETTINGS
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=transformers.DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    trainer.train()
    return trainer.model, [h for h in trainer.state.log_history if "loss" in h]


def _update_differences(minilm_dir, ours, theirs, dropout) -> dict[str, float]:
    """Per tensor: max |our update - their update| / max |their update| (update = trained - initial).

    Key biases are left out: they get no gradient in exact arithmetic (softmax ignores a shift shared by all
    keys), so their update is rounding noise, which AdamW's normalisation turns into steps of +-lr in either
    library: not comparable.
    """
    torch.manual_seed(SEED)
    initial = AutoModelForSequenceClassification.from_pretrained(
        minilm_dir, num_labels=2, **_config_overrides(dropout)
    ).state_dict()
    their_state = theirs.state_dict()
    differences = {}
    for name, tensor in ours.state_dict().items():
        ours_update, their_update = tensor - initial[name], their_state[name] - initial[name]
        scale = max(their_update.abs().max().item(), 1e-5)
        differences[name] = (ours_update - their_update).abs().max().item() / scale
    assert (ours.classifier.weight - initial["classifier.weight"]).abs().max().item() > 1e-4, "training moved the head"
    compared = {name: value for name, value in differences.items() if not name.endswith("key.bias")}
    assert len(compared) == len(differences) - 6  # one key bias per layer
    return compared


def test_same_seed_trains_exactly_as_transformers_trainer(minilm_dir, data, tmp_path):
    """Random batches, dropout on, padded: every logged number and every trained weight equal.

    They come out bitwise equal here; the bound allows for a last-bit difference of a threaded CPU kernel,
    while another batch order or dropout stream moves the updates by tens of percent.
    """
    ours, our_log = _train_ours(minilm_dir, data, tmp_path, padding_free=False, dropout=True)
    theirs, their_log = _train_theirs(minilm_dir, data, tmp_path, dropout=True)

    assert len(our_log) == len(their_log) == 26  # per epoch: 12 full batches and the short last one
    for key in ("loss", "grad_norm", "learning_rate"):
        assert [h[key] for h in our_log] == pytest.approx([h[key] for h in their_log], rel=1e-6), key
    differences = _update_differences(minilm_dir, ours, theirs, dropout=True)
    assert max(differences.values()) < 1e-4, sorted(differences.items(), key=lambda kv: -kv[1])[:3]


def test_padding_free_step_matches_transformers_trainer(minilm_dir, data, tmp_path):
    """Padding-free (dropout off, as its masks have other shapes): each update equal up to float rounding."""
    ours, our_log = _train_ours(minilm_dir, data, tmp_path, padding_free=True, dropout=False)
    theirs, their_log = _train_theirs(minilm_dir, data, tmp_path, dropout=False)

    assert len(our_log) == len(their_log) == 26
    # the learning rate logged at each step: warmup over 3 steps, then linear decay to 0
    assert [h["learning_rate"] for h in our_log] == pytest.approx([h["learning_rate"] for h in their_log], rel=1e-6)
    # per-step training loss and gradient norm (before clipping): the same up to float rounding
    assert [h["loss"] for h in our_log] == pytest.approx([h["loss"] for h in their_log], rel=2e-4, abs=1e-5)
    assert [h["grad_norm"] for h in our_log] == pytest.approx([h["grad_norm"] for h in their_log], rel=2e-3)
    differences = _update_differences(minilm_dir, ours, theirs, dropout=False)
    worst = max(differences, key=differences.get)
    assert differences[worst] < 1e-2, (worst, differences[worst])
