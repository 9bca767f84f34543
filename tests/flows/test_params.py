"""RetrainParams and the flow's command line: defaults, overrides, and bad values named by field."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from flows.cli import format_summary, parse_params
from flows.params import RetrainParams


def test_defaults_are_the_embedded_demo():
    params = RetrainParams()
    assert (params.base_model, params.dataset, params.max_length) == ("minilm-l6", "rotten-tomatoes", 64)
    training = params.training
    assert (training.num_train_epochs, training.per_device_train_batch_size, training.learning_rate) == (1.0, 32, 5e-5)
    assert training.seed == 0 and params.test_size == 0.2


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"training": {"learning_rate": -1}}, "training.learning_rate"),
        ({"training": {"per_device_train_batch_size": 0}}, "training.per_device_train_batch_size"),
        ({"test_size": 1.5}, "test_size"),
        ({"registered_model_name": "bad name/with slash"}, "registered_model_name"),
        ({"export_formats": ["tflite"]}, "export_formats.0"),
        ({"quantization": ["int3"]}, "quantization.0"),
        ({"max_shard_size": "lots"}, "max_shard_size"),
        ({"learning_rate": 1e-4}, "learning_rate"),  # a training field at the top level: unknown there
        ({"training": {"learnig_rate": 1e-4}}, "training.learnig_rate"),
        ({"min_metric": 1.5}, "min_metric"),
        ({"label_map": {"Fresh": " "}}, "label_map"),
        ({"label_map": "{not json"}, "label_map"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(values, field):
    with pytest.raises(ValidationError) as info:
        RetrainParams.model_validate(values)
    assert field in [".".join(map(str, e["loc"])) for e in info.value.errors()]


def test_flags_override_the_params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("dataset: data.csv\ntraining:\n  learning_rate: 0.0001\n  max_steps: 20\n")
    argv = ["--params-file", str(path), "--max-steps", "5", "--export-formats", "safetensors", "onnx", "--bf16"]
    params, _ = parse_params(RetrainParams, argv, prog="retrain")
    assert params.dataset == "data.csv" and params.training.learning_rate == 1e-4
    assert params.training.max_steps == 5 and params.training.bf16 is True
    assert params.export_formats == ["safetensors", "onnx"]


def test_a_bad_flag_exits_2_naming_the_field(capsys):
    with pytest.raises(SystemExit) as info:
        parse_params(RetrainParams, ["--learning-rate", "-3"], prog="retrain")
    assert info.value.code == 2
    assert "training.learning_rate" in capsys.readouterr().err


def test_a_params_file_that_is_not_a_mapping_is_an_error(tmp_path, capsys):
    path = tmp_path / "params.json"
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(SystemExit):
        parse_params(RetrainParams, ["--params-file", str(path)], prog="retrain")
    assert "expected a mapping" in capsys.readouterr().err


def test_the_flow_rejects_invalid_parameters_as_the_ui_sends_them():
    """The UI and API send JSON parameters; Prefect validates them with the pydantic model."""
    from prefect.exceptions import ParameterTypeError

    from flows.retrain import retrain

    with pytest.raises(ParameterTypeError, match="learning_rate"):
        retrain.validate_parameters({"params": {"training": {"learning_rate": "-1"}}})
    ok = retrain.validate_parameters({"params": {"training": {"max_steps": 3}}})
    assert ok["params"].training.max_steps == 3


def test_summary_names_version_aliases_and_the_ui_command():
    text = format_summary(
        {
            "metrics": {"accuracy": 0.8312},
            "registered_model": "m",
            "version": "2",
            "aliases": ["challenger"],
            "champion_version": "1",
            "promotion": "gain too small",
            "tracking_uri": "sqlite:////x/mlflow.db",
            "tokenization_cache": "hit",
            "mlflow_run_id": "r",
        }
    )
    assert "0.8312" in text and "m version 2 (aliases: challenger)" in text
    assert "mlflow ui --backend-store-uri sqlite:////x/mlflow.db --host 127.0.0.1" in text
    assert "pipeline('text-classification', model='models:/m@champion')" in text
    lm = format_summary({"task": "causal-lm", "metrics": {"perplexity": 16.2}, "registered_model": "lm"})
    assert "pipeline('text-generation', model='models:/lm@champion')('The river')" in lm


def test_data_and_promotion_flags_reach_the_params():
    argv = ["--label-map", '{"Fresh": "fresh", "fresh ": "fresh"}', "--allow-similar-labels"]
    argv += ["--min-metric", "0.75", "--no-register-model"]
    params, _ = parse_params(RetrainParams, argv, prog="retrain")
    assert params.label_map == {"Fresh": "fresh", "fresh ": "fresh"} and params.allow_similar_labels is True
    assert params.min_metric == 0.75 and params.register_model is False
    defaults = RetrainParams()
    assert (defaults.label_map, defaults.allow_similar_labels, defaults.min_metric, defaults.register_model) == (
        {},
        False,
        None,
        True,
    )


def test_an_unregistered_task_is_refused_listing_the_registered_ones():
    with pytest.raises(ValidationError) as info:
        RetrainParams.model_validate({"task": "summarization"})
    message = str(info.value)
    assert "unknown task 'summarization'" in message and "text-classification" in message and "causal-lm" in message


def test_a_causal_lm_run_takes_its_task_defaults_and_refuses_what_it_cannot_do():
    params = RetrainParams.model_validate({"task": "text-generation", "training": {"max_steps": 7}})
    assert (params.task, params.base_model, params.dataset) == ("causal-lm", "smollm2-135m-gguf", "wikipedia-summaries")
    assert params.promotion_metric == "perplexity" and params.lora.enabled
    assert params.training.max_steps == 7 and params.training.per_device_train_batch_size == 8
    for values, message in (
        ({"promotion_metric": "accuracy"}, "not a metric of task causal-lm"),
        ({"min_metric": 0.5}, "lower is better"),
    ):
        with pytest.raises(ValidationError, match=message):
            RetrainParams.model_validate({"task": "causal-lm", **values})
    with pytest.raises(ValidationError, match="LoRA adapters for causal-lm runs, not for text-classification"):
        RetrainParams.model_validate({"lora": {"enabled": True}})


def test_an_image_run_takes_its_task_defaults_and_refuses_exports_it_cannot_check():
    params, _ = parse_params(RetrainParams, ["--task", "image-classification", "--num-train-epochs", "3"], prog="r")
    assert (params.base_model, params.dataset, params.registered_model_name) == (
        "vit_mnist_patch4_28",
        "mnist-5k",
        "mnist-vit",
    )
    assert params.training.num_train_epochs == 3 and params.training.lr_scheduler_type == "cosine"
    assert params.promotion_metric == "accuracy" and params.export_formats == ["safetensors"]
    # benchmarks/bench_vit_mnist.py's recipe: randomly moved digits, label smoothing
    assert params.training.augment is True and params.training.label_smoothing_factor == 0.1
    arguments = params.training.to_training_arguments()
    assert arguments["augment"] is True and arguments["label_smoothing_factor"] == 0.1
    off, _ = parse_params(RetrainParams, ["--task", "image-classification", "--no-augment"], prog="r")
    assert off.training.augment is False
    text_run = RetrainParams.model_validate({})
    assert text_run.training.augment is False and text_run.training.label_smoothing_factor == 0.0
    with pytest.raises(ValidationError, match="training.augment moves images; task text-classification takes text"):
        RetrainParams.model_validate({"training": {"augment": True}})
    for values, message in (
        ({"export_formats": ["safetensors", "onnx"]}, "task image-classification has no ONNX export"),
        ({"quantization": ["int8_dynamic"]}, "task image-classification takes images"),
        ({"lora": {"enabled": True}}, "not for image-classification"),
    ):
        with pytest.raises(ValidationError, match=message):
            RetrainParams.model_validate({"task": "image-classification", **values})
    text = format_summary({"task": "image-classification", "metrics": {"accuracy": 0.97}, "registered_model": "v"})
    assert "pipeline('image-classification', model='models:/v@champion')('path/to/image.png')" in text


def test_lora_flags_carry_their_prefix():
    params, _ = parse_params(RetrainParams, ["--task", "causal-lm", "--lora-r", "4", "--no-lora-enabled"], prog="r")
    assert params.lora.r == 4 and not params.lora.enabled


def test_distributed_training_is_one_node_unless_asked_and_its_flags_carry_their_prefix():
    assert RetrainParams().distributed.model_dump() == {
        "nodes": 1, "nproc_per_node": 1, "max_restarts": 3, "platform": "netns"
    }  # fmt: skip
    params, _ = parse_params(RetrainParams, ["--distributed-nodes", "2", "--distributed-max-restarts", "1"], prog="r")
    assert (params.distributed.nodes, params.distributed.max_restarts) == (2, 1)
    with pytest.raises(ValidationError, match="distributed.nodes"):
        RetrainParams.model_validate({"distributed": {"nodes": 0}})
    with pytest.raises(ValidationError, match="distributed.platform"):
        RetrainParams.model_validate({"distributed": {"platform": "slurm"}})


def test_every_parameter_explains_itself():
    """The Prefect form shows these: a field without a description is a field users guess at."""
    from flows.params import LoraSettings, TrainingSettings

    for model in (RetrainParams, TrainingSettings, LoraSettings):
        schema = model.model_json_schema()
        undocumented = [name for name, field in schema["properties"].items() if "description" not in field]
        assert undocumented == [], model.__name__
        assert not any(field.get("description", "").startswith(">") for field in schema["properties"].values())
    schema = RetrainParams.model_json_schema()
    training = schema["$defs"]["TrainingSettings"]["properties"]
    # the bounds the flow enforces are told where the form shows text, not only in the schema
    assert training["learning_rate"]["description"].endswith("(> 0, <= 1)")
    assert schema["properties"]["test_size"]["description"].endswith("(> 0, < 1)")
    assert schema["properties"]["task"]["enum"] == ["text-classification", "causal-lm", "image-classification"]
    assert schema["properties"]["training"]["title"] == "Training" and schema["properties"]["lora"]["title"] == "LoRA"
    # the common fields first: what to train, on what, under which name, how long
    assert list(schema["properties"])[:6] == [
        "task", "base_model", "dataset", "registered_model_name", "max_examples", "training"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("max_steps", "logging_steps", "expected"),
    [(20, 50, 2), (6, 50, 1), (100, 50, 10), (1000, 50, 50), (20, 1, 1), (-1, 50, 50)],
)
def test_logging_steps_adapt_to_max_steps_so_a_short_run_draws_a_curve(max_steps, logging_steps, expected):
    from flows.params import TrainingSettings

    settings = TrainingSettings(max_steps=max_steps, logging_steps=logging_steps)
    assert settings.to_training_arguments()["logging_steps"] == expected
