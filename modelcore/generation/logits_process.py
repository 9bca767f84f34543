"""Logits processors, one class each, and a registry that builds them from a ``GenerationConfig``.

A processor maps ``(input_ids (B, S), scores (B, V)) -> scores (B, V)``, as in transformers, whose
semantics each class reproduces (tests compare the scores). The registry is keyed by the config field
that enables a processor; ``build_logits_processors`` walks it in registration order, which is
transformers' order: the processors that shape any decoding first, then (sampling only) the warpers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import torch

from modelcore.generation.configuration import GenerationConfig

NEG_INF = float("-inf")


class LogitsProcessor:
    """Base class: ``__call__(input_ids, scores) -> scores``."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LogitsProcessorList(list):
    """Applies each processor in turn."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


class TemperatureLogitsWarper(LogitsProcessor):
    """Divide the scores by ``temperature``."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.temperature


class TopKLogitsWarper(LogitsProcessor):
    """Set every score below the k-th largest of its row to -inf."""

    def __init__(self, top_k: int, min_tokens_to_keep: int = 1) -> None:
        self.top_k = max(top_k, min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(self.top_k, scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]  # (B, 1)
        return scores.masked_fill(scores < kth, NEG_INF)


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus: keep the most likely tokens whose probabilities sum to at least ``top_p``."""

    def __init__(self, top_p: float, min_tokens_to_keep: int = 1) -> None:
        self.top_p = top_p
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # ascending order: drop the low tail whose mass stays within 1 - top_p
        remove_sorted = cumulative <= (1 - self.top_p)
        remove_sorted[..., -self.min_tokens_to_keep :] = False
        remove = remove_sorted.scatter(1, sorted_indices, remove_sorted)
        return scores.masked_fill(remove, NEG_INF)


class MinPLogitsWarper(LogitsProcessor):
    """Drop tokens whose probability is below ``min_p`` times the top token's."""

    def __init__(self, min_p: float, min_tokens_to_keep: int = 1) -> None:
        self.min_p = min_p
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores, dim=-1)
        too_unlikely = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        sorted_indices = torch.argsort(scores, descending=True, dim=-1)
        remove_sorted = torch.gather(too_unlikely, dim=-1, index=sorted_indices)
        remove_sorted[..., : self.min_tokens_to_keep] = False
        remove = remove_sorted.scatter(1, sorted_indices, remove_sorted)
        return scores.masked_fill(remove, NEG_INF)


class TypicalLogitsWarper(LogitsProcessor):
    """Locally typical sampling: keep the tokens whose surprise is closest to the entropy, up to ``mass``."""

    def __init__(self, mass: float, min_tokens_to_keep: int = 1) -> None:
        self.mass = mass
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        log_probs = torch.nn.functional.log_softmax(scores, dim=-1)
        entropy = -(log_probs * log_probs.exp()).nansum(-1, keepdim=True)  # (B, 1)
        distance = torch.abs(-log_probs - entropy)
        sorted_distance, sorted_indices = torch.sort(distance, descending=False)
        cumulative = scores.gather(-1, sorted_indices).softmax(dim=-1).cumsum(dim=-1)
        last = (cumulative < self.mass).sum(dim=1).clamp_(max=scores.shape[-1] - 1)  # (B,)
        remove_sorted = sorted_distance > sorted_distance.gather(1, last.view(-1, 1))
        remove_sorted[..., : self.min_tokens_to_keep] = False
        remove = remove_sorted.scatter(1, sorted_indices, remove_sorted)
        return scores.masked_fill(remove, NEG_INF)


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Divide positive (multiply negative) scores of tokens already in the sequence by ``penalty``.

    Args:
        penalty: > 1 discourages repeats.
        prompt_ignore_length: (B,) leading positions per row not counted (the left padding), or None.
    """

    def __init__(self, penalty: float, prompt_ignore_length: torch.Tensor | None = None) -> None:
        self.penalty = penalty
        self.prompt_ignore_length = prompt_ignore_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        vocab_size = scores.shape[-1]
        if self.prompt_ignore_length is not None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            ignored = positions[None, :] < self.prompt_ignore_length.to(input_ids.device)[:, None]
            input_ids = input_ids.masked_fill(ignored, vocab_size)  # the spare column below, dropped after
        input_ids = input_ids.clamp(max=vocab_size)
        padded = torch.nn.functional.pad(scores, (0, 1))
        score = torch.gather(padded, 1, input_ids)
        score = torch.where(score < 0, score * self.penalty, score / self.penalty)
        return padded.scatter(1, input_ids, score)[..., :vocab_size]


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Forbid any token that would complete an n-gram already present in the sequence."""

    def __init__(self, ngram_size: int) -> None:
        self.ngram_size = ngram_size

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[-1]
        if length < self.ngram_size:
            return scores
        prefix = input_ids[:, length + 1 - self.ngram_size :]  # (B, n-1): what the next token would extend
        windows = input_ids.unfold(dimension=1, size=self.ngram_size, step=1)  # (B, W, n)
        matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)  # (B, W)
        vocab_size = scores.shape[-1]
        banned = scores.new_zeros((scores.shape[0], vocab_size + 1), dtype=torch.bool)
        banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab_size), vocab_size), True)
        return scores.masked_fill(banned[:, :vocab_size], NEG_INF)


