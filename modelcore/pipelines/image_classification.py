"""Image classification: images (paths, PIL images, arrays, tensors) in, labels and scores out."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from modelcore.pipelines.base import Pipeline, chunks


class ImageClassificationPipeline(Pipeline):
    """Classify images with an image classification model and its image processor.

    ``pipeline("image-classification", model=DIR)`` loads the model and the ``preprocessor_config.json`` beside it
    (the image processor takes the pipeline's ``tokenizer`` slot). A call changes nothing shared, so one pipeline
    can serve several threads at once.
    """

    task = "image-classification"
    auto_model = "AutoModelForImageClassification"
    default_batch_size = 16

    @classmethod
    def load_preprocessor(cls, source: str | os.PathLike) -> Any:
        import modelcore

        return modelcore.AutoImageProcessor.from_pretrained(source)

    @property
    def image_processor(self) -> Any:
        return self.tokenizer

    def __call__(self, images: Any, top_k: int | None = 5, batch_size: int | None = None) -> list[Any]:
        """Label each image.

        Args:
            images: one image (a file path, an image file's bytes, a PIL image, an (H, W[, C]) array or a (C, H, W)
                tensor) or a list or iterable of them.
            top_k: labels per image, best first (at most the number of labels); None gives every label.
            batch_size: images per forward pass.

        Returns:
            For one image, a list of ``{"label", "score"}`` dicts; for several, one such list per image (as
            transformers).

        Raises:
            DataError: naming the image: a corrupt file, a wrong channel count, an empty list.
        """
        single = _is_single(images)
        items = [images] if single else list(images)
        probs = self.predict_proba(items, batch_size=batch_size)
        id2label = self.model.config.id2label
        count = probs.shape[1] if top_k is None else min(top_k, probs.shape[1])
        results = []
        for row in probs:
            order = np.argsort(-row, kind="stable")[:count]
            results.append([{"label": id2label.get(int(i), str(int(i))), "score": float(row[i])} for i in order])
        return results[0] if single else results

    def predict_proba(self, images: list[Any], batch_size: int | None = None) -> np.ndarray:
        """(N, num_labels) class probabilities (sigmoid for a multi-label model, else softmax)."""
        logits = torch.from_numpy(self.predict_logits(images, batch_size))
        multi = getattr(self.model.config, "problem_type", None) == "multi_label_classification"
        return (torch.sigmoid(logits) if multi else logits.softmax(-1)).numpy()

    def predict_logits(self, images: list[Any], batch_size: int | None = None) -> np.ndarray:
        """(N, num_labels) float32 logits of the images, in order."""
        if not images:
            from modelcore.errors import DataError

            raise DataError("no images to classify: pass at least one")
        rows = []
        for batch in chunks(list(images), self.batch_size_for(batch_size)):
            pixels = self.image_processor(batch, return_tensors="pt")["pixel_values"]
            rows.append(self.forward({"pixel_values": pixels}).logits.float().cpu().numpy())
        return np.concatenate(rows)


def _is_single(images: Any) -> bool:
    """One image, as opposed to a list or iterable of images (a 4-D array or tensor is a batch)."""
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)):
        return True
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return images.ndim < 4
    return not isinstance(images, Iterable) or hasattr(images, "getpixel")  # a PIL image is one image
