"""The task registry: lookups, and every registered task run end to end on a tiny model with real data.

A task registered in ``modelcore.task_registry`` enrols itself here: prepare real review snippets (a text task)
or real MNIST digits (an image task) with its ``prepare``, train 2 steps with its collator, evaluate, compute its
baseline, export to ONNX when it declares a graph, and answer through its MLflow pyfunc when it declares one.
"""

from __future__ import annotations

import math

import pytest
import torch

import modelcore
from modelcore import AutoTokenizer, BertConfig, LlamaConfig, Trainer, TrainingArguments, ViTConfig
from modelcore.auto.registry import FAMILIES
from modelcore.task_registry import (
    Metric,
    TaskSpec,
    UnknownTaskError,
    all_tasks,
    get_task,
    register_task,
    task_for_class_name,
    task_for_model,
)

MAX_LENGTH = 24
REFERENCE_FIELDS = ("prepare", "collator", "evaluate", "baseline", "onnx_graph", "pyfunc_outputs", "pyfunc_predict")


def tiny_config(model_type: str, vocab_size: int, pad_token_id: int) -> object:
    """A tiny config of each family the suite can build (a new family adds its line here)."""
    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, pad_token_id=0)
    common["pad_token_id"] = pad_token_id
    if model_type == "llama":
        return LlamaConfig(**common, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    if model_type == "bert":
        return BertConfig(**common, num_attention_heads=4, max_position_embeddings=64)
    if model_type == "vit":
        return ViTConfig(image_size=28, patch_size=7, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_labels=10)  # fmt: skip
    return None


def family_for(spec: TaskSpec) -> str:
    """The first family with a head for ``spec`` that the suite can build."""
    for model_type, family in FAMILIES.items():
        config = tiny_config(model_type, 8, 0)
        if spec.auto_class in family.models and config is not None and _modality(config) == spec.modality:
            return model_type
    raise AssertionError(f"no family the suite can build serves task {spec.name!r} ({spec.auto_class})")


@pytest.fixture(scope="module")
def rows(rotten_tomatoes) -> tuple[dict[str, list], dict[str, list]]:
    """48 training and 16 held-out real review snippets, as columns."""
    picked = rotten_tomatoes[:32] + rotten_tomatoes[-32:]  # both labels
    train, test = picked[::4] + picked[1::4] + picked[2::4], picked[3::4]
    as_columns = lambda part: {"text": [r["text"] for r in part], "label": [r["label"] for r in part]}  # noqa: E731
    return as_columns(train), as_columns(test)


def _modality(config: object) -> str:
    return "image" if hasattr(config, "image_size") else "text"


@pytest.fixture(scope="module")
def images(mnist_digits) -> tuple[dict[str, list], dict[str, list]]:
    """20 training and 10 held-out real digits (each class in both), as PNG files' bytes, as columns."""
    import io

    from PIL import Image

    def png(pixels):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return buffer.getvalue()

    digits, labels = mnist_digits  # 3 of each class, in class order
    as_columns = lambda idx: {"image": [png(digits[i]) for i in idx], "label": [int(labels[i]) for i in idx]}  # noqa: E731
    return as_columns([i for i in range(30) if i % 3 != 2]), as_columns(range(2, 30, 3))


@pytest.mark.parametrize("spec", all_tasks(), ids=lambda spec: spec.name)
def test_registered_task_trains_evaluates_exports_and_serves(spec, rows, images, minilm_dir, tmp_path):
    import base64

    import datasets

    model_type = family_for(spec)
    if spec.modality == "image":
        from modelcore import ViTImageProcessor

        (train, test), tokenizer = images, ViTImageProcessor(size={"height": 28, "width": 28})
        request = [base64.b64encode(image).decode() for image in test["image"][:3]]
    else:
        (train, test), tokenizer = rows, AutoTokenizer.from_pretrained(minilm_dir)
        request = test["text"][:3]
    torch.manual_seed(0)
    text = spec.modality == "text"
    config = tiny_config(model_type, len(tokenizer) if text else 8, tokenizer.pad_token_id if text else 0)
    model = getattr(modelcore, spec.auto_class).from_config(config)
    assert task_for_model(model) is spec
    base = tmp_path / "base"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)

    dataset = datasets.Dataset.from_dict(spec.function("prepare")(tokenizer, train, MAX_LENGTH))
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, report_to=[], disable_tqdm=True,
        remove_unused_columns=spec.modality == "text",  # an image task's collator decodes the images
    )  # fmt: skip
    trainer = Trainer(model, args, train_dataset=dataset, data_collator=spec.function("collator")(tokenizer))
    result = trainer.train()
    assert result.global_step == 2 and math.isfinite(result.training_loss)

    model.eval()
    metrics = spec.function("evaluate")(model, tokenizer, test, MAX_LENGTH)
    for metric in spec.metrics:
        assert math.isfinite(metrics[metric.name]), metric
    floor = spec.function("baseline")(train, test, str(base), MAX_LENGTH)
    assert math.isfinite(floor[spec.decides.name])

    trained = tmp_path / "trained"
    model.save_pretrained(trained)
    tokenizer.save_pretrained(trained)
    if spec.onnx_graph is not None:
        from modelcore.exporters import export_onnx
        from modelcore.exporters.onnx_export import ORT_CLASSES

        export_onnx(trained, tmp_path / "onnx", task=spec.name, report=False, optimize=False)
        ort_model = ORT_CLASSES[spec.pipeline_task].from_pretrained(tmp_path / "onnx")
        assert task_for_model(ort_model) is spec
    if spec.pyfunc_predict is not None:
        import mlflow
        import pandas as pd

        from modelcore.integrations.mlflow_models import save_pyfunc

        save_pyfunc(trained, tmp_path / "pyfunc", task=spec.name, max_length=MAX_LENGTH)
        served = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
        params = {p.name: p.default for p in spec.pyfunc_params}
        if "max_new_tokens" in params:
            params["max_new_tokens"] = 4
        frame = served.predict(pd.DataFrame({spec.input_column: request}), params=params or None)
        expected = [name for _, name in spec.function("pyfunc_outputs")(dict(model.config.to_dict()))]
        assert list(frame.columns) == expected and len(frame) == 3


@pytest.mark.parametrize("spec", all_tasks(), ids=lambda spec: spec.name)
def test_every_reference_of_a_task_resolves(spec):
    for field in REFERENCE_FIELDS:
        if getattr(spec, field) is not None:
            assert callable(spec.function(field)), field
    assert hasattr(modelcore, spec.auto_class)
    assert spec.metrics and spec.decides is spec.metrics[0]


def test_names_and_aliases_resolve_to_one_task():
    assert get_task("sentiment-analysis") is get_task("text-classification")
    assert get_task("text-generation") is get_task("causal-lm")
    assert get_task("causal-lm").decides == Metric("perplexity", greater_is_better=False)


def test_unknown_task_lists_the_registered_ones():
    with pytest.raises(UnknownTaskError) as caught:
        get_task("summarisation")
    for spec in all_tasks():
        assert spec.name in str(caught.value)


def test_a_name_taken_by_another_task_is_refused():
    spec = get_task("text-classification")
    clash = TaskSpec(**{**spec.__dict__, "name": "my-classifier", "aliases": ("causal-lm",)})
    with pytest.raises(ValueError, match="already registered for task 'causal-lm'"):
        register_task(clash)


def test_a_model_class_finds_its_task_through_the_family_registry():
    assert task_for_class_name("LlamaForSequenceClassification") is get_task("text-classification")
    assert task_for_class_name("BertForMaskedLM") is None  # no registered task trains a masked LM yet
