"""Token classification (NER): texts in, one labelled entity per token, word or span out.

The aggregation follows Hugging Face's ``TokenClassificationPipeline`` (same strategies, same output dicts):

- ``"none"``: every token that is not special, with its best label (``entity``) and its ``index``;
- ``"simple"``: adjacent tokens with the same tag merged into ``entity_group`` spans (a ``B-`` starts a new one);
- ``"first"`` / ``"max"`` / ``"average"``: the sub-words of each word first agree on one label (the first
  sub-word's, the most confident sub-word's, or the mean scores'), then words are grouped as in ``"simple"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from modelcore.pipelines.base import Pipeline, as_texts, chunks

AGGREGATIONS = ("none", "simple", "first", "max", "average")
WORD_AGGREGATIONS = ("first", "max", "average")


class TokenClassificationPipeline(Pipeline):
    """Label tokens with a token classification model (``AutoModelForTokenClassification``)."""

    task = "token-classification"
    auto_model = "AutoModelForTokenClassification"

    def __call__(
        self,
        texts: str | Iterable[str],
        aggregation_strategy: str = "none",
        ignore_labels: Sequence[str] = ("O",),
        batch_size: int | None = None,
        max_length: int | None = None,
    ) -> list[Any]:
        """Find the entities of each text.

        Args:
            texts: one text, a list or any iterable of texts.
            aggregation_strategy: ``"none"``, ``"simple"``, ``"first"``, ``"max"`` or ``"average"`` (module doc).
            ignore_labels: labels (or entity groups) left out of the output.
            batch_size: texts per forward pass (None: the pipeline's ``batch_size``, else the task's default).
            max_length: truncate longer inputs to this many tokens (default: the tokenizer's limit).

        Returns:
            Per text, a list of entity dicts with ``entity`` (``entity_group`` when aggregated), ``score``, ``word``,
            ``start``, ``end`` (character offsets) and, for ``"none"``, the token ``index``; a lone string gives its
            own list.

        Raises:
            ValueError: an unknown ``aggregation_strategy``.
        """
        if aggregation_strategy not in AGGREGATIONS:
            raise ValueError(
                f"aggregation_strategy must be one of {', '.join(AGGREGATIONS)}; got {aggregation_strategy!r}"
            )
        items, single = as_texts(texts)
        batch_size = self.batch_size_for(batch_size)
        ignored = set(ignore_labels)
        results: list[list[dict[str, Any]]] = []
        for batch in chunks(items, batch_size):
            encoding = self.encode(
                batch, max_length=max_length, return_offsets_mapping=True, return_special_tokens_mask=True
            )
            logits = self.forward(encoding).logits.float().cpu().numpy()  # (B, T, num_labels)
            for row, text in enumerate(batch):
                scores = _softmax(logits[row])
                tokens = self._tokens(text, encoding, row, scores)
                entities = self._aggregate(tokens, aggregation_strategy)
                results.append([e for e in entities if e.get("entity", e.get("entity_group")) not in ignored])
        return results[0] if single else results

    def _tokens(self, text: str, encoding: Any, row: int, scores: np.ndarray) -> list[dict[str, Any]]:
        """One dict per real (not special, not padding) token: its string, scores, character span, sub-word flag."""
        input_ids = encoding["input_ids"][row].tolist()
        offsets = encoding["offset_mapping"][row].tolist()
        special = encoding["special_tokens_mask"][row].tolist()
        unk_id = self.tokenizer.unk_token_id
        # a word-aware (WordPiece / BPE with a "##"-like prefix) tokenizer marks continuations in the token itself
        word_aware = bool(getattr(self.tokenizer.backend.model, "continuing_subword_prefix", None))
        tokens = []
        for index, (token_id, (start, end), is_special) in enumerate(zip(input_ids, offsets, special, strict=True)):
            if is_special:
                continue
            word, span = self.tokenizer.convert_ids_to_tokens(token_id), text[start:end]
            # without a word-aware tokenizer, a heuristic: no space before the token
            is_subword = len(word) != len(span) if word_aware else start > 0 and " " not in text[start - 1 : start + 1]
            if token_id == unk_id:
                word, is_subword = span, False
            tokens.append(
                {
                    "word": word,
                    "scores": scores[index],
                    "start": start,
                    "end": end,
                    "index": index,
                    "is_subword": is_subword,
                }
            )
        return tokens

    def _aggregate(self, tokens: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
        id2label = self.model.config.id2label
        if strategy in WORD_AGGREGATIONS:
            entities = [self._word_entity(word, strategy) for word in _words(tokens)]
        else:
            entities = []
            for token in tokens:
                best = int(token["scores"].argmax())
                entities.append(
                    {
                        "entity": id2label[best],
                        "score": float(token["scores"][best]),
                        "index": token["index"],
                        "word": token["word"],
                        "start": token["start"],
                        "end": token["end"],
                    }
                )
        if strategy == "none":
            return entities
        return [self._group(group) for group in _tag_groups(entities)]

    def _word_entity(self, word: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
        """One label for the sub-words of one word."""
        if strategy == "first":
            scores = word[0]["scores"]
        elif strategy == "max":
            scores = max(word, key=lambda token: token["scores"].max())["scores"]
        else:
            scores = np.nanmean(np.stack([token["scores"] for token in word]), axis=0)
        best = int(scores.argmax())
        return {
            "entity": self.model.config.id2label[best],
            "score": float(scores[best]),
            "word": self._tokens_to_string([token["word"] for token in word]),
            "start": word[0]["start"],
            "end": word[-1]["end"],
        }

    def _group(self, entities: list[dict[str, Any]]) -> dict[str, Any]:
        """A span of adjacent entities with one tag: the tag without its B-/I- prefix, the mean score."""
        return {
            "entity_group": entities[0]["entity"].split("-", 1)[-1],
            "score": float(np.nanmean([entity["score"] for entity in entities])),
            "word": self._tokens_to_string([entity["word"] for entity in entities]),
            "start": entities[0]["start"],
            "end": entities[-1]["end"],
        }

    def _tokens_to_string(self, tokens: list[str]) -> str:
        decoder = self.tokenizer.backend.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _words(tokens: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Tokens grouped into words: a sub-word joins the word before it."""
    words: list[list[dict[str, Any]]] = []
    for token in tokens:
        if words and token["is_subword"]:
            words[-1].append(token)
        else:
            words.append([token])
    return words


def _tag(label: str) -> tuple[str, str]:
    """(``"B"`` or ``"I"``, tag); a label without a B-/I- prefix counts as a continuation."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def _tag_groups(entities: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Adjacent entities with the same tag, a ``B-`` starting a new group."""
    groups: list[list[dict[str, Any]]] = []
    for entity in entities:
        bi, tag = _tag(entity["entity"])
        if groups and bi != "B" and tag == _tag(groups[-1][-1]["entity"])[1]:
            groups[-1].append(entity)
        else:
            groups.append([entity])
    return groups
