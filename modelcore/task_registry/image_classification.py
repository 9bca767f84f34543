"""image-classification: a label per image, judged by accuracy against the majority class.

The prepared rows keep each image encoded (the bytes of a PNG or JPEG file): the collator decodes and processes a
batch at a time with the checkpoint's image processor, so a dataset costs its files' size on disk, not its pixels'
(a 224 x 224 float image is 600 KB). The model's classes, metrics, baseline and served output are the text
classifier's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from modelcore.task_registry.registry import Metric, TaskSpec, register_task
from modelcore.task_registry.requests import request_images
from modelcore.task_registry.text_classification import (
    baseline,
    classification_metrics,
    probability_frame,
    pyfunc_outputs,
)

EVAL_BATCH_SIZE = 64


def prepare(processor: Any, rows: dict[str, list], max_length: int) -> dict[str, list]:
    """The encoded ``image`` of each row with its ``label`` (``max_length`` does not apply to images)."""
    return {"image": [bytes(image) for image in rows["image"]], "label": [int(label) for label in rows["label"]]}


class ImageClassificationCollator:
    """Rows of encoded images and labels -> ``pixel_values`` (B, C, H, W) and ``labels`` (B,), through the image
    processor; a damaged image is a ``DataError`` naming its index in the batch."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pixels = self.processor([row["image"] for row in rows], return_tensors="pt")["pixel_values"]
        labels = torch.tensor([int(row["label"]) for row in rows], dtype=torch.long)
        return {"pixel_values": pixels, "labels": labels}


def collator(processor: Any) -> ImageClassificationCollator:
    return ImageClassificationCollator(processor)


def evaluate(model: Any, processor: Any, rows: dict[str, list], max_length: int) -> dict[str, Any]:
    """Accuracy, macro F1 and the confusion matrix of ``model`` on labelled images (through the pipeline)."""
    from modelcore.pipelines import pipeline

    pipe = pipeline("image-classification", model=model, tokenizer=processor)
    probs = pipe.predict_proba(list(rows["image"]), batch_size=EVAL_BATCH_SIZE)
    labels = np.asarray(rows["label"], dtype=np.int64)
    return classification_metrics(labels, probs.argmax(axis=1), probs.shape[1])


def pyfunc_predict(pipe: Any, model_input: Any, params: dict[str, Any], settings: dict[str, Any]) -> Any:
    """The top label, its score and every label's probability for each request image (base64 file or pixels)."""
    images = request_images(model_input)
    probs = pipe.predict_proba(images, batch_size=int(settings.get("batch_size", EVAL_BATCH_SIZE)))
    return probability_frame(probs, pipe.model.config.id2label)


register_task(
    TaskSpec(
        name="image-classification",
        auto_class="AutoModelForImageClassification",
        pipeline_task="image-classification",
        input_column="image",
        label_column="label",
        metrics=(Metric("accuracy"), Metric("f1_macro")),
        prepare=f"{__name__}:prepare",
        collator=f"{__name__}:collator",
        evaluate=f"{__name__}:evaluate",
        baseline=f"{__name__}:baseline",
        pyfunc_outputs=f"{__name__}:pyfunc_outputs",
        pyfunc_predict=f"{__name__}:pyfunc_predict",
        modality="image",
    )
)

__all__ = ["ImageClassificationCollator", "baseline", "classification_metrics", "pyfunc_outputs"]
