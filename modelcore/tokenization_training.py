"""Training tokenizer backends: re-training an existing pipeline on new text, or training a fresh BPE/WordPiece one.

:meth:`Tokenizer.train_new_from_iterator <modelcore.tokenization.Tokenizer.train_new_from_iterator>` and
:meth:`Tokenizer.train <modelcore.tokenization.Tokenizer.train>` wrap these functions; they build the Tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import tokenizers
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors, trainers

from modelcore.errors import TokenizerError
from modelcore.tokenization_files import bert_pipeline, bert_template

DEFAULT_SPECIAL_TOKENS = {
    "bpe": {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
    "wordpiece": {
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    },
}
_TRAINERS = {
    "BPE": trainers.BpeTrainer,
    "WordPiece": trainers.WordPieceTrainer,
    "WordLevel": trainers.WordLevelTrainer,
}


def retrain_backend(
    backend: tokenizers.Tokenizer,
    text_iterator: Iterable[str] | Iterable[Sequence[str]],
    vocab_size: int,
    special_tokens: Sequence[str],
    *,
    min_frequency: int,
    show_progress: bool,
) -> tokenizers.Tokenizer:
    """Train a backend with the pipeline of ``backend`` (normalizer, pre-tokenizer, decoder, template) on new text.

    The backend's special added tokens, then ``special_tokens``, then the model's unknown token take the first ids;
    the post-processor's special token ids are re-mapped to the new vocabulary, and the non-special added tokens
    are added again after the trained vocabulary. Padding and truncation settings are dropped.

    Args:
        backend: the backend whose pipeline to keep (not modified).
        text_iterator: texts, or batches (lists) of texts.
        vocab_size: size of the new vocabulary, special tokens included.
        special_tokens: the special tokens to reserve.
        min_frequency: the least count a merge needs.
        show_progress: show the ``tokenizers`` progress bar.

    Returns:
        The new backend.

    Raises:
        TokenizerError: the backend's model is not BPE, WordPiece or WordLevel.
    """
    spec = json.loads(backend.to_str())
    model = spec["model"]
    kind = model["type"]
    if kind not in _TRAINERS:
        raise TokenizerError(f"train_new_from_iterator supports {sorted(_TRAINERS)} models, not {kind}")
    added = spec.pop("added_tokens", [])
    reserved = [token["content"] for token in added if token["special"]]
    reserved += [token for token in special_tokens if token not in reserved]
    if model.get("unk_token") and model["unk_token"] not in reserved:
        reserved.append(model["unk_token"])
    spec["added_tokens"], spec["padding"], spec["truncation"] = [], None, None
    model["vocab"] = {}
    if kind == "BPE":
        model["merges"] = []

    options: dict[str, Any] = dict(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=show_progress)
    options["special_tokens"] = [AddedToken(token, special=True, normalized=False) for token in reserved]
    if kind in ("BPE", "WordPiece"):
        for key in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key):
                options[key] = model[key]
        if "ByteLevel" in json.dumps(spec.get("pre_tokenizer")):  # byte-level: every byte stays encodable
            options["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()

    new_backend = tokenizers.Tokenizer.from_str(json.dumps(spec))
    new_backend.train_from_iterator(_flatten(text_iterator), trainer=_TRAINERS[kind](**options))
    trained = json.loads(new_backend.to_str())
    trained["post_processor"] = remap_post_processor(spec.get("post_processor"), new_backend.token_to_id)
    new_backend = tokenizers.Tokenizer.from_str(json.dumps(trained))
    new_backend.add_tokens([AddedToken(t["content"], normalized=t["normalized"]) for t in added if not t["special"]])
    return new_backend


def train_backend(
    text_iterator: Iterable[str] | Iterable[Sequence[str]],
    model: str,
    vocab_size: int,
    special_tokens: Mapping[str, str] | None,
    *,
    lowercase: bool | None,
    min_frequency: int,
    show_progress: bool,
) -> tuple[tokenizers.Tokenizer, dict[str, str]]:
    """Train a fresh byte-level BPE or BERT WordPiece backend (see :meth:`Tokenizer.train` for the pipelines).

    Args:
        text_iterator: texts, or batches (lists) of texts.
        model: ``"bpe"`` or ``"wordpiece"``.
        vocab_size: size of the vocabulary, special tokens included.
        special_tokens: role -> token; None means :data:`DEFAULT_SPECIAL_TOKENS` of the model.
        lowercase: lowercase the text first; None means False for BPE, True for WordPiece.
        min_frequency: the least count a merge needs.
        show_progress: show the ``tokenizers`` progress bar.

    Returns:
        The trained backend and its special tokens (role -> token).

    Raises:
        TokenizerError: an unknown ``model``.
    """
    if model not in ("bpe", "wordpiece"):
        raise TokenizerError(f"model must be 'bpe' or 'wordpiece', got {model!r}")
    special_tokens = dict(special_tokens or DEFAULT_SPECIAL_TOKENS[model])
    options: dict[str, Any] = dict(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=show_progress)
    options["special_tokens"] = [AddedToken(t, special=True, normalized=False) for t in special_tokens.values()]
    if model == "bpe":
        backend = tokenizers.Tokenizer(models.BPE())
        if lowercase:
            backend.normalizer = normalizers.Lowercase()
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **options)
    else:
        unk_token = special_tokens.get("unk_token", "[UNK]")
        backend = bert_pipeline({}, unk_token, {"do_lower_case": lowercase is not False})
        trainer = trainers.WordPieceTrainer(continuing_subword_prefix="##", **options)
    backend.train_from_iterator(_flatten(text_iterator), trainer=trainer)
    if model == "wordpiece" and {"cls_token", "sep_token"} <= special_tokens.keys():
        backend.post_processor = bert_template(backend, special_tokens["cls_token"], special_tokens["sep_token"])
    return backend, special_tokens


def remap_post_processor(spec: dict | None, token_to_id: Callable[[str], int | None]) -> dict | None:
    """Point the special tokens of a post-processor's JSON at their ids in a new vocabulary (edits ``spec``)."""

    def lookup(token: str) -> int:
        token_id = token_to_id(token)
        if token_id is None:
            raise TokenizerError(f"post-processor token {token!r} is not in the new vocabulary")
        return token_id

    if spec is None:
        return None
    if spec["type"] == "TemplateProcessing":
        for entry in spec["special_tokens"].values():
            entry["ids"] = [lookup(token) for token in entry["tokens"]]
    elif spec["type"] in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            spec[key] = [spec[key][0], lookup(spec[key][0])]
    elif spec["type"] == "Sequence":
        spec["processors"] = [remap_post_processor(inner, token_to_id) for inner in spec["processors"]]
    return spec


def _flatten(text_iterator: Iterable[Any]) -> Iterator[str]:
    for item in text_iterator:
        if isinstance(item, str):
            yield item
        else:
            yield from item
