"""The reference glue a user would write today: HF Trainer + Prefect + MLflow's transformers flavor + ONNX int8.

Same data and settings as ``python -m flows.retrain`` (Rotten Tomatoes asset, 80/20 split after
``random.Random(0).shuffle``, MiniLM-L6, max_length 64, 1 epoch, batch 32, lr 5e-5, fp32, seed 0).
Tasks pass paths; the MLflow run is started by the flow (``mlflow.start_run``), transformers'
``report_to="mlflow"`` logs the metrics, ``mlflow.transformers.log_model`` logs and registers the
model, and the ONNX int8 file is exported with ``torch.onnx.export(dynamo=True)`` and
``onnxruntime.quantization.quantize_dynamic`` and logged as an artifact (with its ``.onnx.data``).

    python -m benchmarks.reference_pipeline WORKDIR      # prints a JSON summary on the last line
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

T0 = time.perf_counter()

import mlflow  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

WORK = Path(sys.argv[1] if len(sys.argv) > 1 else "reference-work").resolve()
SETTINGS = dict(num_train_epochs=1, per_device_train_batch_size=32, learning_rate=5e-5, seed=0, logging_steps=50)


@task(cache_policy=NO_CACHE)
def load_split() -> str:
    import datasets

    from modelcore import assets

    rows = assets.load_rotten_tomatoes()
    random.Random(0).shuffle(rows)
    cut = int(0.8 * len(rows))
    out = WORK / "data"
    datasets.Dataset.from_list(rows[:cut]).save_to_disk(str(out / "train"))
    datasets.Dataset.from_list(rows[cut:]).save_to_disk(str(out / "test"))
    return str(out)


@task(cache_policy=NO_CACHE)
def tokenize(data: str, base: str) -> str:
    import datasets
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    out = WORK / "tokenized"
    for split in ("train", "test"):
        part = datasets.load_from_disk(f"{data}/{split}")
        part.map(lambda b: tokenizer(b["text"], truncation=True, max_length=64), batched=True).save_to_disk(
            str(out / split)
        )
    return str(out)


@task(cache_policy=NO_CACHE)
def train(tokenized: str, base: str) -> dict:
    import datasets
    import torch
    import transformers

    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    args = transformers.TrainingArguments(
        output_dir=str(WORK / "trainer"), use_cpu=True, report_to="mlflow", save_strategy="no", **SETTINGS
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=datasets.load_from_disk(f"{tokenized}/train"),
        data_collator=transformers.DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    test = datasets.load_from_disk(f"{tokenized}/test")
    pred = trainer.predict(test)
    accuracy = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
    eval_s = time.perf_counter() - start
    mlflow.log_metric("eval_accuracy", accuracy)
    out = WORK / "model"
    trainer.save_model(str(out))
    return {"model": str(out), "accuracy": accuracy, "train_s": train_s, "eval_s": eval_s}


@task(cache_policy=NO_CACHE)
def export_onnx_int8(model_dir: str) -> dict:
    import torch
    import transformers
    from onnxruntime.quantization import quantize_dynamic

    start = time.perf_counter()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    out = WORK / "onnx"
    out.mkdir(exist_ok=True)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    torch.onnx.export(
        model,
        (),
        str(out / "model.onnx"),
        kwargs={"input_ids": ids, "attention_mask": torch.ones_like(ids)},
        dynamo=True,
        dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
    )
    quantize_dynamic(str(out / "model.onnx"), str(out / "model_int8.onnx"))
    mlflow.log_artifacts(str(out), "onnx")
    return {"export_s": time.perf_counter() - start}


@task(cache_policy=NO_CACHE)
def log_and_register(model_dir: str, accuracy: float) -> str:
    import transformers

    start = time.perf_counter()
    pipe = transformers.pipeline("text-classification", model=model_dir, device="cpu")
    info = mlflow.transformers.log_model(
        transformers_model=pipe,
        name="model",
        registered_model_name="reference-sentiment",
        # the flavor's inferred requirements import torchvision, which a text model does not need (not installed)
        pip_requirements=["torch", "transformers", "tokenizers", "safetensors"],
    )
    client = mlflow.MlflowClient()
    version = client.search_model_versions("name='reference-sentiment'")[0].version
    client.set_registered_model_alias("reference-sentiment", "champion", version)
    return json.dumps({"model_uri": info.model_uri, "version": str(version), "log_s": time.perf_counter() - start})


@flow(name="reference-retrain")
def reference(base: str) -> dict:
    with mlflow.start_run():
        data = load_split()
        tokenized = tokenize(data, base)
        trained = train(tokenized, base)
        exported = export_onnx_int8(trained["model"])
        registered = json.loads(log_and_register(trained["model"], trained["accuracy"]))
    return {**trained, **exported, **registered}


if __name__ == "__main__":
    from modelcore import assets

    WORK.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{WORK / 'mlflow.db'}")
    experiment = "reference"
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=(WORK / "mlartifacts").as_uri())
    mlflow.set_experiment(experiment)
    result = reference(str(assets.fetch("minilm-l6")))
    result["wall_s"] = time.perf_counter() - T0
    os.sys.stdout.write(json.dumps(result) + "\n")
