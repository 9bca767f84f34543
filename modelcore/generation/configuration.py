"""GenerationConfig: how ``generate`` picks tokens, and when it stops."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import typing
from pathlib import Path
from typing import Any

from modelcore.errors import ConfigError
from modelcore.json_files import read_json_object
from modelcore.serialization.atomic import atomic_write_text
from modelcore.typecheck import matches, non_finite_path, type_name

GENERATION_CONFIG_NAME = "generation_config.json"
logger = logging.getLogger(__name__)
DEFAULT_MAX_NEW_TOKENS = 20  # as transformers: with neither max_new_tokens nor max_length, 20 new tokens
EARLY_STOPPING_CHOICES = (True, False, "never")
CACHE_IMPLEMENTATIONS = (None, "dynamic", "static")


@dataclasses.dataclass
class GenerationConfig:
    """Decoding settings, with Hugging Face's names and meanings (``generation_config.json`` reads unchanged).

    Args:
        max_new_tokens: tokens to add after the prompt; takes precedence over ``max_length``.
        max_length: prompt plus new tokens (Hugging Face's meaning); used when ``max_new_tokens`` is None.
        min_new_tokens: EOS is forbidden until this many tokens were added.
        do_sample: sample from the processed distribution; otherwise greedy (or beam) argmax.
        temperature: logits are divided by it before sampling (greedy ignores it).
        top_k: keep the k most likely tokens before sampling (0 keeps all).
        top_p: keep the smallest set of tokens whose probability sums to at least top_p (1.0 keeps all).
        min_p: drop tokens less likely than ``min_p`` times the most likely one (None: off).
        typical_p: locally typical sampling mass (1.0: off).
        num_beams: beams for beam search (1: no beam search).
        num_return_sequences: sequences returned per prompt (at most ``num_beams`` in beam search).
        length_penalty: beam scores are divided by ``generated_length ** length_penalty``.
        early_stopping: beam search stops when ``num_beams`` hypotheses are done (True), when no better one
            can be found (False, a heuristic), or only at the length limit ("never").
        repetition_penalty: divides positive (multiplies negative) logits of tokens already present (1.0: off).
        no_repeat_ngram_size: an n-gram of this size can occur only once (0: off).
        bad_words_ids: token sequences that may never be produced.
        eos_token_id: one id or several; a row stops after producing one of them.
        pad_token_id: written after a row has stopped; defaults to the first EOS id.
        stop_strings: a row stops once its text ends with one of these (``generate`` needs ``tokenizer=``).
        max_time: seconds after which generation stops (checked after each token).
        num_assistant_tokens: tokens the draft model proposes per round (``generate(assistant_model=...)``).
        assistant_confidence_threshold: the draft stops proposing after a token it gives less than this
            probability (as transformers; 0: always ``num_assistant_tokens``). Output is unchanged; an unsure
            draft just costs less.
        cache_implementation: the KV cache ``generate`` uses: None or "dynamic" (grows per token), or "static"
            (preallocated to prompt + new tokens, fixed shapes, so a ``torch.compile``d forward does not recompile
            per token; greedy or sampling only).
    """

    max_new_tokens: int | None = None
    max_length: int | None = None
    min_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    min_p: float | None = None
    typical_p: float = 1.0
    num_beams: int = 1
    num_return_sequences: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    bad_words_ids: list[list[int]] | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    stop_strings: str | list[str] | None = None
    max_time: float | None = None
    num_assistant_tokens: int = 20
    assistant_confidence_threshold: float = 0.4
    cache_implementation: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` (a ValueError) naming the first field of the wrong type, out of range or not finite."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not matches(value, hints[field.name]):
                raise ConfigError(f"{field.name} must be {type_name(hints[field.name])}, got {value!r}")
            bad = non_finite_path(value, field.name)
            if bad is not None:
                raise ConfigError(f"{bad[0]} must be a finite number, got {bad[1]}")
        for message in self._range_errors():
            raise ConfigError(message)

    def _range_errors(self) -> list[str]:
        """Every out-of-range field, as 'field must be ..., got value' (the first one is raised)."""
        checks = [
            ("max_new_tokens", self.max_new_tokens is None or self.max_new_tokens > 0, "> 0"),
            ("max_length", self.max_length is None or self.max_length > 0, "> 0"),
            ("min_new_tokens", self.min_new_tokens is None or self.min_new_tokens >= 0, ">= 0"),
            ("temperature", self.temperature > 0, "> 0"),
            ("top_k", self.top_k >= 0, ">= 0"),
            ("top_p", 0.0 < self.top_p <= 1.0, "in (0, 1]"),
            ("min_p", self.min_p is None or 0.0 <= self.min_p <= 1.0, "in [0, 1]"),
            ("typical_p", 0.0 < self.typical_p <= 1.0, "in (0, 1]"),
            ("num_beams", self.num_beams >= 1, ">= 1"),
            ("num_return_sequences", self.num_return_sequences >= 1, ">= 1"),
            ("repetition_penalty", self.repetition_penalty > 0, "> 0"),
            ("no_repeat_ngram_size", self.no_repeat_ngram_size >= 0, ">= 0"),
            ("early_stopping", self.early_stopping in EARLY_STOPPING_CHOICES, "True, False or 'never'"),
            ("max_time", self.max_time is None or self.max_time > 0, "> 0"),
            ("num_assistant_tokens", self.num_assistant_tokens >= 1, ">= 1"),
            ("assistant_confidence_threshold", 0 <= self.assistant_confidence_threshold < 1, "in [0, 1)"),
            ("cache_implementation", self.cache_implementation in CACHE_IMPLEMENTATIONS, "None, 'dynamic' or 'static'"),
            ("bad_words_ids", self.bad_words_ids is None or _all_token_lists(self.bad_words_ids), "non-empty id lists"),
        ]
        errors = [f"{name} must be {rule}, got {getattr(self, name)!r}" for name, ok, rule in checks if not ok]
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            errors.append(
                f"num_return_sequences ({self.num_return_sequences}) must be <= num_beams ({self.num_beams}):"
                " beam search returns at most num_beams sequences; raise num_beams"
            )
        if self.num_beams == 1 and not self.do_sample and self.num_return_sequences > 1:
            errors.append(
                f"num_return_sequences={self.num_return_sequences} with greedy decoding returns the same sequence"
                " several times; set do_sample=True or num_beams >= num_return_sequences"
            )
        return errors

    @property
    def eos_token_ids(self) -> list[int]:
        """The EOS ids as a list (empty when there is none)."""
        if self.eos_token_id is None:
            return []
        return [self.eos_token_id] if isinstance(self.eos_token_id, int) else list(self.eos_token_id)

    def new_token_budget(self, prompt_length: int) -> int:
        """How many tokens to add after a prompt of ``prompt_length``: max_new_tokens, else max_length - prompt.

        Raises:
            ConfigError: ``max_length`` leaves no room after the prompt.
        """
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        if self.max_length is None:
            return DEFAULT_MAX_NEW_TOKENS
        if self.max_length <= prompt_length:
            raise ConfigError(
                f"max_length={self.max_length} counts the prompt ({prompt_length} tokens) and leaves no room for new"
                " tokens; raise max_length or set max_new_tokens"
            )
        return self.max_length - prompt_length

    def update(self, **kwargs: Any) -> GenerationConfig:
        """A copy with ``kwargs`` replaced; unknown names are a TypeError listing them (a typo never passes silently)."""
        unknown = set(kwargs) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        """Build from a dict such as ``generation_config.json``; keys this class does not model are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names and v is not None}
        cache = values.get("cache_implementation")
        if isinstance(cache, str) and cache not in CACHE_IMPLEMENTATIONS:  # another library's cache kind
            logger.warning("cache_implementation %r is not one of ours; generating with the dynamic cache", cache)
            values["cache_implementation"] = None
        return cls(**values)

    @classmethod
    def from_model_config(cls, config: Any) -> GenerationConfig:
        """EOS and pad ids from a model configuration, defaults otherwise."""
        return cls(
            eos_token_id=getattr(config, "eos_token_id", None), pad_token_id=getattr(config, "pad_token_id", None)
        )

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> GenerationConfig:
        """Read ``directory/generation_config.json``."""
        path = Path(directory) / GENERATION_CONFIG_NAME
        data = read_json_object(path, ConfigError)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{path}: {error}") from error

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/generation_config.json`` (the fields that differ from the defaults, as transformers).

        Returns:
            The path written.
        """
        path = Path(directory) / GENERATION_CONFIG_NAME
        atomic_write_text(path, self.to_json_string())
        return path

    def to_json_string(self) -> str:
        """The ``generation_config.json`` text: the fields that differ from the defaults."""
        return json.dumps(self.to_diff_dict(), indent=2, sort_keys=True) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Every field."""
        return dataclasses.asdict(self)

    def to_diff_dict(self) -> dict[str, Any]:
        """The fields whose value differs from the default."""
        defaults = GenerationConfig().to_dict()
        return {k: v for k, v in self.to_dict().items() if v != defaults[k]}


def _all_token_lists(value: list[list[int]]) -> bool:
    return len(value) > 0 and all(len(ids) > 0 and all(i >= 0 for i in ids) for ids in value)
