"""Trainer behaviour on a tiny BERT over real Rotten Tomatoes sentences (real MiniLM tokenizer)."""

from __future__ import annotations

import math
import re
import threading

import numpy as np
import pytest
import torch

from modelcore import AutoTokenizer, BertConfig, BertForSequenceClassification
from modelcore.trainer import (
    DistillationTrainer,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    TrainingDivergedError,
)
from modelcore.trainer.checkpoint import list_checkpoints
from tests.modelcore.trainer.helpers import snippet_dataset

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def data(tokenizer, rotten_tomatoes):
    return snippet_dataset(tokenizer, rotten_tomatoes[:192], max_length=32)


def tiny_model(seed: int = 0, **overrides) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    return BertForSequenceClassification(BertConfig(**(config | overrides)))


def make_args(tmp_path, **overrides) -> TrainingArguments:
    kwargs = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        num_train_epochs=1,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    return TrainingArguments(**(kwargs | overrides))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_lowers_the_loss_and_evaluates(tmp_path, data, tokenizer, caplog):
    caplog.set_level("INFO", logger="modelcore.trainer.callbacks")

    def accuracy(pred):
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    trainer = Trainer(
        tiny_model(),
        make_args(tmp_path, num_train_epochs=4, eval_strategy="epoch"),
        train_dataset=data,
        eval_dataset=data.select(range(64)),
        processing_class=tokenizer,
        compute_metrics=accuracy,
    )
    before = trainer.evaluate()["eval_loss"]
    result = trainer.train()
    after = trainer.evaluate()
    assert result.global_step == 4 * math.ceil(192 / 16)
    assert after["eval_loss"] < before and 0.0 <= after["eval_accuracy"] <= 1.0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6
    assert (tmp_path / "log.jsonl").is_file()
    # one readable line per logged step: where it is of the whole, the numbers, the pace and the time left
    lines = [r.getMessage() for r in caplog.records if r.name == "modelcore.trainer.callbacks"]
    assert any(re.fullmatch(r"step 24/48 \(50%\), epoch 2\.00: loss [\d.]+, .* \| [\d.]+ steps/s, \d+s left", m)
               for m in lines), lines[:3]  # fmt: skip
    predictions = trainer.predict(data.select(range(10)))
    assert predictions.predictions.shape == (10, 2) and list(predictions.label_ids) == data["label"][:10]


def test_predict_returns_rows_in_dataset_order(tmp_path, data, tokenizer):
    model = tiny_model()
    trainer = Trainer(model, make_args(tmp_path), processing_class=tokenizer)
    subset = data.select(range(40))
    got = trainer.predict(subset).predictions
    with torch.inference_mode():
        for i in (0, 7, 39):
            row = subset[i]
            logits = model(
                input_ids=torch.tensor([row["input_ids"]]), attention_mask=torch.tensor([row["attention_mask"]])
            )
            torch.testing.assert_close(torch.from_numpy(got[i]), logits.logits[0], rtol=1e-4, atol=1e-5)


