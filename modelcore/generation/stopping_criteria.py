"""Stopping criteria: each maps ``(input_ids (B, S), scores) -> (B,)`` booleans, True where a row is done.

Same protocol as transformers' ``StoppingCriteria``, so a user's criterion written for either library works.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch

from modelcore.errors import ConfigError
from modelcore.generation.configuration import GenerationConfig


class StoppingCriteria:
    """Base class: ``__call__(input_ids, scores) -> (B,)`` bool tensor."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor | None, **kwargs: Any) -> torch.BoolTensor:
        raise NotImplementedError


class StoppingCriteriaList(list):
    """A row is done when any criterion says so."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor | None, **kwargs: Any) -> torch.BoolTensor:
        done = None  # as few tensor ops as the criteria need: this runs once a decoded token
        for criterion in self:
            result = criterion(input_ids, scores, **kwargs)
            if not (isinstance(result, torch.Tensor) and result.dtype == torch.bool):
                result = torch.as_tensor(result, device=input_ids.device).bool()
            result = result.to(input_ids.device)
            done = result if done is None else done | result
        if done is None:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return done


class MaxLengthCriteria(StoppingCriteria):
    """Done once sequences reach ``max_length`` tokens (prompt included)."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor | None, **kwargs: Any) -> torch.BoolTensor:
        done = input_ids.shape[-1] >= self.max_length
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class MaxTimeCriteria(StoppingCriteria):
    """Done once ``max_time`` seconds have passed since ``initial_timestamp`` (default: construction)."""

    def __init__(self, max_time: float, initial_timestamp: float | None = None) -> None:
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor | None, **kwargs: Any) -> torch.BoolTensor:
        done = time.time() - self.initial_timestamp > self.max_time
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class EosTokenCriteria(StoppingCriteria):
    """Done where the last token is one of the EOS ids."""

    def __init__(self, eos_token_ids: Iterable[int]) -> None:
        self.eos_token_ids = torch.tensor(list(eos_token_ids), dtype=torch.long)
        self._on_device: dict[torch.device, torch.Tensor] = {}  # the ids as (1, n), where they were asked for

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor | None, **kwargs: Any) -> torch.BoolTensor:
        ids = self._on_device.get(input_ids.device)
        if ids is None:
            ids = self._on_device[input_ids.device] = self.eos_token_ids.to(input_ids.device)[None, :]
        return (input_ids[:, -1:] == ids).any(dim=-1)  # isin's result with two common ops


class StopStringCriteria(StoppingCriteria):
    """Done where the text just completed one of ``stop_strings`` (the last token may run past its end).

    Only the last tokens are decoded: enough of them to hold the longest stop string (a token is at least
    one character), so the cost per step does not grow with the sequence.
    """

    def __init__(self, tokenizer: Any, stop_strings: str | list[str]) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)
        self.window = max(len(s) for s in self.stop_strings) + 1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor | None, **kwargs: Any) -> torch.BoolTensor:
        done = [self._row_done(row.tolist()) for row in input_ids[:, -self.window :]]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _row_done(self, ids: list[int]) -> bool:
        text, before = self.tokenizer.decode(ids), self.tokenizer.decode(ids[:-1])
        # a stop string counts once the last token completes it: present now, absent without that token
        return any(stop in text and stop not in before for stop in self.stop_strings)


def build_stopping_criteria(
    config: GenerationConfig,
    max_length: int,
    tokenizer: Any = None,
    user_criteria: Iterable[StoppingCriteria] = (),
) -> StoppingCriteriaList:
    """The criteria ``config`` enables (length, time, stop strings, EOS), then ``user_criteria``.

    Args:
        config: the generation settings.
        max_length: prompt plus the new-token budget.
        tokenizer: needed for ``stop_strings``.
        user_criteria: the caller's ``stopping_criteria=`` list.

    Returns:
        The list to call after each new token.

    Raises:
        ConfigError: ``stop_strings`` without a tokenizer.
    """
    criteria = StoppingCriteriaList([MaxLengthCriteria(max_length)])
    if config.max_time is not None:
        criteria.append(MaxTimeCriteria(config.max_time))
    if config.stop_strings:
        if tokenizer is None:
            raise ConfigError("stop_strings needs the tokenizer to read the text: pass generate(..., tokenizer=tok)")
        criteria.append(StopStringCriteria(tokenizer, config.stop_strings))
    if config.eos_token_ids:
        criteria.append(EosTokenCriteria(config.eos_token_ids))
    criteria.extend(user_criteria)
    return criteria
