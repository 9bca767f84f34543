"""TrainingArguments: defaults, validation messages, derived values and file round trips."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from modelcore.trainer.arguments import TrainingArguments


def make(**kwargs) -> TrainingArguments:
    return TrainingArguments(output_dir=kwargs.pop("output_dir", "out"), **kwargs)


def test_defaults_follow_transformers_except_where_documented():
    args = make()
    assert args.per_device_train_batch_size == 8 and args.gradient_accumulation_steps == 1
    assert args.num_train_epochs == 3.0 and args.max_steps == -1
    assert args.learning_rate == 5e-5 and args.weight_decay == 0.0 and args.max_grad_norm == 1.0
    assert (args.adam_beta1, args.adam_beta2, args.adam_epsilon) == (0.9, 0.999, 1e-8)
    assert args.lr_scheduler_type == "linear" and args.warmup_ratio == 0.0 and args.warmup_steps == 0
    assert args.eval_strategy == "no" and args.save_strategy == "steps" and args.save_steps == 500
    assert args.logging_steps == 50 and args.seed == 42
    assert args.metric_for_best_model is None and args.greater_is_better is None
    assert args.mixed_precision == "no"
    assert args.group_by_length is False
    # Our deliberate differences.
    assert args.optim == "adamw_torch_fused"
    assert args.report_to == []
    assert args.log_level == "info"


def test_keyword_only_and_output_dir_required():
    with pytest.raises(TypeError):
        TrainingArguments("out")  # type: ignore[misc]
    with pytest.raises(TypeError, match="output_dir"):
        TrainingArguments()  # type: ignore[call-arg]


def test_path_output_dir_and_int_floats_are_normalized(tmp_path):
    args = make(output_dir=tmp_path, num_train_epochs=2, learning_rate=1, max_grad_norm=2)
    assert args.output_dir == str(tmp_path)
    assert isinstance(args.num_train_epochs, float) and isinstance(args.learning_rate, float)
    assert isinstance(args.max_grad_norm, float)


def custom() -> TrainingArguments:
    return make(
        run_name="r1",
        per_device_train_batch_size=4,
        learning_rate=3e-4,
        label_names=["labels"],
        bf16=True,
        eval_strategy="steps",
        eval_steps=100,
        save_steps=200,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        report_to="mlflow",
        warmup_ratio=0.1,
        max_grad_norm=None,
    )


def test_json_round_trip(tmp_path):
    args = custom()
    args.to_json_file(tmp_path / "args.json")
    assert json.loads((tmp_path / "args.json").read_text()) == args.to_dict()
    assert TrainingArguments.from_json_file(tmp_path / "args.json") == args
    assert TrainingArguments.from_dict(json.loads(args.to_json_string())) == args


def test_yaml_round_trip(tmp_path):
    args = custom()
    args.to_yaml_file(tmp_path / "args.yaml")
    assert TrainingArguments.from_yaml_file(tmp_path / "args.yaml") == args


def test_yaml_reads_exponent_without_dot_as_float(tmp_path):
    # Plain PyYAML (YAML 1.1) would read 5e-5 as the string "5e-5".
    path = tmp_path / "args.yaml"
    path.write_text("output_dir: out\nlearning_rate: 5e-5\nadam_epsilon: 1E-6\n")
    args = TrainingArguments.from_yaml_file(path)
    assert args.learning_rate == 5e-5 and args.adam_epsilon == 1e-6


def test_file_order_follows_the_groups():
    keys = list(make().to_dict())
    assert keys[0] == "output_dir" and keys[-1] == "distillation_temperature"
    assert keys == [field.name for field in dataclasses.fields(TrainingArguments)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be >= 1, got 0"),
        ({"per_device_eval_batch_size": -1}, "per_device_eval_batch_size"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"logging_steps": 0}, "logging_steps"),
        ({"save_steps": 0}, "save_steps"),
        ({"learning_rate": -1e-5}, "learning_rate must be >= 0, got -1e-05"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number, got nan"),
        ({"num_train_epochs": float("inf")}, "num_train_epochs must be a finite number, got inf"),
        ({"max_grad_norm": float("inf")}, "max_grad_norm must be a finite number"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"adam_beta1": 1.0}, "adam_beta1"),
        ({"adam_beta2": -0.1}, "adam_beta2"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
        ({"bf16": True, "fp16": True}, "bf16 and fp16"),
        ({"lr_scheduler_type": "cosine_restarts"}, "lr_scheduler_type must be one of linear, cosine"),
        ({"optim": "sgd"}, "optim must be one of adamw_torch, adamw_torch_fused"),
        ({"eval_strategy": "sometimes"}, "eval_strategy"),
        ({"save_strategy": "always"}, "save_strategy"),
        ({"log_level": "loud"}, "log_level"),
        ({"torch_compile_mode": "fastest"}, "torch_compile_mode"),
        ({"eval_strategy": "steps"}, "eval_steps must be set"),
        ({"eval_strategy": "steps", "eval_steps": 0}, "eval_steps"),
        ({"eval_strategy": "steps", "eval_steps": 1.5}, "eval_steps"),
        ({"load_best_model_at_end": True}, "load_best_model_at_end needs evaluations"),
        ({"load_best_model_at_end": True, "eval_strategy": "epoch"}, "save_strategy to match eval_strategy"),
        (
            {"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 300, "save_steps": 500},
            "save_steps to be a multiple of eval_steps",
        ),
        ({"save_strategy": "best"}, "save_strategy 'best' needs evaluations"),
        ({"save_total_limit": 0}, "save_total_limit"),
        ({"num_train_epochs": 0}, "num_train_epochs"),
        ({"max_steps": 0}, "max_steps"),
        ({"distillation_alpha": 1.5}, "distillation_alpha must be in [0, 1], got 1.5"),
        ({"distillation_temperature": 0.0}, "distillation_temperature"),
        ({"output_dir": ""}, "output_dir"),
        ({"per_device_train_batch_size": "8"}, "per_device_train_batch_size must be int, got '8' (str)"),
        ({"per_device_train_batch_size": True}, "per_device_train_batch_size must be int"),
        ({"learning_rate": "5e-5"}, "learning_rate must be float"),
        ({"bf16": "yes"}, "bf16 must be bool"),
        ({"label_names": ["labels", 3]}, "label_names"),
        ({"report_to": "wandb"}, "report_to"),
        ({"report_to": ["none", "mlflow"]}, "report_to"),
    ],
)
def test_invalid_value_names_its_field(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make(**kwargs)


def test_max_steps_makes_epochs_irrelevant():
    assert make(max_steps=100, num_train_epochs=0).max_steps == 100


def test_consistent_load_best_defaults_metric_to_loss():
    args = make(load_best_model_at_end=True, eval_strategy="steps", eval_steps=100, save_steps=500)
    assert args.metric_for_best_model == "loss" and args.greater_is_better is False
    args = make(load_best_model_at_end=True, eval_strategy="epoch", save_strategy="epoch")
    assert args.metric_for_best_model == "loss"
    args = make(load_best_model_at_end=True, eval_strategy="epoch", save_strategy="best")
    assert args.metric_for_best_model == "loss"


@pytest.mark.parametrize(
    ("metric", "given", "expected"),
    [
        ("loss", None, False),
        ("eval_loss", None, False),
        ("accuracy", None, True),
        ("eval_f1", None, True),
        ("accuracy", False, False),
        ("loss", True, True),
        (None, None, None),
    ],
)
def test_greater_is_better_inference(metric, given, expected):
    assert make(metric_for_best_model=metric, greater_is_better=given).greater_is_better is expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, []),
        ([], []),
        ("none", []),
        (["none"], []),
        ("mlflow", ["mlflow"]),
        (["mlflow"], ["mlflow"]),
        (("mlflow", "mlflow"), ["mlflow"]),
        ("all", ["mlflow"]),
    ],
)
def test_report_to_normalization(given, expected):
    assert make(report_to=given).report_to == expected


@pytest.mark.parametrize(
    ("ratio", "steps", "total", "expected"),
    [
        (0.0, 0, 1000, 0),
        (0.1, 0, 1000, 100),
        (0.1, 0, 1005, 101),  # rounded up, as in transformers
        (0.1, 50, 1000, 50),  # warmup_steps > 0 overrides warmup_ratio
        (0.0, 50, 1000, 50),
    ],
)
def test_warmup_steps(ratio, steps, total, expected):
    assert make(warmup_ratio=ratio, warmup_steps=steps).get_warmup_steps(total) == expected


def test_fractional_eval_steps_resolve_against_total():
    args = make(eval_strategy="steps", eval_steps=0.25)
    assert args.get_eval_steps(1000) == 250 and args.get_eval_steps(2) == 1
    assert make(eval_strategy="steps", eval_steps=40).get_eval_steps(1000) == 40
    assert make().get_eval_steps(1000) is None


def test_global_batch_size_and_mixed_precision():
    args = make(per_device_train_batch_size=4, gradient_accumulation_steps=8, fp16=True)
    assert args.global_train_batch_size() == 32 and args.global_train_batch_size(4) == 128
    assert args.mixed_precision == "fp16" and make(bf16=True).mixed_precision == "bf16"
    with pytest.raises(ValueError, match="world_size"):
        args.global_train_batch_size(0)


def test_compile_mode_turns_compile_on():
    assert make(torch_compile_mode="max-autotune").torch_compile is True
    assert make().torch_compile is False


def test_unknown_key_in_from_dict_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"lerning_rate \(did you mean learning_rate\?\)"):
        TrainingArguments.from_dict({"output_dir": "out", "lerning_rate": 1e-4})
    with pytest.raises(ValueError, match="bogus_key"):
        TrainingArguments.from_dict({"output_dir": "out", "bogus_key": 1})


def test_unknown_key_in_files_is_an_error_naming_it(tmp_path: Path):
    data = {**make().to_dict(), "warmup_step": 10}
    (tmp_path / "args.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="warmup_step"):
        TrainingArguments.from_json_file(tmp_path / "args.json")
    (tmp_path / "args.yaml").write_text("output_dir: out\nwarmup_step: 10\n")
    with pytest.raises(ValueError, match="warmup_step"):
        TrainingArguments.from_yaml_file(tmp_path / "args.yaml")


def test_malformed_files_name_the_file(tmp_path: Path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        TrainingArguments.from_json_file(tmp_path / "bad.json")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="list.yaml: expected a mapping"):
        TrainingArguments.from_yaml_file(tmp_path / "list.yaml")


def test_replace_revalidates():
    with pytest.raises(ValueError, match="learning_rate"):
        dataclasses.replace(make(), learning_rate=-1.0)