class KillAt(TrainerCallback):
    """Simulates a crash right after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("killed")


class CountingCollator:
    def __init__(self, tokenizer):
        from modelcore.data.collators import DataCollatorWithPadding

        self.inner = DataCollatorWithPadding(tokenizer)
        self.calls = 0

    def __call__(self, features):
        self.calls += 1
        return self.inner(features)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_resume_after_kill_is_exact(tmp_path, data, tokenizer, accumulation):
    common = dict(
        num_train_epochs=2,
        save_strategy="steps",
        save_steps=5,
        gradient_accumulation_steps=accumulation,
        per_device_train_batch_size=16 // accumulation,
        warmup_ratio=0.2,
    )
    full = Trainer(tiny_model(), make_args(tmp_path / "full", **common), train_dataset=data, processing_class=tokenizer)
    full.train()

    with pytest.raises(KeyboardInterrupt):
        Trainer(
            tiny_model(),
            make_args(tmp_path / "killed", **common),
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=[KillAt(13)],
        ).train()
    assert [p.name for p in list_checkpoints(tmp_path / "killed")] == ["checkpoint-5", "checkpoint-10"]

    collator = CountingCollator(tokenizer)
    resumed = Trainer(
        tiny_model(seed=99),  # different init: everything must come from the checkpoint
        make_args(tmp_path / "killed", **common),
        train_dataset=data,
        data_collator=collator,
        processing_class=tokenizer,
    )
    resumed.train(resume_from_checkpoint=True)

    assert resumed.state.global_step == full.state.global_step == 24
    for (name, a), b in zip(weights(full.model).items(), weights(resumed.model).values(), strict=True):
        assert torch.equal(a, b), name  # bitwise on CPU fp32
    # Only the 14 remaining steps were loaded: consumed batches are never iterated again.
    assert collator.calls == 14 * accumulation
    lr_full = {h["step"]: h["learning_rate"] for h in full.state.log_history if "learning_rate" in h}
    lr_resumed = {h["step"]: h["learning_rate"] for h in resumed.state.log_history if "learning_rate" in h}
    assert all(lr_resumed[s] == lr_full[s] for s in range(11, 25))  # no learning-rate jump


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data, tokenizer):
    class PoisonAt(Trainer):
        def compute_loss(self, model, inputs):
            loss = super().compute_loss(model, inputs)
            return loss * float("nan") if self.state.global_step >= 6 else loss

    trainer = PoisonAt(
        tiny_model(),
        make_args(tmp_path, save_strategy="steps", save_steps=3),
        train_dataset=data,
        processing_class=tokenizer,
    )
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at step 7.*checkpoint-6"):
        trainer.train()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-6"]
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path / "checkpoint-6")
    assert all(torch.isfinite(p).all() for p in reloaded.parameters())


def test_early_stopping_stops(tmp_path, data, tokenizer):
    trainer = Trainer(
        tiny_model(),
        make_args(
            tmp_path,
            num_train_epochs=3,
            eval_strategy="steps",
            eval_steps=1,
            metric_for_best_model="constant",
        ),
        train_dataset=data,
        eval_dataset=data.select(range(16)),
        processing_class=tokenizer,
        compute_metrics=lambda pred: {"constant": 1.0},
        callbacks=[EarlyStoppingCallback(patience=2)],
    )
    trainer.train()
    assert trainer.state.global_step == 3  # best at step 1, no improvement at 2 and 3


def test_distillation_moves_student_toward_teacher(tmp_path, data, tokenizer):
    teacher = tiny_model(seed=1)
    Trainer(
        teacher, make_args(tmp_path / "teacher", num_train_epochs=3), train_dataset=data, processing_class=tokenizer
    ).train()
    teacher.eval()
    student = tiny_model(seed=2, hidden_size=16, intermediate_size=32)
    batch = tokenizer(data["text"][:64], truncation=True, max_length=32, padding=True, return_tensors="pt")

    def gap() -> float:
        with torch.inference_mode():
            s = torch.log_softmax(student.eval()(**batch).logits, -1)
            t = torch.log_softmax(teacher(**batch).logits, -1)
        return torch.nn.functional.kl_div(s, t, log_target=True, reduction="batchmean").item()

    before = gap()
    DistillationTrainer(
        student,
        make_args(tmp_path / "student", num_train_epochs=3, distillation_alpha=1.0, distillation_temperature=2.0),
        teacher_model=teacher,
        train_dataset=data,
        processing_class=tokenizer,
    ).train()
    assert gap() < 0.5 * before


# ------------------------------------------------------------------ seed compatibility
def test_tokenizer_argument_is_the_processing_class_with_a_warning(tmp_path, data, tokenizer):
    """The seeds write ``Trainer(..., tokenizer=tokenizer)``: it trains and saves the tokenizer, with a FutureWarning."""
    with pytest.warns(FutureWarning, match=r"tokenizer=.*processing_class=") as caught:
        trainer = Trainer(tiny_model(), make_args(tmp_path, max_steps=2), train_dataset=data, tokenizer=tokenizer)
    assert caught[0].filename == __file__  # points at the caller's line, not at the Trainer
    assert trainer.processing_class is tokenizer
    with pytest.warns(FutureWarning, match="processing_class"):
        assert trainer.tokenizer is tokenizer  # read back under the old name too
    assert trainer.train().global_step == 2  # rows of unequal length: padded by the tokenizer's collator
    saved = trainer.save_model(tmp_path / "final")
    assert AutoTokenizer.from_pretrained(saved)("a fine film").input_ids == tokenizer("a fine film").input_ids


def test_tokenizer_and_processing_class_together_are_refused(tmp_path, data, tokenizer):
    with pytest.raises(ValueError, match=r"both tokenizer= and processing_class="):
        Trainer(tiny_model(), make_args(tmp_path), train_dataset=data, tokenizer=tokenizer, processing_class=tokenizer)


# ------------------------------------------------------------------ bad input
def test_dataset_without_input_ids_names_the_column(tmp_path, rotten_tomatoes):
    raw = datasets.Dataset.from_list(rotten_tomatoes[:8])
    with pytest.raises(ValueError, match=r"train_dataset has no 'input_ids' column \(tokenize the 'text' column"):
        Trainer(tiny_model(), make_args(tmp_path), train_dataset=raw)


def test_an_image_model_takes_pixel_values_or_a_collator_that_builds_them(tmp_path, mnist_digits):
    from modelcore import ViTConfig, ViTForImageClassification, ViTImageProcessor

    digits, labels = mnist_digits
    model = ViTForImageClassification(
        ViTConfig(image_size=28, patch_size=7, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, num_labels=10)
    )  # fmt: skip
    processor = ViTImageProcessor(size={"height": 28, "width": 28})
    pixels = processor(list(digits), return_tensors="np")["pixel_values"]
    processed = datasets.Dataset.from_dict({"pixel_values": pixels.tolist(), "label": labels.tolist()})
    assert Trainer(model, make_args(tmp_path), train_dataset=processed).train().global_step == 2
    raw = datasets.Dataset.from_dict({"image": [d.tolist() for d in digits], "label": labels.tolist()})
    with pytest.raises(ValueError, match=r"no 'pixel_values' column \(or pass remove_unused_columns=False with a"):
        Trainer(model, make_args(tmp_path), train_dataset=raw)

    def collate(rows):
        images = [np.asarray(row["image"], np.uint8) for row in rows]
        return {"pixel_values": processor(images, return_tensors="pt")["pixel_values"],
                "labels": torch.tensor([row["label"] for row in rows])}  # fmt: skip

    args = make_args(tmp_path, remove_unused_columns=False)
    trainer = Trainer(model, args, train_dataset=raw, data_collator=collate)
    assert trainer.train().global_step == 2
    predicted = trainer.predict(raw)  # no lengths to sort by: dataset order
    assert predicted.predictions.shape == (30, 10) and list(predicted.label_ids) == labels.tolist()
    assert 0 < trainer.evaluate(raw)["eval_loss"] < 10


def test_dataset_without_labels(tmp_path, data, tokenizer):
    with pytest.raises(ValueError, match="no label column"):
        Trainer(
            tiny_model(), make_args(tmp_path), train_dataset=data.remove_columns("label"), processing_class=tokenizer
        )


def test_empty_dataset(tmp_path, data, tokenizer):
    with pytest.raises(ValueError, match="train_dataset is empty"):
        Trainer(tiny_model(), make_args(tmp_path), train_dataset=data.select([]), processing_class=tokenizer)


def test_labels_outside_num_labels(tmp_path, data, tokenizer):
    bad = data.map(lambda row, i: {"label": 5 if i == 3 else row["label"]}, with_indices=True)
    with pytest.raises(ValueError, match=r"label 5 outside \[0, 2\)"):
        Trainer(tiny_model(), make_args(tmp_path), train_dataset=bad, processing_class=tokenizer)


@pytest.mark.parametrize(("field", "value"), [("per_device_train_batch_size", 0), ("learning_rate", -1e-5)])
def test_bad_arguments_name_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        make_args(tmp_path, **{field: value})


def test_unwritable_output_dir(tmp_path, data, tokenizer):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="cannot be written"):
        Trainer(tiny_model(), make_args(blocker / "out"), train_dataset=data, processing_class=tokenizer)


def test_ranks_checking_one_output_dir_at_once_all_pass(tmp_path):
    """The ranks of a distributed run check the shared output_dir at the same moment (a shared probe file failed
    one rank's check in CI); nothing of the check is left behind."""
    from modelcore.trainer.trainer import _check_output_dir

    errors: list[Exception] = []

    def check_many() -> None:
        for _ in range(200):
            try:
                _check_output_dir(tmp_path / "out")
            except OSError as error:
                errors.append(error)

    threads = [threading.Thread(target=check_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and list((tmp_path / "out").iterdir()) == []


def test_resuming_from_another_models_checkpoint_is_refused(tmp_path, data, tokenizer):
    args = make_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    Trainer(tiny_model(), args, train_dataset=data, processing_class=tokenizer).train()
    other = tiny_model(hidden_size=48, num_attention_heads=4)
    with pytest.raises(ValueError, match="written for another model"):
        Trainer(other, make_args(tmp_path, max_steps=4), train_dataset=data, processing_class=tokenizer).train(
            resume_from_checkpoint=True
        )


def test_no_autocast_left_on_forward_after_bf16_training(tmp_path, data, tokenizer):
    model = tiny_model()
    Trainer(model, make_args(tmp_path, bf16=True, max_steps=2), train_dataset=data, processing_class=tokenizer).train()
    batch = tokenizer(["a fine film"], return_tensors="pt")
    with torch.inference_mode():
        assert model(**batch).logits.dtype == torch.float32


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_bf16_kernels_warns(tmp_path, data, tokenizer, monkeypatch, caplog, native):
    from modelcore.trainer import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_bf16_kernels", lambda: native)
    with caplog.at_level("WARNING", logger="modelcore.trainer.trainer"):
        Trainer(tiny_model(), make_args(tmp_path, bf16=True), train_dataset=data, processing_class=tokenizer)
        Trainer(tiny_model(), make_args(tmp_path), train_dataset=data, processing_class=tokenizer)  # fp32: silent
    warned = [r.getMessage() for r in caplog.records if "bf16 matrix kernels" in r.getMessage()]
    assert len(warned) == (0 if native else 1)
    assert all("bf16=False" in message for message in warned)


def test_cpu_bf16_kernel_check_agrees_with_the_cpu_flags():
    from pathlib import Path

    from modelcore.trainer.trainer import cpu_has_bf16_kernels

    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    if {"avx512bw", "avx512vl", "avx512dq"} <= flags or "amx_bf16" in flags:
        assert cpu_has_bf16_kernels()
    elif "avx2" in flags and not flags & {"avx512bw", "avx_ne_convert"}:  # this EPYC: emulated bf16
        assert not cpu_has_bf16_kernels()


@pytest.mark.slow
def test_torch_compile_trains_like_eager_and_saves_plain_weight_names(tmp_path, data, tokenizer):
    """``torch_compile=True`` runs the compiled graph (inductor, dynamic shapes) and changes no result."""
    from safetensors.torch import load_file

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    losses = {}
    for compiled in (False, True):
        out = tmp_path / str(compiled)
        args = make_args(out, torch_compile=compiled, max_steps=4, save_strategy="steps", save_steps=4)
        # no dropout: inductor draws its own random masks, so only a deterministic model can match eager
        model = tiny_model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        trainer = Trainer(model, args, train_dataset=data, processing_class=tokenizer)
        trainer.train()
        losses[compiled] = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        if compiled:
            assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # dynamo did capture the forward
            assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])
            assert not isinstance(trainer.model, torch._dynamo.eval_frame.OptimizedModule)
            names = set(load_file(out / "checkpoint-4" / "model.safetensors"))
            assert names == set(tiny_model().state_dict()), "no _orig_mod. prefixes in what was saved"
    assert len(losses[True]) == 4
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)  # same batches, same math: only fusion rounding
