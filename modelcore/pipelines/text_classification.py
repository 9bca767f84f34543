"""Text classification (sentiment analysis): texts in, labels and scores out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from modelcore.pipelines.base import Pipeline


class TextClassificationPipeline(Pipeline):
    """Classify texts with a sequence classification model.

    Texts are batched in order of length (less padding), then put back in input order, so the
    output does not depend on batch composition beyond the padding of each batch: the same texts
    with the same ``batch_size`` give bitwise the same scores in any process.

    A call changes nothing shared (model, tokenizer), so one pipeline can serve several threads at once.
    """

    task = "text-classification"
    auto_model = "AutoModelForSequenceClassification"
    default_batch_size = 64

    def __call__(
        self,
        texts: str | Sequence[str],
        top_k: int | None = 1,
        batch_size: int | None = None,
        max_length: int | None = None,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Label each text.

        Args:
            texts: one text or a list of texts.
            top_k: labels per text, best first; 1 gives one ``{"label", "score"}`` dict per text,
                None gives every label.
            batch_size: texts per forward pass (None: the pipeline's ``batch_size``, else the task's default).
            max_length: truncate longer inputs to this many tokens (default: the tokenizer's limit).

        Returns:
            One dict per text when ``top_k == 1``, else one list of dicts per text.
        """
        single = isinstance(texts, str)
        probs = self.predict_proba([texts] if single else list(texts), batch_size=batch_size, max_length=max_length)
        id2label = self.model.config.id2label
        results: list[Any] = []
        for row in probs:
            order = np.argsort(-row, kind="stable")[: top_k if top_k else len(row)]
            labels = [{"label": id2label.get(int(i), str(int(i))), "score": float(row[i])} for i in order]
            results.append(labels[0] if top_k == 1 else labels)
        return results

    def predict_proba(
        self, texts: Sequence[str], batch_size: int | None = None, max_length: int | None = None
    ) -> np.ndarray:
        """Class probabilities, shape ``(len(texts), num_labels)``, float32 softmax of the logits."""
        logits = self.predict_logits(texts, batch_size=batch_size, max_length=max_length)
        return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()

    def predict_logits(
        self, texts: Sequence[str], batch_size: int | None = None, max_length: int | None = None
    ) -> np.ndarray:
        """Raw logits as float32, shape ``(len(texts), num_labels)``, in input order.

        Raises:
            TypeError: an item of ``texts`` is not a string (it is not scored as its ``str()``; the message names
                its index).
        """
        batch_size = self.batch_size_for(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] must be a str, got {type(text).__name__} ({text!r:.40})")
        accepted = _accepted(self.model)
        num_labels = self.model.config.num_labels
        out = np.zeros((len(texts), num_labels), dtype=np.float32)
        if not texts:
            return out
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
        order = np.argsort(lengths, kind="stable")
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                index = order[start : start + batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in index],
                    truncation=True,
                    max_length=max_length,
                    padding=True,
                    return_tensors="pt",
                )
                enc = {k: v.to(self.device) for k, v in enc.items() if k in accepted}
                out[index] = self.model(**enc).logits.float().cpu().numpy()
        return out


def _accepted(model: Any) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)