class NoBadWordsLogitsProcessor(LogitsProcessor):
    """Forbid the last token of each bad sequence when the sequence so far ends with the rest of it.

    A bad "word" that is exactly one EOS id is dropped (as transformers), so generation can still end.
    """

    def __init__(self, bad_words_ids: list[list[int]], eos_token_ids: Iterable[int] = ()) -> None:
        eos = [[i] for i in eos_token_ids]
        self.bad_words_ids = [list(ids) for ids in bad_words_ids if list(ids) not in eos]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        banned = torch.zeros_like(scores, dtype=torch.bool)
        for ids in self.bad_words_ids:
            *prefix, last = ids
            if not prefix:
                banned[:, last] = True
            elif len(prefix) <= input_ids.shape[1]:
                tail = torch.tensor(prefix, device=input_ids.device)
                banned[:, last] |= (input_ids[:, -len(prefix) :] == tail).all(dim=-1)
        return scores.masked_fill(banned, NEG_INF)


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """Forbid EOS until ``min_new_tokens`` tokens follow the prompt of ``prompt_length_to_skip`` tokens."""

    def __init__(self, prompt_length_to_skip: int, min_new_tokens: int, eos_token_ids: Iterable[int]) -> None:
        self.prompt_length_to_skip = prompt_length_to_skip
        self.min_new_tokens = min_new_tokens
        self.eos_token_ids = list(eos_token_ids)
        self._indices: dict[tuple[torch.device, int], torch.Tensor | None] = {}  # (device, vocab) -> EOS ids in it

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] - self.prompt_length_to_skip >= self.min_new_tokens:
            return scores
        key = (scores.device, scores.shape[-1])
        if key not in self._indices:  # made once, not at every token
            in_vocab = [token for token in self.eos_token_ids if 0 <= token < scores.shape[-1]]
            self._indices[key] = torch.tensor(in_vocab, device=scores.device) if in_vocab else None
        indices = self._indices[key]
        return scores if indices is None else scores.index_fill(-1, indices, NEG_INF)


@dataclasses.dataclass(frozen=True)
class ProcessorContext:
    """What building a processor needs beyond the config.

    Args:
        prompt_length: tokens in the (padded) prompt.
        padding_lengths: (B,) left-padding tokens per row.
        min_tokens_to_keep: warpers never keep fewer (2 + EOS ids under beam sampling, as transformers).
    """

    prompt_length: int
    padding_lengths: torch.Tensor
    min_tokens_to_keep: int = 1


Factory = Callable[[GenerationConfig, ProcessorContext], LogitsProcessor | None]
PROCESSORS: dict[str, Factory] = {}  # any decoding
WARPERS: dict[str, Factory] = {}  # sampling only


def register(field: str, *, sampling_only: bool = False) -> Callable[[Factory], Factory]:
    """Register a factory under the config field that enables it; it returns None when the field is off."""

    def add(factory: Factory) -> Factory:
        (WARPERS if sampling_only else PROCESSORS)[field] = factory
        return factory

    return add


@register("repetition_penalty")
def _repetition(config: GenerationConfig, ctx: ProcessorContext) -> LogitsProcessor | None:
    if config.repetition_penalty == 1.0:
        return None
    return RepetitionPenaltyLogitsProcessor(config.repetition_penalty, prompt_ignore_length=ctx.padding_lengths)


@register("no_repeat_ngram_size")
def _no_repeat(config: GenerationConfig, ctx: ProcessorContext) -> LogitsProcessor | None:
    return NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size) if config.no_repeat_ngram_size > 0 else None


@register("bad_words_ids")
def _bad_words(config: GenerationConfig, ctx: ProcessorContext) -> LogitsProcessor | None:
    return NoBadWordsLogitsProcessor(config.bad_words_ids, config.eos_token_ids) if config.bad_words_ids else None


@register("min_new_tokens")
def _min_new_tokens(config: GenerationConfig, ctx: ProcessorContext) -> LogitsProcessor | None:
    if not config.min_new_tokens or not config.eos_token_ids:
        return None
    return MinNewTokensLengthLogitsProcessor(ctx.prompt_length, config.min_new_tokens, config.eos_token_ids)


@register("temperature", sampling_only=True)
def _temperature(config: GenerationConfig, ctx: ProcessorContext) -> LogitsProcessor | None:
    return TemperatureLogitsWarper(config.temperature) if config.temperature != 1.0 else None


@register("top_k", sampling_only=True)
def _top_k(config: GenerationConfig, ctx: ProcessorContext) -> LogitsProcessor | None:
    return TopKLogitsWarper(config.top_k, ctx.min_tokens_to_keep) if config.top_k != 0 else None


@register("top_p", sampling_only=True)
def _top_p(config: GenerationConfig, ctx: ProcessorContext) -> LogitsProcessor | None:
    return TopPLogitsWarper(config.top_p, ctx.min_tokens_to_keep) if config.top_p < 1.0 else None


@register("min_p", sampling_only=True)
def _min_p(config: GenerationConfig, ctx: ProcessorContext) -> LogitsProcessor | None:
    return MinPLogitsWarper(config.min_p, ctx.min_tokens_to_keep) if config.min_p is not None else None


@register("typical_p", sampling_only=True)
def _typical_p(config: GenerationConfig, ctx: ProcessorContext) -> LogitsProcessor | None:
    return TypicalLogitsWarper(config.typical_p, ctx.min_tokens_to_keep) if config.typical_p < 1.0 else None


def build_logits_processors(
    config: GenerationConfig, ctx: ProcessorContext, user_processors: Iterable[LogitsProcessor] = ()
) -> LogitsProcessorList:
    """The processors ``config`` enables, in transformers' order, with ``user_processors`` after the non-warpers.

    Args:
        config: the generation settings.
        ctx: prompt length, padding and ``min_tokens_to_keep``.
        user_processors: the caller's ``logits_processor=`` list.

    Returns:
        The list to call on each step's scores.
    """
    built = [factory(config, ctx) for factory in PROCESSORS.values()]
    built += list(user_processors)
    if config.do_sample:
        built += [factory(config, ctx) for factory in WARPERS.values()]
    return LogitsProcessorList(p for p in built if p is not None)
