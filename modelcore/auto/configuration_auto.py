"""AutoConfig: the configuration class named by ``config.json``'s ``model_type``."""

from __future__ import annotations

import os
from typing import Any

from modelcore.auto.registry import FAMILIES, resolve
from modelcore.configuration_utils import ConfigError, PretrainedConfig, read_source_config

_CONFIGS: dict[str, str | type[PretrainedConfig]] = {name: family.config for name, family in FAMILIES.items()}


def config_class_for(model_type: str, where: str = "") -> type[PretrainedConfig]:
    """The registered config class of ``model_type``; the error names ``where`` it came from."""
    origin = f"{where}: " if where else ""
    if not isinstance(model_type, str):
        raise ConfigError(f"{origin}model_type must be a string, got {model_type!r}"[:300])
    if model_type not in _CONFIGS:
        raise ConfigError(
            f"{origin}unknown model_type {model_type!r}; known model types: {', '.join(sorted(_CONFIGS))} "
            "(register a new family with AutoConfig.register)"
        )
    return resolve(_CONFIGS[model_type])


class AutoConfig:
    """Pick the configuration class from ``model_type``. Not instantiable."""

    def __init__(self) -> None:
        raise TypeError("AutoConfig is not instantiable: use AutoConfig.from_pretrained or AutoConfig.for_model")

    @staticmethod
    def from_pretrained(source: str | os.PathLike, **overrides: Any) -> PretrainedConfig:
        """Load a checkpoint's ``config.json`` (or a GGUF file's metadata) as its family's config class."""
        data, where = read_source_config(source)
        if "model_type" not in data:
            raise ConfigError(f"{where}: has no 'model_type' key, so its model family is unknown")
        return config_class_for(data["model_type"], where).from_file_dict(data, where, **overrides)

    @staticmethod
    def for_model(model_type: str, **kwargs: Any) -> PretrainedConfig:
        """A fresh config of ``model_type`` with ``kwargs`` as fields."""
        return config_class_for(model_type)(**kwargs)

    @staticmethod
    def register(model_type: str, config_class: type[PretrainedConfig], exist_ok: bool = False) -> None:
        """Make ``model_type`` resolve to ``config_class``."""
        if config_class.model_type != model_type:
            raise ValueError(f"{config_class.__name__}.model_type is {config_class.model_type!r}, not {model_type!r}")
        if model_type in _CONFIGS and not exist_ok:
            raise ValueError(f"model_type {model_type!r} is already registered (pass exist_ok=True to replace it)")
        _CONFIGS[model_type] = config_class
