"""text-classification (sentiment-analysis): a label per text, judged by accuracy against the majority class."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelcore.task_registry.registry import Metric, TaskSpec, register_task
from modelcore.task_registry.requests import request_texts

EVAL_BATCH_SIZE = 64


def prepare(tokenizer: Any, rows: dict[str, list], max_length: int) -> dict[str, list]:
    """Token ids of each ``text`` (truncated, not padded) with its ``label`` kept."""
    enc = tokenizer(list(rows["text"]), truncation=True, max_length=max_length)
    columns = {name: [list(v) for v in enc[name]] for name in enc.keys()}
    columns["label"] = [int(label) for label in rows["label"]]
    return columns


def collator(tokenizer: Any) -> Any:
    from modelcore.data.collators import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> dict[str, Any]:
    """Accuracy, macro F1 and the confusion matrix (rows: true label, columns: predicted)."""
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    tp = np.diag(confusion).astype(float)
    precision = np.divide(tp, confusion.sum(0), out=np.zeros(num_labels), where=confusion.sum(0) > 0)
    recall = np.divide(tp, confusion.sum(1), out=np.zeros(num_labels), where=confusion.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_labels), where=precision + recall > 0)
    return {
        "accuracy": float(tp.sum() / max(len(labels), 1)),
        "f1_macro": float(f1.mean()),
        "confusion_matrix": confusion.tolist(),
    }


def evaluate(model: Any, tokenizer: Any, rows: dict[str, list], max_length: int) -> dict[str, Any]:
    """Accuracy and macro F1 of ``model`` on labelled rows (through the pipeline consumers use)."""
    from modelcore.pipelines import pipeline

    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer)
    probs = pipe.predict_proba(list(rows["text"]), batch_size=EVAL_BATCH_SIZE, max_length=max_length)
    labels = np.asarray(rows["label"], dtype=np.int64)
    return classification_metrics(labels, probs.argmax(axis=1), probs.shape[1])


def majority_baseline(train_labels: np.ndarray, test_labels: np.ndarray, num_labels: int) -> dict[str, Any]:
    """What always predicting the most frequent training label scores on the held-out labels.

    A model is only useful above this floor: on a 56.8% majority split it is accuracy 0.568 and macro F1 0.36
    (the other classes score 0). Ties go to the lower label id.

    Returns:
        ``{"label": id, "accuracy", "f1_macro"}``.
    """
    majority = int(np.bincount(train_labels, minlength=num_labels).argmax())
    scores = classification_metrics(test_labels, np.full_like(test_labels, majority), num_labels)
    return {"label": majority, "accuracy": scores["accuracy"], "f1_macro": scores["f1_macro"]}


def baseline(train: dict[str, list], test: dict[str, list], base_model: str | None, max_length: int) -> dict[str, Any]:
    """The majority-class baseline of labelled rows (labels seen in either split count as the classes)."""
    train_labels = np.asarray(train["label"], dtype=np.int64)
    test_labels = np.asarray(test["label"], dtype=np.int64)
    num_labels = int(max(train_labels.max(initial=0), test_labels.max(initial=0))) + 1
    return majority_baseline(train_labels, test_labels, num_labels)


def pyfunc_outputs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """``label``, ``score`` and one ``prob_<label>`` column per label of the checkpoint's ``id2label``."""
    id2label = config.get("id2label") or {"0": "LABEL_0", "1": "LABEL_1"}
    return [("string", "label"), ("double", "score")] + [
        ("double", f"prob_{id2label[key]}") for key in sorted(id2label, key=int)
    ]


def pyfunc_predict(pipe: Any, model_input: Any, params: dict[str, Any], settings: dict[str, Any]) -> Any:
    """The top label, its score and every label's probability for each request text."""
    texts = request_texts(model_input)
    probs = pipe.predict_proba(
        texts, batch_size=int(settings.get("batch_size", 64)), max_length=settings.get("max_length")
    )
    return probability_frame(probs, pipe.model.config.id2label)


def probability_frame(probs: np.ndarray, id2label: dict[int, str]) -> Any:
    """A DataFrame of the top ``label``, its ``score`` and a ``prob_<label>`` column per label, a row per input."""
    import pandas as pd

    names = [id2label.get(i, str(i)) for i in range(probs.shape[1])]
    best = probs.argmax(axis=1)
    frame = pd.DataFrame({"label": [names[i] for i in best], "score": probs.max(axis=1).astype(float)})
    for i, name in enumerate(names):
        frame[f"prob_{name}"] = probs[:, i].astype(float)
    return frame


register_task(
    TaskSpec(
        name="text-classification",
        auto_class="AutoModelForSequenceClassification",
        pipeline_task="text-classification",
        input_column="text",
        label_column="label",
        metrics=(Metric("accuracy"), Metric("f1_macro")),
        prepare=f"{__name__}:prepare",
        collator=f"{__name__}:collator",
        evaluate=f"{__name__}:evaluate",
        baseline=f"{__name__}:baseline",
        onnx_graph="modelcore.exporters.specs:classifier_spec",
        pyfunc_outputs=f"{__name__}:pyfunc_outputs",
        pyfunc_predict=f"{__name__}:pyfunc_predict",
        aliases=("sentiment-analysis",),
    )
)
