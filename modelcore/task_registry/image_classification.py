"""image-classification: a label per image, judged by accuracy against the majority class.

The prepared rows keep each image encoded (the bytes of a PNG or JPEG file): the collator decodes and processes a
batch at a time with the checkpoint's image processor, so a dataset costs its files' size on disk, not its pixels'
(a 224 x 224 float image is 600 KB). The model's classes, metrics, baseline and served output are the text
classifier's.

Optional train-time augmentation (``collator(processor, augment=RandomAffine())``, off by default): each image of
each training batch gets a fresh random move, so an epoch never repeats the last one's pixels. The collator batches
training rows only (evaluation goes through the pipeline), and the moves are drawn from torch's global generator,
which the Trainer seeds from ``args.seed`` and restores on resume.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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


@dataclasses.dataclass(frozen=True)
class RandomAffine:
    """A random move of each processed image: rotation within +-``degrees``, scale in [1 - ``scale``, 1 + ``scale``],
    shift within +-``translate`` pixels on each axis; bilinear, and the uncovered border is black (the processed
    value of a 0 pixel). The defaults are benchmarks/bench_vit_mnist.py's, tuned on 28 x 28 digits."""

    degrees: float = 10.0
    scale: float = 0.1
    translate: float = 2.0

    def __call__(self, pixels: torch.Tensor, black: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) processed pixels, moved; ``black`` (C,) is the processed value of a 0 pixel."""
        n, _, height, width = pixels.shape
        angle = (torch.rand(n) * 2 - 1) * math.radians(self.degrees)
        zoom = 1 + (torch.rand(n) * 2 - 1) * self.scale
        shift = (torch.rand(n, 2) * 2 - 1) * self.translate * torch.tensor([2 / width, 2 / height])  # [-1, 1] units
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)  # (B, H, W, 2)
        black = black.view(1, -1, 1, 1).to(pixels.dtype)
        # sample (x - black) with zero padding, then add black back: outside the image is black
        return F.grid_sample(pixels - black, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + black


class ImageClassificationCollator:
    """Rows of encoded images and labels -> ``pixel_values`` (B, C, H, W) and ``labels`` (B,), through the image
    processor; a damaged image is a ``DataError`` naming its index in the batch. With ``augment``, each processed
    image is moved by it (training batches only: see the module docstring)."""

    def __init__(self, processor: Any, augment: RandomAffine | None = None) -> None:
        self.processor = processor
        self.augment = augment

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pixels = self.processor([row["image"] for row in rows], return_tensors="pt")["pixel_values"]
        if self.augment is not None:
            pixels = self.augment(pixels, black_pixel(self.processor, pixels.shape[1]))
        labels = torch.tensor([int(row["label"]) for row in rows], dtype=torch.long)
        return {"pixel_values": pixels, "labels": labels}


def black_pixel(processor: Any, channels: int) -> torch.Tensor:
    """(C,) the processed value of a 0 pixel: -mean / std when the processor normalizes, else 0."""
    if not getattr(processor, "do_normalize", False):
        return torch.zeros(channels)
    mean = torch.as_tensor(processor.image_mean, dtype=torch.float32).expand(channels)
    std = torch.as_tensor(processor.image_std, dtype=torch.float32).expand(channels)
    return -mean / std


def collator(processor: Any, augment: RandomAffine | None = None) -> ImageClassificationCollator:
    """The task's training collator; ``augment`` (off by default) moves each image at random."""
    return ImageClassificationCollator(processor, augment)


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

__all__ = ["ImageClassificationCollator", "RandomAffine", "baseline", "classification_metrics", "pyfunc_outputs"]
