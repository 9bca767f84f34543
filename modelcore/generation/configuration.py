"""GenerationConfig: how ``generate`` picks tokens, and when it stops."""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any

from modelcore.errors import ConfigError
from modelcore.json_files import read_json_object
from modelcore.typecheck import matches, non_finite_path, type_name

GENERATION_CONFIG_NAME = "generation_config.json"


@dataclasses.dataclass
class GenerationConfig:
    """Decoding settings, with Hugging Face's names (``generation_config.json`` reads unchanged).

    Args:
        max_new_tokens: tokens to add after the prompt (fewer when every row has hit EOS).
        do_sample: sample from the (warped) distribution; otherwise greedy argmax.
        temperature: logits are divided by it before sampling (greedy ignores it).
        top_k: keep the k most likely tokens before sampling (0 keeps all).
        top_p: keep the smallest set of tokens whose probability sums to at least top_p (1.0 keeps all).
        eos_token_id: one id or several; a row stops after producing one of them.
        pad_token_id: written after a row has stopped; defaults to the first EOS id.
    """

    max_new_tokens: int = 20
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` (a ValueError) naming the first field out of range, NaN or infinite."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not matches(value, hints[field.name]):
                raise ConfigError(f"{field.name} must be {type_name(hints[field.name])}, got {value!r}")
            bad = non_finite_path(value, field.name)
            if bad is not None:
                raise ConfigError(f"{bad[0]} must be a finite number, got {bad[1]}")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def eos_token_ids(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return [self.eos_token_id] if isinstance(self.eos_token_id, int) else list(self.eos_token_id)

    def update(self, **kwargs: Any) -> GenerationConfig:
        """A copy with ``kwargs`` replaced; an unknown name is a TypeError (a typo never passes silently)."""
        unknown = set(kwargs) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        """Build from a dict such as ``generation_config.json``; keys this class does not model are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names and v is not None})

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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
