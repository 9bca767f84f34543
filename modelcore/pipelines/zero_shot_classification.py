"""Zero-shot classification: texts and candidate labels in, the labels ranked by an NLI model out.

Each (text, label) pair is an NLI premise and hypothesis (``hypothesis_template.format(label)``), as in Hugging
Face's pipeline: with one label per text the entailment logits are softmaxed over the labels; with
``multi_label`` each label is scored alone, entailment against contradiction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from modelcore.pipelines.base import Pipeline, as_texts, chunks


class ZeroShotClassificationPipeline(Pipeline):
    """Rank candidate labels with a sequence classification model trained on NLI."""

    task = "zero-shot-classification"
    auto_model = "AutoModelForSequenceClassification"

    def __call__(
        self,
        texts: str | Iterable[str],
        candidate_labels: str | Sequence[str],
        hypothesis_template: str = "This example is {}.",
        multi_label: bool = False,
        batch_size: int | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Rank ``candidate_labels`` for each text.

        Args:
            texts: one text, a list or any iterable of texts.
            candidate_labels: the labels, as a list or one comma-separated string.
            hypothesis_template: the hypothesis with ``{}`` where the label goes.
            multi_label: score each label independently (several can be true) instead of one softmax over them.
            batch_size: premise/hypothesis pairs per forward pass (None: the pipeline's, else the default).

        Returns:
            Per text ``{"sequence", "labels", "scores"}``, labels best first; a lone string gives its own dict.

        Raises:
            ValueError: no labels or no texts, a template without ``{}``, or a model without an entailment label.
        """
        labels = _parse_labels(candidate_labels)
        items, single = as_texts(texts)
        batch_size = self.batch_size_for(batch_size)
        if not labels or not items:
            raise ValueError("zero-shot-classification needs at least one candidate label and one text")
        if hypothesis_template.format(labels[0]) == hypothesis_template:
            raise ValueError(f"hypothesis_template {hypothesis_template!r} has no {{}} for the label")
        entailment = self.entailment_id()
        pairs = [(text, hypothesis_template.format(label)) for text in items for label in labels]
        logits = np.concatenate([self._pair_logits(batch) for batch in chunks(pairs, batch_size)])
        logits = logits.reshape(len(items), len(labels), -1)  # (texts, labels, NLI classes)
        if multi_label or len(labels) == 1:
            contradiction = -1 if entailment == 0 else 0
            scores = _softmax(logits[..., [contradiction, entailment]])[..., 1]
        else:
            scores = _softmax(logits[..., entailment])
        results = []
        for text, row in zip(items, scores, strict=True):
            order = list(reversed(row.argsort()))
            results.append({"sequence": text, "labels": [labels[i] for i in order], "scores": row[order].tolist()})
        return results[0] if single else results

    def entailment_id(self) -> int:
        """The class id whose label starts with "entail" (case-insensitive).

        Raises:
            ValueError: naming the model's labels when none does.
        """
        for index, label in self.model.config.id2label.items():
            if str(label).lower().startswith("entail"):
                return int(index)
        raise ValueError(
            "zero-shot-classification needs an NLI model with an 'entailment' label in config.id2label; "
            f"this model has {dict(self.model.config.id2label)}"
        )

    def _pair_logits(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        # truncate the premise only: a cut hypothesis would no longer name the label
        encoding = self.encode([p for p, _ in pairs], text_pair=[h for _, h in pairs], truncation="only_first")
        return self.forward(encoding).logits.float().cpu().numpy()


def _parse_labels(labels: str | Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        return [label.strip() for label in labels.split(",") if label.strip()]
    return list(labels)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
